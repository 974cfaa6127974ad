"""Admission control on the session's default server (balanced: each public model runs 2 requests and queues 2;
model_repository/*/config.pbtxt): past that, requests are refused at once with UNAVAILABLE (HTTP 503) over both
protocols, also when the full queue is one a pipeline calls through BLS, and the client CLI retries a refused request
with back-off until it is admitted. How fast, and what it does to the admitted requests' latency: BENCHMARKS.md."""
from __future__ import annotations

import re
import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from client.cli import main
from conftest import as_bytes, call, decode, png

pytestmark = pytest.mark.server
BUSY = {httpclient: "503", grpcclient: "StatusCode.UNAVAILABLE"}
RUNNING = QUEUED = 2  # balanced: instance_group count, and max_queue_size
REFUSAL_S = 1.0  # generous for a loaded CI machine; measured at a few ms (BENCHMARKS.md)


def pending(server, model: str) -> int:
    """Requests waiting in the model's queue, from Triton's own gauge."""
    metrics = urllib.request.urlopen(server.metrics_url).read().decode()
    match = re.search(rf'^nv_inference_pending_request_count{{model="{model}",version="1"}} (\d+)', metrics, re.M)
    return int(match.group(1)) if match else 0


class Saturated:
    """RUNNING + QUEUED slow requests in flight to `model`, each in its own thread; their results are kept."""

    def __init__(self, server, model: str, tensors: dict):
        self.results: list = []
        self.threads = [threading.Thread(target=self._send, args=(server, model, tensors))
                        for _ in range(RUNNING + QUEUED)]

    def _send(self, server, model, tensors):
        try:
            # a queued request waits for a running one's 100 steps, then runs its own: minutes on a slow CI machine,
            # past tritonclient's default 60 s (what is asserted is that it is served, not how fast)
            self.results.append(call(httpclient, server.http_url, model, ["IMAGE"], timeout_s=900, **tensors)[0])
        except Exception as error:  # noqa: BLE001 -- kept, and asserted on
            self.results.append(error)

    def __enter__(self) -> "Saturated":
        for thread in self.threads:  # one at a time: in a burst, Triton can refuse a request while an instance is
            thread.start()           # still idle (its queue holds what the scheduler has not handed out yet)
            time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        for thread in self.threads:
            thread.join()


def wait_until_queue_is_full(server, model: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while pending(server, model) < QUEUED:
        assert time.monotonic() < deadline, f"{model}'s queue never filled"
        time.sleep(0.05)


def refusal(module, server, model: str, **tensors) -> tuple[InferenceServerException, float]:
    url = server.http_url if module is httpclient else server.grpc_url
    start = time.perf_counter()
    with pytest.raises(InferenceServerException) as error:
        call(module, url, model, [], **tensors)
    return error.value, time.perf_counter() - start


def test_a_full_queue_refuses_at_once_and_the_admitted_are_served(default_server, coffee, tmp_path, capsys):
    photo, mask = coffee
    image, mask_png = as_bytes(png(photo)), as_bytes(png(mask))
    def slow(steps):  # the most steps a request may ask for: seconds each, so that a queue stays full a while
        return dict(IMAGE=image, MASK=mask_png, STEPS=(np.array([steps], np.int32), "INT32"))
    # one after the other: a cold server takes a while to fill the first queue, and the second must still be full
    # when its refusal is checked
    with Saturated(default_server, "objectclear_inpaint", slow(100)) as inpainting:
        wait_until_queue_is_full(default_server, "objectclear_inpaint")
        with Saturated(default_server, "flux_fill_inpaint", slow(100)) as filling:
            wait_until_queue_is_full(default_server, "flux_fill_inpaint")
            check_refusals(default_server, image, mask_png)
            # the CLI is refused too, waits, and is admitted once the queue drains
            photo_file, mask_file = tmp_path / "coffee.png", tmp_path / "mask.png"
            photo_file.write_bytes(image[0][0])
            mask_file.write_bytes(mask_png[0][0])
            code = main(["inpaint", str(photo_file), str(mask_file), "--url", default_server.http_url, "--steps", "1",
                         "--retries", "8", "--backoff", "0.5"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "busy, retrying in" in err and "Exceeds maximum queue size" in err
    assert decode((tmp_path / "coffee.inpainted.png").read_bytes()).shape == photo.shape
    for result in inpainting.results + filling.results:  # what was admitted was served
        assert not isinstance(result, Exception), result
        assert decode(result[0]).shape == photo.shape


def check_refusals(server, image, mask_png):
    """With objectclear_inpaint's and flux_fill_inpaint's queues full."""
    for module in (httpclient, grpcclient):
        error, seconds = refusal(module, server, "objectclear_inpaint", IMAGE=image, MASK=mask_png)
        assert error.status() == BUSY[module] and "Exceeds maximum queue size" in error.message(), error
        assert seconds < REFUSAL_S
    # remove_object's own queue is empty: it segments, then its BLS call finds the Fill model full
    error, _ = refusal(grpcclient, server, "remove_object", IMAGE=image, PROMPT=as_bytes("a cup"),
                       ENGINE=as_bytes("flux_fill"), SCORE_THRESHOLD=(np.array([0.0], np.float32), "FP32"))
    assert error.status() == BUSY[grpcclient] and "flux_fill_inpaint" in error.message(), error

