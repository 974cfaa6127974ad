"""Serves FLUX.1 generation with this model's variant (its name); see pipelines/triton_generate.py."""
from pipelines.triton_generate import TritonPythonModel  # noqa: F401
