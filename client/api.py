"""A small library over the official Triton clients (HTTP or gRPC) for the repository's public models."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

PROTOCOLS = {"http": httpclient, "grpc": grpcclient}


@dataclass
class InpaintResult:
    image: bytes  # PNG at the input's resolution
    mask: bytes  # PNG, the attention-guided region that was replaced


class Client:
    def __init__(self, url: str, protocol: str = "http", timeout_s: float = 600.0):
        self.protocol = PROTOCOLS[protocol]
        self.timeout_s = timeout_s
        if protocol == "http":
            self.triton = httpclient.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
        else:
            self.triton = grpcclient.InferenceServerClient(url)

    def close(self) -> None:
        self.triton.close()  # an open connection would hold up a graceful server exit

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _input(self, name: str, value, datatype: str):
        array = np.array([value], dtype=np.object_ if datatype == "BYTES" else None)
        if datatype != "BYTES":
            array = array.astype({"INT64": np.int64, "INT32": np.int32, "FP32": np.float32}[datatype])
        tensor = self.protocol.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return tensor

    def _infer(self, model: str, inputs: list, outputs: list[str]) -> dict[str, np.ndarray]:
        requested = [self.protocol.InferRequestedOutput(name) for name in outputs]
        kwargs = {"client_timeout": self.timeout_s} if self.protocol is grpcclient else {}
        result = self.triton.infer(model, inputs, outputs=requested, **kwargs)
        return {name: result.as_numpy(name) for name in outputs}

    def inpaint(self, image: bytes, mask: bytes, seed: int = 0, steps: int | None = None,
                guidance_scale: float | None = None) -> InpaintResult:
        inputs = [self._input("IMAGE", image, "BYTES"), self._input("MASK", mask, "BYTES"),
                  self._input("SEED", seed, "INT64")]
        if steps is not None:
            inputs.append(self._input("STEPS", steps, "INT32"))
        if guidance_scale is not None:
            inputs.append(self._input("GUIDANCE_SCALE", guidance_scale, "FP32"))
        out = self._infer("objectclear_inpaint", inputs, ["IMAGE", "MASK"])
        return InpaintResult(out["IMAGE"][0], out["MASK"][0])
