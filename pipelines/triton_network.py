"""A Triton python-backend model that serves one exported network on the runtime its config names.

`runtime` parameter: "onnxruntime" (default: <version>/model.onnx on the CPU, numpy only, no torch imported, so each
of these stub processes stays small) or "torch" (<version>/torch/, the export's wrapper module in PyTorch: on the
instance's GPU for KIND_GPU, in the config's `precision`, with `cuda_graphs`; inputs and outputs stay CUDA tensors,
handed over by DLPack). Requests that the dynamic batcher groups together and whose non-batch shapes agree go through
the network as one batch. On Triton's own onnxruntime and tensorrt backends the same exported graph is served
without this file (server/repository.py writes those configs).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


def config_parameters(model_config: dict) -> dict[str, str]:
    return {k: v["string_value"] for k, v in model_config.get("parameters", {}).items()}


class NumpyNetwork:
    """The onnxruntime runtime's side of the Triton plumbing: numpy arrays on the CPU."""

    def __init__(self, folder: Path, parameters: dict[str, str]):
        from pipelines.ort import OrtNetwork

        self.network = OrtNetwork(folder / "model.onnx", threads=int(parameters.get("intra_op_threads", "0")),
                                  memory_arena=parameters.get("memory_arena", "true") == "true")
        self.input_ranks = self.network.input_ranks

    @staticmethod
    def read(tensor) -> np.ndarray:
        return tensor.as_numpy()

    concatenate = staticmethod(np.concatenate)

    @staticmethod
    def tensor(name: str, value: np.ndarray):
        return pb_utils.Tensor(name, np.ascontiguousarray(value))

    def run(self, batch: dict[str, np.ndarray], output_names: list[str]) -> list[np.ndarray]:
        return self.network.run(batch, output_names)


class TorchNetworkModel:
    """The torch runtime's side: torch tensors, on the GPU when the instance is KIND_GPU."""

    def __init__(self, folder: Path, parameters: dict[str, str], args: dict, max_batch: int):
        import torch

        from pipelines.torch_network import TorchNetwork
        from pipelines.triton_io import from_triton

        self.torch, self.from_triton = torch, from_triton
        gpu = args.get("model_instance_kind") == "GPU"
        device = f"cuda:{args['model_instance_device_id']}" if gpu else "cpu"
        self.network = TorchNetwork(folder / "torch", device, parameters.get("precision", "fp32"),
                                    cuda_graphs=parameters.get("cuda_graphs", "false") == "true",
                                    random_weights=parameters.get("weights", "checkpoint") == "random",
                                    max_batch=max_batch)
        self.input_ranks = self.network.input_ranks

    def read(self, tensor):
        return self.from_triton(tensor)

    def concatenate(self, values):
        return self.torch.cat(values)

    def tensor(self, name: str, value):
        value = value.contiguous()
        return pb_utils.Tensor.from_dlpack(name, value) if value.is_cuda else pb_utils.Tensor(name, value.numpy())

    def run(self, batch: dict, output_names: list[str]) -> list:
        outputs = self.network(**batch)
        return [outputs[name] for name in output_names]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = config_parameters(config)
        self.output_names = [o["name"] for o in config["output"]]
        max_batch = config.get("max_batch_size", 0)
        self.batching = max_batch > 0  # else the graph's first axis is not a batch axis
        folder = Path(args["model_repository"]) / args["model_version"]
        runtime = parameters.get("runtime", "onnxruntime")
        if runtime == "onnxruntime":
            self.network = NumpyNetwork(folder, parameters)
            # before this instance reports ready; the public models cannot warm their networks themselves, since
            # Triton takes no BLS request before the server is ready (README, "Warm-up"). "warm_up": "false" skips it.
            if parameters.get("warm_up", "true") == "true":
                self.network.network.warm_up()
        elif runtime == "torch":
            self.network = TorchNetworkModel(folder, parameters, args, max_batch)
        else:
            raise ValueError(f"runtime {runtime!r}: this model serves onnxruntime or torch")

    def execute(self, requests):
        network = self.network
        inputs = [self._read(request) for request in requests]
        responses = [None] * len(requests)
        groups = defaultdict(list)  # requests that can share one run
        for index, arrays in enumerate(inputs):
            key = tuple((k, tuple(v.shape[1:])) for k, v in sorted(arrays.items())) if self.batching else index
            groups[key].append(index)
        for members in groups.values():
            batch = {name: network.concatenate([inputs[i][name] for i in members]) for name in inputs[members[0]]}
            try:
                outputs = network.run(batch, self.output_names)
            except Exception as error:  # a shape the network cannot take: fail these requests, keep serving
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error)))
                continue
            start = 0
            for i in members:
                rows = len(next(iter(inputs[i].values())))
                responses[i] = pb_utils.InferenceResponse([network.tensor(name, value[start:start + rows])
                                                           for name, value in zip(self.output_names, outputs)])
                start += rows
        return responses

    def finalize(self):
        if isinstance(self.network, TorchNetworkModel):  # the onnxruntime stubs import no torch and exit quickly
            from pipelines.stub_exit import exit_quickly
            exit_quickly()

    def _read(self, request) -> dict:
        values = {}
        for name, rank in self.network.input_ranks.items():
            value = self.network.read(pb_utils.get_input_tensor_by_name(request, name))
            values[name] = value.reshape(value.shape[:rank]) if value.ndim > rank else value  # (B, 1) -> (B,)
        return values
