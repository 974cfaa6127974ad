"""A small library over the official Triton clients (HTTP or gRPC, sync or asyncio) for the repository's public
models: objectclear_inpaint, remove_object, sam3_segment, flux_generate (or a variant's own flux_schnell_generate /
flux_dev_generate) and flux_fill_inpaint (interfaces pinned in PRODUCT.md).

    with Client("127.0.0.1:8000") as client:                 # or Client("127.0.0.1:8001", "grpc")
        result = client.remove(open("photo.jpg", "rb").read(), "the cup", seed=42)
        png = client.generate("a red bicycle", seed=7, width=768, height=512, steps=4)
        png = client.generate("a red bicycle", variant="dev", guidance_scale=3.5)   # flux_dev_generate

    async with AsyncClient("127.0.0.1:8001", "grpc") as client:
        result = await client.inpaint(image, mask, engine="flux_fill")

Optional settings (steps, guidance_scale, width, height, engine, a fill prompt, composite) are sent only when given;
left out, the server uses its preset's value. `variant` picks the model, not a setting: generate() calls
flux_generate (the deployment's default FLUX.1 variant) or, with variant="schnell"/"dev", that variant's own model.

Progress (gRPC only): with `on_progress`, Client's inpaint/fill/remove/generate call the model's streaming twin
`<model>_stream` instead, and call on_progress(Progress) for each progress message (a stage starting, a denoising step
done; with preview=True each step carries a PNG of the latents' RGB projection); they return the same result as
without. An exception from on_progress (or Ctrl-C) cancels the request on the server, which stops its loop.

    with Client("127.0.0.1:8001", "grpc") as client:
        result = client.remove(image, "the cup", on_progress=lambda p: print(p.stage, p.step, p.total_steps))

Errors come as ClientError subclasses: ServerUnavailable (nothing answers at the URL), ModelNotReady (the model is
not loaded or not ready), InvalidInput (the server rejected the request with INVALID_ARG; its message names the
input), ServerBusy (the model's queue is full: UNAVAILABLE / HTTP 503). Each carries the CLI exit code for it.

A busy server is retried: `retries` more attempts (default 4) after waits that double from `backoff_s` (default 1 s),
each drawn between half and the whole of it ("full jitter", so refused clients do not come back in step).
"""
from __future__ import annotations

import asyncio
import queue
import random
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

PROTOCOLS = {"http": httpclient, "grpc": grpcclient}
DTYPES = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "BOOL": np.bool_}
STREAM_SUFFIX = "_stream"  # the streaming twin of a public model (pipelines/progress.py)
# Triton's queue-policy refusals (and a pipeline's, when a model it calls refused), answered as UNAVAILABLE / 503
QUEUE_REFUSALS = ("Exceeds maximum queue size", "Request timeout expired")
FLUX_VARIANTS = ("schnell", "dev")  # flux_<variant>_generate; none: flux_generate, the deployment's default variant


def generate_model(variant: str | None) -> str:
    if variant is None:
        return "flux_generate"
    if variant not in FLUX_VARIANTS:
        raise ValueError(f"unknown FLUX variant {variant!r}; choose one of {', '.join(FLUX_VARIANTS)}")
    return f"flux_{variant}_generate"


class ClientError(RuntimeError):
    exit_code = 1


class ServerUnavailable(ClientError):
    exit_code = 2


class ModelNotReady(ClientError):
    exit_code = 3


class InvalidInput(ClientError):
    exit_code = 4


class ServerBusy(ClientError):
    """The model's queue was full (or the request waited past its queue timeout) on every attempt."""
    exit_code = 5


def backoff_delays(retries: int, backoff_s: float):
    """The waits before each retry: doubling from backoff_s, each drawn in [half, whole] of its step."""
    for attempt in range(retries):
        step = backoff_s * 2 ** attempt
        yield random.uniform(step / 2, step)


@dataclass
class InpaintResult:
    image: bytes  # PNG at the input's resolution
    mask: bytes  # PNG, the region that was replaced


RemoveResult = InpaintResult  # remove_object returns the same pair: IMAGE and MASK (the region removed)


@dataclass
class Progress:
    """One progress message of a streamed request."""
    stage: str  # decode_input, segmentation, encode, text_encode, denoise, decode, fusion, png, ...
    step: int  # denoising steps done; 0 in the message that starts a stage
    total_steps: int  # the request's denoising steps; 0 in the message that starts a stage
    elapsed: float  # seconds since the server started the request
    preview: bytes | None = None  # PNG of the latents' RGB projection (preview=True, step messages)


ProgressCallback = Callable[[Progress], None]


@dataclass
class SegmentResult:
    masks: np.ndarray  # uint8 [N, H, W], 0/1, one per instance
    boxes: np.ndarray  # float32 [N, 4], xyxy pixels
    scores: np.ndarray  # float32 [N]


def _translate(error: Exception, model: str, url: str) -> ClientError:
    """A tritonclient or transport error as one of ours, with a one-line message."""
    if isinstance(error, InferenceServerException):
        status, message = str(error.status() or ""), (error.message() or str(error)).strip()
        if status in ("503", "StatusCode.UNAVAILABLE") and any(refusal in message for refusal in QUEUE_REFUSALS):
            return ServerBusy(f"model '{model}' is busy on {url}: {message}")
        if status == "StatusCode.UNAVAILABLE" and "connect" in message.lower():  # gRPC: nothing listens
            return ServerUnavailable(f"no Triton server at {url}: {message.splitlines()[0]}")
        if status in ("404", "StatusCode.NOT_FOUND", "StatusCode.UNAVAILABLE") or "unknown model" in message:
            return ModelNotReady(f"model '{model}' is not loaded or not ready on {url}: {message}")
        # a streamed response's error carries no status, only the message, which names the input for bad input
        if status in ("400", "StatusCode.INVALID_ARGUMENT") or (not status and message.startswith("input '")):
            return InvalidInput(message)
        return ClientError(f"{status or 'error'}: {message}")
    # HTTP: refused/unresolvable (OSError from geventhttpclient, aiohttp's ClientConnectorError is one too)
    if isinstance(error, OSError) or "Connect" in type(error).__name__:
        return ServerUnavailable(f"no Triton server at {url}: {error}")
    return ClientError(f"{type(error).__name__}: {error}")


class _Requests:
    """Builds requests and reads responses; Client and AsyncClient only differ in how they send them."""

    protocol = httpclient
    url = ""

    def _input(self, name: str, value, datatype: str):
        if datatype == "BYTES":
            array = np.array([value.encode() if isinstance(value, str) else value], dtype=np.object_)
        else:
            array = np.asarray(value, dtype=DTYPES[datatype])
            array = array.reshape(1) if array.ndim == 0 else array
        tensor = self.protocol.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return tensor

    def _inputs(self, *tensors) -> list:
        """(name, value, datatype) each; a value of None leaves that optional input out (the server's default)."""
        return [self._input(name, value, datatype) for name, value, datatype in tensors if value is not None]

    def _masked_request(self, model: str, image: bytes, mask: bytes, seed: int, steps: int | None,
                        guidance_scale: float | None, composite: bool | None, *extra):
        inputs = self._inputs(("IMAGE", image, "BYTES"), ("MASK", mask, "BYTES"), ("SEED", seed, "INT64"),
                              ("STEPS", steps, "INT32"), ("GUIDANCE_SCALE", guidance_scale, "FP32"),
                              ("COMPOSITE", composite, "BOOL"), *extra)
        return model, inputs, ["IMAGE", "MASK"]

    def _inpaint_request(self, image, mask, seed, steps, guidance_scale, engine: str | None, composite=None):
        return self._masked_request("objectclear_inpaint", image, mask, seed, steps, guidance_scale, composite,
                                    ("ENGINE", engine, "BYTES"))

    def _fill_request(self, image, mask, seed, steps, guidance_scale, prompt: str | None, composite=None):
        return self._masked_request("flux_fill_inpaint", image, mask, seed, steps, guidance_scale, composite,
                                    ("PROMPT", prompt, "BYTES"))

    def _remove_request(self, image: bytes, prompt: str, seed: int, steps: int | None, guidance_scale: float | None,
                        engine: str | None, composite: bool | None = None):
        inputs = self._inputs(("IMAGE", image, "BYTES"), ("PROMPT", prompt, "BYTES"), ("SEED", seed, "INT64"),
                              ("STEPS", steps, "INT32"), ("GUIDANCE_SCALE", guidance_scale, "FP32"),
                              ("COMPOSITE", composite, "BOOL"), ("ENGINE", engine, "BYTES"))
        return "remove_object", inputs, ["IMAGE", "MASK"]

    def _segment_request(self, image: bytes, prompt: str, boxes=None):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4) if boxes is not None and len(boxes) else None
        inputs = self._inputs(("IMAGE", image, "BYTES"), ("PROMPT", prompt, "BYTES"), ("BOXES", boxes, "FP32"))
        return "sam3_segment", inputs, ["MASKS", "BOXES", "SCORES"]

    def _generate_request(self, prompt: str, seed: int, width: int | None, height: int | None, steps: int | None,
                          guidance_scale: float | None, variant: str | None = None):
        inputs = self._inputs(("PROMPT", prompt, "BYTES"), ("SEED", seed, "INT64"), ("WIDTH", width, "INT32"),
                              ("HEIGHT", height, "INT32"), ("STEPS", steps, "INT32"),
                              ("GUIDANCE_SCALE", guidance_scale, "FP32"))
        return generate_model(variant), inputs, ["IMAGE"]

    @staticmethod
    def _outputs(result, outputs: list[str]) -> dict[str, np.ndarray]:
        return {name: result.as_numpy(name) for name in outputs}

    @staticmethod
    def _progress(result) -> Progress:
        preview = result.as_numpy("PREVIEW_IMAGE")
        return Progress(result.as_numpy("STAGE").reshape(-1)[0].decode(), int(result.as_numpy("STEP").reshape(-1)[0]),
                        int(result.as_numpy("TOTAL_STEPS").reshape(-1)[0]),
                        float(result.as_numpy("ELAPSED").reshape(-1)[0]),
                        None if preview is None else preview.reshape(-1)[0])

    @staticmethod
    def _images(out: dict[str, np.ndarray]) -> InpaintResult:
        return InpaintResult(out["IMAGE"].reshape(-1)[0], out["MASK"].reshape(-1)[0])

    @staticmethod
    def _segments(out: dict[str, np.ndarray]) -> SegmentResult:
        return SegmentResult(out["MASKS"], out["BOXES"].reshape(-1, 4), out["SCORES"].reshape(-1))

    def _not_ready(self, model: str) -> ModelNotReady:
        return ModelNotReady(f"model '{model}' is not loaded or not ready on {self.url}")


class Client(_Requests):
    def __init__(self, url: str, protocol: str = "http", timeout_s: float = 600.0, retries: int = 4,
                 backoff_s: float = 1.0, on_retry=None):
        """on_retry(error, delay_s) is called before each wait for a busy server."""
        self.protocol = PROTOCOLS[protocol]
        self.url = url
        self.timeout_s = timeout_s
        self.retries, self.backoff_s, self.on_retry = retries, backoff_s, on_retry
        if protocol == "http":
            self.triton = httpclient.InferenceServerClient(url, connection_timeout=min(timeout_s, 10.0),
                                                           network_timeout=timeout_s)
        else:
            self.triton = grpcclient.InferenceServerClient(url)

    def close(self) -> None:
        self.triton.close()  # an open connection would hold up a graceful server exit

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check(self, model: str) -> None:
        """Raises ServerUnavailable or ModelNotReady before any work is sent."""
        try:
            ready = self.triton.is_model_ready(model)
        except Exception as error:  # noqa: BLE001 -- every transport's own type, translated
            raise _translate(error, model, self.url) from None
        if not ready:
            raise self._not_ready(model)

    def _infer(self, model: str, inputs: list, outputs: list[str], on_progress: ProgressCallback | None = None,
               preview: bool = False) -> dict[str, np.ndarray]:
        for delay in [*backoff_delays(self.retries, self.backoff_s), None]:
            try:
                if on_progress is not None:
                    return self._stream(model, inputs, outputs, on_progress, preview)
                return self._infer_once(model, inputs, outputs)
            except ServerBusy as busy:
                if delay is None:
                    raise
                if self.on_retry:
                    self.on_retry(busy, delay)
                time.sleep(delay)

    def _infer_once(self, model: str, inputs: list, outputs: list[str]) -> dict[str, np.ndarray]:
        requested = [self.protocol.InferRequestedOutput(name) for name in outputs]
        kwargs = {"client_timeout": self.timeout_s} if self.protocol is grpcclient else {}
        try:
            result = self.triton.infer(model, inputs, outputs=requested, **kwargs)
        except Exception as error:  # noqa: BLE001
            raise _translate(error, model, self.url) from None
        return self._outputs(result, outputs)

    def _single_step(self, model: str) -> str:
        """The model an ensemble of one step forwards to (decoupled twins cannot be ensemble steps), else `model`."""
        try:
            config = self.triton.get_model_config(model, as_json=True)["config"]
        except Exception as error:  # noqa: BLE001
            raise _translate(error, model, self.url) from None
        steps = config.get("ensemble_scheduling", {}).get("step", [])
        return steps[0]["model_name"] if len(steps) == 1 else model

    def _stream(self, model: str, inputs: list, outputs: list[str], on_progress: ProgressCallback,
                preview: bool) -> dict[str, np.ndarray]:
        """`model`'s streaming twin: on_progress for each progress response, then the final response's outputs.
        Leaving early (on_progress raised, Ctrl-C, a timeout) cancels the request on the server."""
        if self.protocol is not grpcclient:
            raise ClientError("progress needs gRPC: Triton streams responses only over gRPC (protocol 'grpc')")
        model = self._single_step(model) + STREAM_SUFFIX  # flux_generate: its default variant's twin
        responses: queue.Queue = queue.Queue()
        self.triton.start_stream(callback=lambda result, error: responses.put((result, error)))
        finished = False
        try:
            self.triton.async_stream_infer(model, inputs + self._inputs(("PREVIEW", preview or None, "BOOL")))
            while True:
                try:
                    result, error = responses.get(timeout=self.timeout_s)
                except queue.Empty:
                    raise ClientError(f"{model}: no response within {self.timeout_s:.0f} s") from None
                if error is not None:
                    finished = True
                    raise _translate(error, model, self.url)
                if result.as_numpy(outputs[0]) is not None:  # the final response: the public model's outputs
                    finished = True
                    return self._outputs(result, outputs)
                on_progress(self._progress(result))
        finally:
            self.triton.stop_stream(cancel_requests=not finished)

    def inpaint(self, image: bytes, mask: bytes, seed: int = 0, steps: int | None = None,
                guidance_scale: float | None = None, engine: str | None = None,
                composite: bool | None = None, on_progress: ProgressCallback | None = None,
                preview: bool = False) -> InpaintResult:
        """objectclear_inpaint; engine "objectclear" or "flux_fill" (FLUX.1 Fill via flux_fill_inpaint); composite
        False: the whole result resized back instead of blended into the untouched input."""
        request = self._inpaint_request(image, mask, seed, steps, guidance_scale, engine, composite)
        return self._images(self._infer(*request, on_progress, preview))

    def fill(self, image: bytes, mask: bytes, seed: int = 0, steps: int | None = None,
             guidance_scale: float | None = None, prompt: str | None = None, composite: bool | None = None,
             on_progress: ProgressCallback | None = None, preview: bool = False) -> InpaintResult:
        """flux_fill_inpaint: FLUX.1 Fill paints the white part of the mask, guided by prompt."""
        request = self._fill_request(image, mask, seed, steps, guidance_scale, prompt, composite)
        return self._images(self._infer(*request, on_progress, preview))

    def remove(self, image: bytes, prompt: str, seed: int = 0, steps: int | None = None,
               guidance_scale: float | None = None, engine: str | None = None, composite: bool | None = None,
               on_progress: ProgressCallback | None = None, preview: bool = False) -> RemoveResult:
        request = self._remove_request(image, prompt, seed, steps, guidance_scale, engine, composite)
        return self._images(self._infer(*request, on_progress, preview))

    def segment(self, image: bytes, prompt: str, boxes=None) -> SegmentResult:
        return self._segments(self._infer(*self._segment_request(image, prompt, boxes)))

    def generate(self, prompt: str, seed: int = 0, width: int | None = None, height: int | None = None,
                 steps: int | None = None, guidance_scale: float | None = None, variant: str | None = None,
                 on_progress: ProgressCallback | None = None, preview: bool = False) -> bytes:
        """flux_generate (the deployment's default variant), or with variant "schnell"/"dev" that variant's model:
        a PNG. Sizes are rounded down to a multiple of 16 by the server."""
        request = self._generate_request(prompt, seed, width, height, steps, guidance_scale, variant)
        return self._infer(*request, on_progress, preview)["IMAGE"].reshape(-1)[0]


class AsyncClient(_Requests):
    """The same methods as Client, as coroutines, on tritonclient's asyncio clients (aiohttp / grpc.aio)."""

    def __init__(self, url: str, protocol: str = "http", timeout_s: float = 600.0, retries: int = 4,
                 backoff_s: float = 1.0, on_retry=None):
        self.protocol = PROTOCOLS[protocol]
        self.url = url
        self.timeout_s = timeout_s
        self.retries, self.backoff_s, self.on_retry = retries, backoff_s, on_retry
        if protocol == "http":
            import tritonclient.http.aio as aio
            self.triton = aio.InferenceServerClient(url, conn_timeout=timeout_s)
        else:
            import tritonclient.grpc.aio as aio
            self.triton = aio.InferenceServerClient(url)

    async def close(self) -> None:
        await self.triton.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def check(self, model: str) -> None:
        try:
            ready = await self.triton.is_model_ready(model)
        except Exception as error:  # noqa: BLE001
            raise _translate(error, model, self.url) from None
        if not ready:
            raise self._not_ready(model)

    async def _infer(self, model: str, inputs: list, outputs: list[str]) -> dict[str, np.ndarray]:
        for delay in [*backoff_delays(self.retries, self.backoff_s), None]:
            try:
                return await self._infer_once(model, inputs, outputs)
            except ServerBusy as busy:
                if delay is None:
                    raise
                if self.on_retry:
                    self.on_retry(busy, delay)
                await asyncio.sleep(delay)

    async def _infer_once(self, model: str, inputs: list, outputs: list[str]) -> dict[str, np.ndarray]:
        requested = [self.protocol.InferRequestedOutput(name) for name in outputs]
        kwargs = {"client_timeout": self.timeout_s} if self.protocol is grpcclient else {}
        try:
            result = await self.triton.infer(model, inputs, outputs=requested, **kwargs)
        except Exception as error:  # noqa: BLE001
            raise _translate(error, model, self.url) from None
        return self._outputs(result, outputs)

    async def inpaint(self, image: bytes, mask: bytes, seed: int = 0, steps: int | None = None,
                      guidance_scale: float | None = None, engine: str | None = None,
                      composite: bool | None = None) -> InpaintResult:
        request = self._inpaint_request(image, mask, seed, steps, guidance_scale, engine, composite)
        return self._images(await self._infer(*request))

    async def fill(self, image: bytes, mask: bytes, seed: int = 0, steps: int | None = None,
                   guidance_scale: float | None = None, prompt: str | None = None,
                   composite: bool | None = None) -> InpaintResult:
        request = self._fill_request(image, mask, seed, steps, guidance_scale, prompt, composite)
        return self._images(await self._infer(*request))

    async def remove(self, image: bytes, prompt: str, seed: int = 0, steps: int | None = None,
                     guidance_scale: float | None = None, engine: str | None = None,
                     composite: bool | None = None) -> RemoveResult:
        request = self._remove_request(image, prompt, seed, steps, guidance_scale, engine, composite)
        return self._images(await self._infer(*request))

    async def segment(self, image: bytes, prompt: str, boxes=None) -> SegmentResult:
        return self._segments(await self._infer(*self._segment_request(image, prompt, boxes)))

    async def generate(self, prompt: str, seed: int = 0, width: int | None = None, height: int | None = None,
                       steps: int | None = None, guidance_scale: float | None = None,
                       variant: str | None = None) -> bytes:
        request = self._generate_request(prompt, seed, width, height, steps, guidance_scale, variant)
        return (await self._infer(*request))["IMAGE"].reshape(-1)[0]
