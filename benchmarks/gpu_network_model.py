"""The Triton model benchmarks/gpu_served.py serves each ObjectClear network with: the ONNX Runtime network model's
batching and I/O (pipelines/triton_onnx.py), the network run in PyTorch instead (fp16 on the GPU; --small: fp32 on
the CPU), built at full size with random weights. Imported only inside Triton's python-backend stub."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.gpu_fullsize import TorchComponent
from benchmarks.gpu_served import device_and_dtype, networks
from pipelines.triton_onnx import TritonPythonModel as OnnxNetwork


class TorchNetwork(OnnxNetwork):
    def load(self, folder: Path, parameters: dict[str, str]) -> dict[str, int]:
        small = json.loads((folder / "network.json").read_text())["small"]
        spec, module = networks(small)[folder.parent.name]  # builds all four (seconds on a GPU), keeps its own
        if not small:
            torch.cuda.empty_cache()
        self.component = TorchComponent(module, spec.output_names, *device_and_dtype(small))
        return {name: tensor.ndim for name, tensor in zip(spec.input_names, spec.dummy_inputs())}

    def run(self, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        outputs = self.component(**{name: torch.from_numpy(array) for name, array in batch.items()})
        return [outputs[name].numpy() for name in self.component.output_names]
