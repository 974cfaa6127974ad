"""ONNX Runtime sessions as the project runs them (CPU provider, chosen thread count, optional memory arena).

Imports neither torch nor Triton: the per-network Triton models (pipelines/triton_onnx.py) load only this, numpy
and onnxruntime, so each of their stub processes stays around a third of the size of one that imports torch.
"""
from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def ort_session(path: Path, threads: int = 0, memory_arena: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: one per core
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = memory_arena
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
