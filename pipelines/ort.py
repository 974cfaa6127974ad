"""The `onnxruntime` network runtime: an exported network (model.onnx) in an ONNX Runtime session on the CPU, with
a chosen thread count and optional memory arena.

Imports neither torch nor Triton: the per-network Triton models (pipelines/triton_network.py) on this runtime load
only this, numpy and onnxruntime, so each of their stub processes stays around a third of the size of one that
imports torch.
"""
from __future__ import annotations

import ast
import operator
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
            shape = [evaluate(dim, WARMUP_AXES, WARMUP_SIDE) for dim in value.shape]
            feed[value.name] = (np.ones(shape, np.int64) if value.type == "tensor(int64)"
                                else np.full(shape, 0.5, np.float32))
        self.session.run(self.output_names, feed)


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
              ast.Div: operator.floordiv}


def evaluate(dim, values: dict[str, int], default: int | None = None) -> int:
    """A graph dim -- an int, an axis name, or an expression on axis names such as '8*latent_h' -- at the given axis
    values; a name without a value is `default`, or an error that names it."""
    if isinstance(dim, int):
        return dim

    def walk(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in values:
                return values[node.id]
            if default is None:
                raise KeyError(f"axis {node.id!r} has no size: name it at export (export/onnx_export.py axis_names)")
            return default
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(f"graph dim {dim!r} is not arithmetic on axis names")
    return walk(ast.parse(dim or "_", mode="eval").body)
