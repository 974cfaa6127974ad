"""How a pipeline calls one of its networks: by name, with named torch tensors in and out.

The same pipeline code runs its networks in-process on ONNX Runtime (unit tests, benchmarks) or, inside Triton,
as separate Triton models reached through BLS (pipelines/triton_io.py) so that the server can batch and place them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from pipelines.ort import ort_session


class Component(Protocol):
    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]: ...


class OrtComponent:
    """An exported network run in this process on ONNX Runtime (CPU)."""

    def __init__(self, path: Path, threads: int = 0):
        self.session = ort_session(path, threads)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.session.run(self.output_names, {k: v.detach().cpu().numpy() for k, v in inputs.items()})
        return {name: torch.from_numpy(value) for name, value in zip(self.output_names, outputs)}


def local_components(repository: Path, names: dict[str, str], threads: int = 0) -> dict[str, OrtComponent]:
    """{role: Triton model name} -> in-process components reading <repository>/<model>/1/model.onnx."""
    return {role: OrtComponent(Path(repository) / model / "1" / "model.onnx", threads) for role, model in names.items()}
