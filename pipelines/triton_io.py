"""Triton python-backend plumbing shared by the served models: typed input access, outputs, error responses,
and calling another Triton model through BLS as a pipeline `Component`. Importable only inside the stub."""
from __future__ import annotations

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from pipelines.imaging import InputError
from pipelines.stub_exit import exit_quickly
from pipelines.triton_observers import PipelineMetrics, RequestObserver


# A text input (PROMPT, ENGINE) longer than this is refused before any tokenising: far above what any text encoder
# reads (SAM 3: 32 tokens, FLUX: CLIP 77 and T5 256/512; longer prompts are truncated to those), far below a cost.
MAX_TEXT_BYTES = 4096
# What Triton's queue policy answers when a model's queue is full or a request waited past its timeout: a callee's
# refusal stays a refusal (UNAVAILABLE, which clients retry) rather than becoming this request's INTERNAL error.
QUEUE_REFUSALS = ("Exceeds maximum queue size", "Request timeout expired")


class ComponentError(RuntimeError):
    pass


class Unavailable(RuntimeError):
    """A model this request needs is at its admission limit; served as UNAVAILABLE (HTTP 503), worth a retry."""


def _single(request, name: str):
    """The one element of an input declared with dims [1], or None when the (optional) input is absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    values = tensor.as_numpy().reshape(-1)
    if values.size != 1:
        raise InputError(name, f"expected one element, got {values.size}")
    return values[0]


def bytes_input(request, name: str) -> bytes:
    value = _single(request, name)
    if value is None:
        raise InputError(name, "missing")
    return value if isinstance(value, bytes) else str(value).encode()


def optional_scalar(request, name: str, default):
    value = _single(request, name)
    return default if value is None else value.item()


def text_input(request, name: str) -> str:
    data = bytes_input(request, name)
    if len(data) > MAX_TEXT_BYTES:
        raise InputError(name, f"{len(data)} bytes; at most {MAX_TEXT_BYTES}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(name, "not UTF-8 text") from None


def optional_text(request, name: str, default: str) -> str:
    return default if pb_utils.get_input_tensor_by_name(request, name) is None else text_input(request, name)


def optional_tensor(request, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def bytes_output(name: str, data: bytes):
    return pb_utils.Tensor(name, np.array([data], dtype=np.object_))


def error_response(error: Exception):
    code = pb_utils.TritonError.INVALID_ARG if isinstance(error, InputError) else pb_utils.TritonError.INTERNAL
    if isinstance(error, InterruptedError):
        code = pb_utils.TritonError.CANCELLED
    if isinstance(error, Unavailable):
        code = pb_utils.TritonError.UNAVAILABLE
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), code))


class PublicModel:
    """Base of the public python-backend models: one response per request, built by `infer(request, observer)`.
    The observer times the pipeline's stages and counts its steps into the model's metrics (`self.metrics`, a
    PipelineMetrics made in `initialize`) and tells the loop when the request is cancelled. Any exception becomes
    that request's error response (INVALID_ARG for bad input), so one bad request never fails the others in the
    batch or the model."""

    metrics: PipelineMetrics

    def infer(self, request, observer: RequestObserver):
        raise NotImplementedError

    def respond(self, request, observer: RequestObserver):
        """The request's response, observed by `observer` (the streaming twins pass one that also sends progress)."""
        try:
            response = self.infer(request, observer)
        except Exception as error:
            observer.finish(error)
            return error_response(error)
        observer.finish()
        return response

    def execute(self, requests):
        return [self.respond(request, RequestObserver(request, self.metrics)) for request in requests]

    def finalize(self):
        exit_quickly()


def to_triton(name: str, tensor: torch.Tensor):
    # Triton has no per-row scalar when batching: a (B,) tensor travels as (B, 1) and the callee's config
    # reshapes it back (`reshape { shape: [] }`).
    if tensor.ndim == 1:
        tensor = tensor[:, None]
    tensor = tensor.contiguous()
    if tensor.is_cuda:
        return pb_utils.Tensor.from_dlpack(name, tensor)
    return pb_utils.Tensor(name, tensor.numpy())


def from_triton(tensor) -> torch.Tensor:
    if tensor.is_cpu():
        return torch.from_numpy(tensor.as_numpy())
    return torch.from_dlpack(tensor.to_dlpack())


class BlsComponent:
    """A pipeline Component served by another Triton model, so the server schedules, batches and places it. A
    pipeline on a GPU asks for the outputs in that GPU's memory: a network on the GPU then hands them over without a
    host copy, and its inputs travel as CUDA tensors too (DLPack), so latents and features stay on the device."""

    def __init__(self, model_name: str, output_names: list[str], device: torch.device = torch.device("cpu")):
        self.model_name, self.output_names = model_name, output_names
        self.memory = {} if device.type != "cuda" else dict(
            preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_GPU, device.index or 0))

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        request = pb_utils.InferenceRequest(model_name=self.model_name, requested_output_names=self.output_names,
                                            inputs=[to_triton(k, v) for k, v in inputs.items()], **self.memory)
        response = request.exec()
        if response.has_error():
            raise ComponentError(f"{self.model_name}: {response.error().message()}")
        return {name: from_triton(pb_utils.get_output_tensor_by_name(response, name)) for name in self.output_names}


def forward(model_name: str, request, inputs: list, passed_through: list[str], output_names: list[str]):
    """Another public model's response to `inputs` plus whichever of `passed_through` this request carries; its
    error becomes this request's, bad input staying INVALID_ARG."""
    carried = [pb_utils.get_input_tensor_by_name(request, name) for name in passed_through]
    response = pb_utils.InferenceRequest(model_name=model_name, requested_output_names=output_names,
                                         inputs=inputs + [t for t in carried if t is not None]).exec()
    if response.has_error():
        # Triton 2.51's BLS hands back every callee error as INTERNAL, so bad input and queue refusals are
        # recognised by their messages
        message = response.error().message()
        if any(refusal in message for refusal in QUEUE_REFUSALS):
            raise Unavailable(f"{model_name}: {message}")
        raise InputError.parse(message) or ComponentError(f"{model_name}: {message}")
    return pb_utils.InferenceResponse([pb_utils.get_output_tensor_by_name(response, n) for n in output_names])
