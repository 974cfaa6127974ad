"""Serves this directory's exported network on the runtime its config names; see pipelines/triton_network.py."""
from pipelines.triton_network import TritonPythonModel  # noqa: F401
