"""How a pipeline calls one of its networks: by name, with named torch tensors in and out.

The same pipeline code runs its networks in-process on a network runtime (ONNX Runtime on the CPU, or PyTorch:
pipelines/torch_network.py) for tests and benchmarks or, inside Triton, as separate Triton models reached through BLS
(pipelines/triton_io.py) so that the server can batch and place them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from pipelines.ort import OrtNetwork


class Component(Protocol):
    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]: ...


class OrtComponent:
    """An exported network run in this process on ONNX Runtime (CPU)."""

    def __init__(self, path: Path, threads: int = 0):
        self.network = OrtNetwork(path, threads)

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.network.run({k: v.detach().cpu().numpy() for k, v in inputs.items()})
        return {name: torch.from_numpy(value) for name, value in zip(self.network.output_names, outputs)}


class OnDevice:
    """A component whose outputs land on the pipeline's device: a pipeline on a GPU may call networks that answer on
    the CPU (ONNX Runtime, or Triton models reached over CPU shared memory). A no-op where they already match."""

    def __init__(self, component: Component, device: torch.device):
        self.component, self.device = component, device

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: value.to(self.device) for name, value in self.component(**inputs).items()}


def pipeline_device(name: str) -> torch.device:
    """The device a served pipeline keeps its latents and post-processing on (its `device` config parameter),
    refused when this process cannot use it, so a misconfigured model fails to load rather than on each request."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device {name!r}: not a torch device ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA device is visible to this process")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: choose cpu or cuda[:N]")
    return device


def local_components(repository: Path, names: dict[str, str], runtime: str = "onnxruntime",
                     **options) -> dict[str, Component]:
    """{role: Triton model name} -> in-process components on `runtime`, reading <repository>/<model>/1/model.onnx
    (onnxruntime; options: threads) or <repository>/<model>/1/torch/ (torch; options: TorchNetwork's)."""
    if runtime == "onnxruntime":
        return {role: OrtComponent(Path(repository) / model / "1" / "model.onnx", **options)
                for role, model in names.items()}
    from pipelines.torch_network import TorchNetwork
    return {role: TorchNetwork(Path(repository) / model / "1" / "torch", **options) for role, model in names.items()}
