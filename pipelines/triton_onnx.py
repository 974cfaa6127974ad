"""A Triton python-backend model that serves one exported network (<version>/model.onnx) on ONNX Runtime.

The pytriton tritonserver bundles only the python backend, so on CPU the networks run here. Requests that the
dynamic batcher groups together and whose non-batch shapes agree go through the session as one batch. The same
model directory also suits Triton's native onnxruntime backend (same file, same tensor names). Imports no torch, so
each of these stub processes stays small.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from pipelines.ort import ort_session


def config_parameters(model_config: dict) -> dict[str, str]:
    return {k: v["string_value"] for k, v in model_config.get("parameters", {}).items()}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.output_names = [o["name"] for o in config["output"]]
        self.batching = config.get("max_batch_size", 0) > 0  # else the graph's first axis is not a batch axis
        self.input_ranks = self.load(Path(args["model_repository"]) / args["model_version"], config_parameters(config))

    def load(self, folder: Path, parameters: dict[str, str]) -> dict[str, int]:
        """Open the network; -> its input names and ranks. (Another runtime overrides this and `run`.)"""
        self.session = ort_session(folder / "model.onnx", threads=int(parameters.get("intra_op_threads", "0")),
                                   memory_arena=parameters.get("memory_arena", "true") == "true")
        return {i.name: len(i.shape) for i in self.session.get_inputs()}

    def run(self, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, batch)

    def execute(self, requests):
        inputs = [self._read(request) for request in requests]
        responses = [None] * len(requests)
        groups = defaultdict(list)  # requests that can share one session run
        for index, arrays in enumerate(inputs):
            key = tuple((k, v.shape[1:]) for k, v in sorted(arrays.items())) if self.batching else index
            groups[key].append(index)
        for members in groups.values():
            batch = {name: np.concatenate([inputs[i][name] for i in members]) for name in inputs[members[0]]}
            try:
                outputs = self.run(batch)
            except Exception as error:  # a shape the graph cannot take: fail these requests, keep serving
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error)))
                continue
            start = 0
            for i in members:
                rows = len(next(iter(inputs[i].values())))
                responses[i] = pb_utils.InferenceResponse(
                    [pb_utils.Tensor(name, np.ascontiguousarray(value[start:start + rows]))
                     for name, value in zip(self.output_names, outputs)])
                start += rows
        return responses

    def _read(self, request) -> dict[str, np.ndarray]:
        arrays = {}
        for name, rank in self.input_ranks.items():
            array = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
            arrays[name] = array.reshape(array.shape[:rank]) if array.ndim > rank else array  # (B, 1) -> (B,)
        return arrays
