"""The decoupled (streaming) twin of a public model, `<model>_stream`, served over gRPC streaming.

It takes the public model's inputs (plus an optional PREVIEW) and runs the public model's own adapter -- loaded from
that model's folder, with its exported files and the twin's config parameters -- under a StreamObserver: one progress
response when each stage starts and one after each denoising step (STAGE, STEP, TOTAL_STEPS, ELAPSED, and with
PREVIEW a PNG of the latents' RGB projection), then the public model's own response as the final one. A separate
model because Triton serves a decoupled model only over gRPC streaming (HTTP and unary gRPC calls are refused) and
never as an ensemble step; the public models keep the pinned one-response interface. Importable only inside the stub.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from pipelines.imaging import encode_png
from pipelines.progress import PREVIEW_INPUT, STREAM_SUFFIX, latent_preview
from pipelines.triton_io import bytes_output, optional_scalar
from pipelines.triton_observers import PipelineMetrics, RequestObserver


class StreamObserver(RequestObserver):
    """A RequestObserver that also sends each stage start and each step to the client."""

    def __init__(self, request, metrics: PipelineMetrics, sender):
        super().__init__(request, metrics)
        self.sender = sender
        self.preview = bool(optional_scalar(request, PREVIEW_INPUT, False))

    def stage(self, name: str) -> None:
        super().stage(name)
        self.send(0, 0)

    def step(self, step: int, steps: int, latents) -> None:
        super().step(step, steps, latents)
        self.send(step, steps, encode_png(latent_preview(latents)) if self.preview else None)

    def send(self, step: int, steps: int, preview: bytes | None = None) -> None:
        outputs = [bytes_output("STAGE", self.current.encode()),
                   pb_utils.Tensor("STEP", np.array([step], np.int32)),
                   pb_utils.Tensor("TOTAL_STEPS", np.array([steps], np.int32)),
                   pb_utils.Tensor("ELAPSED", np.array([self.elapsed()], np.float32))]
        if preview is not None:
            outputs.append(bytes_output("PREVIEW_IMAGE", preview))
        self.sender.send(pb_utils.InferenceResponse(outputs))


class StreamingModel:
    """model.py of every `<model>_stream` model."""

    def initialize(self, args):
        folder = Path(args["model_repository"])
        public = folder.with_name(folder.name.removesuffix(STREAM_SUFFIX))
        path = public / args["model_version"] / "model.py"
        spec = importlib.util.spec_from_file_location(f"{public.name}_model", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.model = module.TritonPythonModel()
        # the public model's files (conditioning, processor, pipeline folders) and presets; this model's name
        self.model.initialize(dict(args, model_repository=str(public)))

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            response = self.model.respond(request, StreamObserver(request, self.model.metrics, sender))
            sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None

    def finalize(self):
        if hasattr(self.model, "finalize"):
            self.model.finalize()
