"""The `onnxruntime` network runtime: an exported network (model.onnx) in an ONNX Runtime session on the CPU, with
a chosen thread count and optional memory arena.

Imports neither torch nor Triton: the per-network Triton models (pipelines/triton_network.py) on this runtime load
only this, numpy and onnxruntime, so each of their stub processes stays around a third of the size of one that
imports torch.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort

# A warm-up run's size for each named graph axis (export/onnx_export.py names them): small, and valid for every network
# that has the axis; an unnamed symbolic axis gets WARMUP_SIDE.
WARMUP_AXES = {"batch": 1, "latent_h": 32, "latent_w": 32, "tokens": 32, "text": 32, "num_boxes": 1}
WARMUP_SIDE = 32


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

    def warm_up(self) -> None:
        """One run on placeholder inputs, so that a request does not pay for ONNX Runtime's first run (thread pool,
        memory arena, kernel set-up: a tiny sam3_image_encoder's first run takes 0.2 s, the next ones 2 ms)."""
        feed = {}
        for value in self.session.get_inputs():
            shape = [warmup_size(dim) for dim in value.shape]
            feed[value.name] = (np.ones(shape, np.int64) if value.type == "tensor(int64)"
                                else np.full(shape, 0.5, np.float32))
        self.session.run(self.output_names, feed)


def warmup_size(dim) -> int:
    """A graph dim -- an int, an axis name, or an expression such as '8*latent_h' -- at the warm-up sizes."""
    if isinstance(dim, int):
        return dim
    expression = re.sub(r"[A-Za-z_]\w*", lambda m: str(WARMUP_AXES.get(m.group(0), WARMUP_SIDE)), str(dim or "_"))
    if not re.fullmatch(r"[\d\s+*/()-]+", expression):
        raise ValueError(f"graph dim {dim!r} is not arithmetic on axis names")
    return int(eval(expression.replace("/", "//")))  # digits and + - * // ( ) only, checked above
