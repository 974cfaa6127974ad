"""The `onnxruntime` network runtime: an exported network (model.onnx) in an ONNX Runtime session on the CPU, with
a chosen thread count and optional memory arena.

Imports neither torch nor Triton: the per-network Triton models (pipelines/triton_network.py) on this runtime load
only this, numpy and onnxruntime, so each of their stub processes stays around a third of the size of one that
imports torch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def ort_session(path: Path, threads: int = 0, memory_arena: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: one per core
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = memory_arena
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtNetwork:
    """model.onnx as a callable on numpy arrays: named inputs in, outputs in the graph's order out."""

    def __init__(self, path: Path, threads: int = 0, memory_arena: bool = True):
        self.session = ort_session(path, threads, memory_arena)
        self.input_ranks = {i.name: len(i.shape) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray], output_names: list[str] | None = None) -> list[np.ndarray]:
        return self.session.run(output_names or self.output_names, inputs)
