"""Progress while a request runs: the streaming twins `<model>_stream` over gRPC streaming (a progress message at
each stage start and after each denoising step, then the public model's own response), previews, cancellation that
stops the UNet calls (Triton's execution count), the client library and the CLI's --progress. The twins' configs are
derived from their public models' (server/streaming.py)."""
from __future__ import annotations

import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2

from client.api import Client, ClientError, InvalidInput, Progress
from client.cli import main
from conftest import decode, png
from pipelines.imaging import processing_size
from pipelines.progress import PREVIEW_INPUT, PROGRESS_OUTPUTS, STREAM_SUFFIX, STREAMED
from server.launcher import DEFAULT_MODEL_REPOSITORY, PRESETS
from server.streaming import stale

PROMPT = "a red bicycle"


def parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_every_twin_is_its_public_models_config_made_decoupled():
    """The committed twins are what `python -m server.streaming` derives now (a public model's config changed
    without regenerating fails here), and the derivation keeps the public interface and the preset values."""
    assert not stale(), "stale streaming twins: run `python -m server.streaming`"
    for model in STREAMED:
        for name in ["config.pbtxt", *(f"configs/{preset}.pbtxt" for preset in PRESETS)]:
            public, twin = parse(DEFAULT_MODEL_REPOSITORY / model / name), \
                parse(DEFAULT_MODEL_REPOSITORY / (model + STREAM_SUFFIX) / name)
            assert twin.name == model + STREAM_SUFFIX and twin.model_transaction_policy.decoupled
            assert list(twin.input)[:-1] == list(public.input)
            assert twin.input[-1].name == PREVIEW_INPUT and twin.input[-1].optional
            assert list(twin.output) == list(public.output) + list(twin.output)[len(public.output):]
            assert [o.name for o in twin.output][len(public.output):] == list(PROGRESS_OUTPUTS)
            assert twin.parameters == public.parameters, name
            assert [g.count for g in twin.instance_group] == [1] * len(public.instance_group)


def small_pair(photo: np.ndarray, mask: np.ndarray) -> tuple[bytes, bytes]:
    half = lambda a: np.asarray(Image.fromarray(a).resize((a.shape[1] // 2, a.shape[0] // 2)))  # noqa: E731
    return png(half(photo)), png(half(mask))


# public model -> (Client method, the stages announced, in order)
CASES = {
    "objectclear_inpaint": ("inpaint", ["decode_input", "encode", "denoise", "decode", "fusion", "png"]),
    "remove_object": ("remove", ["decode_input", "segmentation", "encode", "denoise", "decode", "fusion", "png"]),
    "flux_fill_inpaint": ("fill", ["decode_input", "encode", "denoise", "decode", "png"]),
    "flux_generate": ("generate", ["text_encode", "denoise", "decode", "png"]),
}


def arguments(method: str, coffee) -> tuple[tuple, dict]:
    image, mask = small_pair(*coffee)
    return {"inpaint": ((image, mask), {}), "fill": ((image, mask), {}),
            "remove": ((png(coffee[0]), "a cup"), {}),  # the tiny SAM 3 finds "a cup" in the full photo
            "generate": ((PROMPT,), {"width": 256, "height": 256})}[method]


@pytest.mark.server
@pytest.mark.parametrize("model", list(CASES))
def test_n_step_request_streams_n_steps_then_the_public_models_response(default_server, coffee, model):
    method, stages = CASES[model]
    steps = 3 if model == "objectclear_inpaint" else 2
    args, kwargs = arguments(method, coffee)
    messages: list[Progress] = []
    with Client(default_server.grpc_url, "grpc") as client:
        streamed = getattr(client, method)(*args, seed=5, steps=steps, on_progress=messages.append, **kwargs)
        plain = getattr(client, method)(*args, seed=5, steps=steps, **kwargs)

    step_messages = [m for m in messages if m.step]
    assert [(m.stage, m.step, m.total_steps) for m in step_messages] == \
        [("denoise", k, steps) for k in range(1, steps + 1)]
    assert [m.stage for m in messages if not m.step] == stages  # each stage announced once, in order
    assert all(m.total_steps == 0 for m in messages if not m.step)
    elapsed = [m.elapsed for m in messages]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0
    assert all(m.preview is None for m in messages)  # only on request
    assert streamed == plain  # the same PNG bytes as the public model's for the same seed


@pytest.mark.server
def test_previews_are_pngs_of_the_latents_one_pixel_per_latent(default_server, coffee):
    image, mask = small_pair(*coffee)
    messages: list[Progress] = []
    with Client(default_server.grpc_url, "grpc") as client:
        client.inpaint(image, mask, seed=5, steps=2, on_progress=messages.append, preview=True)
        client.generate(PROMPT, seed=5, width=256, height=272, steps=2, on_progress=messages.append, preview=True)
    previews = [decode(m.preview) for m in messages if m.step]
    assert all(m.preview is None for m in messages if not m.step)
    width, height = processing_size(300, 200, 384)  # balanced ObjectClear's processing size for the 300x200 pair
    assert [p.shape for p in previews] == [(height // 8, width // 8, 3)] * 2 + [(272 // 8, 256 // 8, 3)] * 2
    assert all(p.dtype == np.uint8 for p in previews)
    assert not np.array_equal(previews[0], previews[1]) and not np.array_equal(previews[2], previews[3])


def unet_executions(server) -> int:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        stats = client.get_inference_statistics("objectclear_unet", as_json=True)
    return int(stats["model_stats"][0].get("execution_count", 0))


def triton_metric(server, line_start: str) -> float:
    """The value of the series whose exposition line starts with `line_start` (name{labels...), 0 if absent."""
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


class LeaveNow(Exception):
    pass


@pytest.mark.server
def test_leaving_the_stream_cancels_the_request_and_stops_the_unet_calls(default_server, coffee):
    image, mask = small_pair(*coffee)
    cancelled = 'pipeline_requests_total{engine="objectclear",model="objectclear_inpaint_stream",outcome="cancelled"'
    before, cancelled_before = unet_executions(default_server), triton_metric(default_server, cancelled)

    def leave_after_two_steps(progress: Progress) -> None:
        if progress.step == 2:
            raise LeaveNow

    with Client(default_server.grpc_url, "grpc") as client, pytest.raises(LeaveNow):
        client.inpaint(image, mask, seed=5, steps=100, on_progress=leave_after_two_steps)
    deadline = time.monotonic() + 60
    while triton_metric(default_server, cancelled) == cancelled_before:  # the server's loop has stopped
        assert time.monotonic() < deadline, "the request was not cancelled on the server"
        time.sleep(0.2)
    stopped_at = unet_executions(default_server)
    time.sleep(2)
    assert unet_executions(default_server) == stopped_at  # no UNet call after the loop stopped
    # 2 steps seen by the client, and those the server ran before the cancellation reached it
    assert 2 <= stopped_at - before < 10, stopped_at - before


@pytest.mark.server
def test_bad_input_in_a_stream_is_invalid_input_naming_it(default_server, coffee):
    image, _ = small_pair(*coffee)
    with Client(default_server.grpc_url, "grpc") as client, pytest.raises(InvalidInput, match="MASK"):
        client.inpaint(image, png(np.zeros((10, 10), np.uint8)), on_progress=lambda progress: None)


def test_progress_over_http_is_refused_with_a_clear_message():
    with Client("127.0.0.1:1", "http") as client, pytest.raises(ClientError, match="gRPC"):
        client.generate(PROMPT, on_progress=lambda progress: None)
    assert main(["generate", "--prompt", PROMPT, "--progress", "--url", "127.0.0.1:1"]) == 1


@pytest.mark.server
def test_cli_progress_bar_and_the_same_png(default_server, tmp_path, capsys):
    out = tmp_path / "bicycle.png"
    code = main(["generate", "--prompt", PROMPT, "--seed", "7", "--width", "256", "--height", "256", "--steps", "3",
                 "--out", str(out), "--url", default_server.grpc_url, "--protocol", "grpc", "--progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "bicycle.png: denoise" in err and "3/3" in err  # the bar's stage and steps
    with Client(default_server.grpc_url, "grpc") as client:
        assert out.read_bytes() == client.generate(PROMPT, seed=7, width=256, height=256, steps=3)
