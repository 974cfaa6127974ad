"""The pipelines' observer inside a served model: stage latencies, denoising steps, outcomes and nothing-found counts as
custom Prometheus metrics (python backend `pb_utils.MetricFamily`; Triton serves them on its metrics port next to
its own nv_inference_* series), and cancellation from Triton's request state. Importable only inside the stub.

Series (every one labelled with `model` and `preset`, the configs/<preset>.pbtxt the model was loaded with):
- pipeline_stage_duration_seconds{stage}: histogram of each stage's wall time (decode_input, segmentation, encode,
  text_encode, denoise, decode, fusion, png, ...: whatever the pipeline and its adapter mark);
- pipeline_denoising_steps_total: denoising steps run (one UNet or transformer call each);
- pipeline_requests_total{engine, outcome}: requests by engine and outcome (ok, invalid, cancelled, error);
  cancellations are outcome="cancelled";
- pipeline_nothing_found_total: remove_object requests whose prompt matched nothing (no diffusion ran; 0 elsewhere).
The counters exist at 0 from the model's start.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import triton_python_backend_utils as pb_utils
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from pipelines.imaging import InputError
from pipelines.progress import Observer
from pipelines.triton_network import config_parameters

# From 5 ms (a tiny network on a GPU) to 2 minutes (a full-size quality loop on a CPU)
STAGE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0]


def preset_name(args) -> str:
    """The preset Triton loaded this model with. Triton does not tell a model which config variant it read, so this
    is the configs/<preset>.pbtxt whose parameters the loaded config has, or "custom" when none has them."""
    loaded = config_parameters(json.loads(args["model_config"]))
    for path in sorted((Path(args["model_repository"]) / "configs").glob("*.pbtxt")):
        variant = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        if {key: value.string_value for key, value in variant.parameters.items()} == loaded:
            return path.stem
    return "custom"


OUTCOMES = ["ok", "invalid", "cancelled", "error"]


def outcome(error: Exception | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, InputError):
        return "invalid"
    return "cancelled" if isinstance(error, InterruptedError) else "error"


class PipelineMetrics:
    """One public model's series. Every instance of the model creates the same families and label sets; Triton keeps
    one series per label set, so the instances' counts add up."""

    def __init__(self, args, engine: str):
        self.labels = {"model": args["model_name"], "preset": preset_name(args)}
        self.engine = engine  # the default; a request may pick another (ENGINE)
        # the families must outlive their metrics, so they are kept here
        self.stage_seconds = pb_utils.MetricFamily(
            "pipeline_stage_duration_seconds", "Wall time of each pipeline stage", pb_utils.MetricFamily.HISTOGRAM)
        self.steps = pb_utils.MetricFamily(
            "pipeline_denoising_steps_total", "Denoising steps run (one UNet or transformer call each)",
            pb_utils.MetricFamily.COUNTER)
        self.requests = pb_utils.MetricFamily(
            "pipeline_requests_total", "Requests by inpainting/generation engine and outcome",
            pb_utils.MetricFamily.COUNTER)
        self.nothing_found = pb_utils.MetricFamily(
            "pipeline_nothing_found_total", "Requests whose prompt matched nothing, so no diffusion ran",
            pb_utils.MetricFamily.COUNTER)
        self.metrics: dict[tuple, object] = {}
        # the counters start at 0 rather than at the first event, so that rate() and increase() see that event
        for family in (self.steps, self.nothing_found):
            self.metric(family)
        for result in OUTCOMES:
            self.metric(self.requests, engine=engine, outcome=result)

    def metric(self, family, **labels):
        """The family's metric for the model's labels plus `labels`, made on first use."""
        key = (id(family), *sorted(labels.items()))
        if key not in self.metrics:
            extra = {"buckets": STAGE_BUCKETS} if family is self.stage_seconds else {}
            self.metrics[key] = family.Metric(labels={**self.labels, **labels}, **extra)
        return self.metrics[key]


class RequestObserver(Observer):
    """One request's observer: times its stages and counts its steps into the model's metrics, and tells the loop
    when Triton has cancelled the request (the client went away). The adapter calls `finish` when the response is
    built; `engine` may be set to the request's engine before then."""

    def __init__(self, request, metrics: PipelineMetrics):
        self.request, self.metrics = request, metrics
        self.engine = metrics.engine
        self.started = self.stage_started = time.perf_counter()
        self.current: str | None = None  # the stage running now

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def stage(self, name: str) -> None:
        self.end_stage()
        self.current = name

    def end_stage(self) -> None:
        now = time.perf_counter()
        if self.current is not None:
            self.metrics.metric(self.metrics.stage_seconds, stage=self.current).observe(now - self.stage_started)
        self.stage_started = now

    def step(self, step: int, steps: int, latents) -> None:
        self.metrics.metric(self.metrics.steps).increment(1)

    def cancelled(self) -> bool:
        return self.request.is_cancelled()

    def nothing_found(self) -> None:
        self.metrics.metric(self.metrics.nothing_found).increment(1)

    def finish(self, error: Exception | None = None) -> None:
        self.end_stage()
        self.current = None
        self.metrics.metric(self.metrics.requests, engine=self.engine, outcome=outcome(error)).increment(1)
