"""Serves this directory's exported network (1/model.onnx) on ONNX Runtime; see pipelines/triton_onnx.py."""
from pipelines.triton_onnx import TritonPythonModel  # noqa: F401
