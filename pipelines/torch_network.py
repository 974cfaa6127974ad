"""The `torch` network runtime: an exported network run in PyTorch instead of ONNX Runtime.

It runs the exported computation itself: the export's own wrapper module (export/objectclear.py, sam3.py, flux.py,
vae.py) rebuilt around the parts the exporter saved beside the graph (<version>/torch/: network.json and one
`save_pretrained` folder per part), so the tensor names, the attention side output and the batching are those of
model.onnx. On CUDA each network runs in its serving precision (PRECISION below, the TensorRT builder's table) and,
optionally, as CUDA graphs captured per input shape with the batch padded to a power of two; on the CPU in fp32 it
gives ONNX Runtime's results (tests/test_runtimes.py).

Used as a pipeline `Component` in-process and by the Triton network model (pipelines/triton_network.py), whose
inputs and outputs stay CUDA tensors (DLPack) when the network runs on a GPU.
"""
from __future__ import annotations

import contextlib
import importlib
import json
from collections import OrderedDict
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MAX_GRAPHS = 16  # captured shapes kept per network; the least recently used one is dropped beyond it


def qualified(name: str):
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


@contextlib.contextmanager
def building(device: torch.device, dtype: torch.dtype):
    """Modules constructed inside are created (and randomly initialised) directly on `device` in `dtype`."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def load_part(cls, folder: Path, dtype: torch.dtype, random_weights: bool, device: torch.device):
    """One saved part (a diffusers or transformers model, or the project's PostfuseModule) in `dtype`.
    random_weights: built from its config.json alone (benchmarks at full size: compute does not depend on weights)."""
    from diffusers import ModelMixin
    from transformers import PreTrainedModel

    if random_weights:
        with building(device, dtype):
            if issubclass(cls, ModelMixin):
                return cls.from_config(cls.load_config(folder))
            if issubclass(cls, PreTrainedModel):
                return cls(cls.config_class.from_pretrained(folder))
            return cls.from_config(cls.load_config(folder))  # PostfuseModule: a diffusers ConfigMixin
    if issubclass(cls, ModelMixin):
        return cls.from_pretrained(folder, torch_dtype=dtype)
    if issubclass(cls, PreTrainedModel):
        return cls.from_pretrained(folder, dtype=dtype)
    return cls.from_pretrained(folder).to(dtype)


class TorchNetwork:
    """<version>/torch/ of an exported network as a callable: named tensors in, named float32 tensors out, on
    `device`. Floating inputs are cast to the network's precision; integer inputs (token ids, masks) pass as they
    are."""

    def __init__(self, folder: Path, device: torch.device | str = "cpu", precision: str = "fp32",
                 cuda_graphs: bool = False, random_weights: bool = False, max_batch: int = 0):
        folder = Path(folder)
        description = json.loads((folder / "network.json").read_text())
        self.device, self.dtype = torch.device(device), DTYPES[precision]
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            # tf32 networks (the VAEs: never fp16, they overflow) still use the tensor cores for fp32 matmuls
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
        parts = {name: load_part(qualified(cls), folder / name, self.dtype, random_weights, self.device)
                 for name, cls in description["parts"].items()}
        self.module = qualified(description["wrapper"])(**parts).eval().to(self.device)
        self.module.parts.clear()  # only what the wrapper registered stays alive (SAM 3's image encoder: its ViT)
        del parts
        self.input_ranks, self.output_names = description["inputs"], description["outputs"]
        self.graphs = OrderedDict() if cuda_graphs and self.device.type == "cuda" else None
        self.max_batch = max_batch
        if self.graphs is not None:
            self.pool = torch.cuda.graph_pool_handle()  # one memory pool shared by this network's graphs

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        inputs = {name: value.to(self.device, self.dtype if value.is_floating_point() else value.dtype)
                  for name, value in inputs.items()}
        with torch.inference_mode():
            outputs = self.module(**inputs) if self.graphs is None else self.replay(inputs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return {name: value.float() for name, value in zip(self.output_names, outputs)}

    # -- CUDA graphs -----------------------------------------------------------------------------------------------
    def replay(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """One launch for the whole network instead of one per kernel from Python: the graph captured for these
        shapes (rows padded up to a power of two, so the batcher's varying batch sizes share a few graphs)."""
        rows = len(next(iter(inputs.values())))
        bucket = self.bucket(rows)
        padded = {k: torch.cat([v, v[-1:].expand(bucket - rows, *v.shape[1:])]) if bucket > rows else v
                  for k, v in inputs.items()}
        key = tuple((k, tuple(v.shape), v.dtype) for k, v in padded.items())
        if key not in self.graphs:
            self.graphs[key] = self.capture(padded)
            if len(self.graphs) > MAX_GRAPHS:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        static_inputs, graph, static_outputs = self.graphs[key]
        for name, value in padded.items():
            static_inputs[name].copy_(value)
        graph.replay()
        # the next replay overwrites the static outputs: hand out copies, only the real rows
        return tuple(value[:rows].clone() for value in static_outputs)

    def bucket(self, rows: int) -> int:
        bucket = 1 << (rows - 1).bit_length()
        return min(bucket, self.max_batch) if self.max_batch >= rows else rows

    def capture(self, inputs: dict[str, torch.Tensor]):
        static = {k: v.clone() for k, v in inputs.items()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside the graph: cuBLAS/cuDNN workspaces, lazy initialisation
                self.module(**static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = self.module(**static)
        return static, graph, outputs if isinstance(outputs, tuple) else (outputs,)
