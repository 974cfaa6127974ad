"""Warm-up requests: one per public model instance, end to end, sent by the launcher once Triton reports ready and
before the launcher does.

Triton 2.51 takes no BLS call before the server is ready ("Server not ready"; none at all in `initialize`), so a
pipeline cannot warm its networks itself: its `model_warmup` would fail its load. The networks run once while they
load (pipelines/ort.py, `warm_up`), but a stub's first request through Triton still costs ~0.05-0.2 s per network
(its first shared-memory transfers); these requests pay that before any user does. Each is the cheapest request that
runs every network of its model: one step, a photo-sized image at the preset's processing size, SAM 3 made to find
something (threshold 0) so that remove_object inpaints.
"""
from __future__ import annotations

import io
import re
import threading
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from PIL import Image

PHOTO_SIZE = (1200, 800)  # the networks' profiles' optimum (export/serving.py OPT_PHOTO): a 3:2 photo


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _inputs() -> dict[str, dict]:
    width, height = PHOTO_SIZE
    gradient = np.linspace(0, 255, width * height * 3).reshape(height, width, 3).astype(np.uint8)
    image = _png(Image.fromarray(gradient))
    mask = Image.new("L", PHOTO_SIZE, 0)
    mask.paste(255, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    mask = _png(mask)
    one_step = (np.array([1], np.int32), "INT32")
    text = lambda value: (np.array([value], np.object_), "BYTES")  # noqa: E731
    return {
        "sam3_segment": dict(IMAGE=text(image), PROMPT=text(b"warm-up")),
        "objectclear_inpaint": dict(IMAGE=text(image), MASK=text(mask), STEPS=one_step),
        "remove_object": dict(IMAGE=text(image), PROMPT=text(b"warm-up"), STEPS=one_step,
                              SCORE_THRESHOLD=(np.array([0.0], np.float32), "FP32")),
        "flux_generate": dict(PROMPT=text(b"warm-up"), STEPS=one_step),
        "flux_fill_inpaint": dict(IMAGE=text(image), MASK=text(mask), STEPS=one_step),
    }


def instance_count(repository: Path, model: str, preset: str | None) -> int:
    """Instances of `model` in the preset's config (its instance_group counts)."""
    path = Path(repository) / model / "configs" / f"{preset}.pbtxt"
    text = (path if preset and path.exists() else Path(repository) / model / "config.pbtxt").read_text()
    group = re.search(r"instance_group\s*\[(.*?)\]", text, re.S)
    return sum(int(n) for n in re.findall(r"count:\s*(\d+)", group.group(1))) if group else 1


def warm_up(url: str, repository: Path, models: list[str], preset: str | None) -> None:
    """Every public model among `models`, as many requests at once as it has instances; raises on a failed one."""
    failures = []

    def send(model: str, tensors: dict) -> None:
        inputs = []
        for name, (value, datatype) in tensors.items():
            tensor = httpclient.InferInput(name, list(value.shape), datatype)
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        try:
            with httpclient.InferenceServerClient(url, network_timeout=3600) as client:
                client.infer(model, inputs)
        except Exception as error:  # noqa: BLE001 -- reported below
            failures.append(f"{model}: {error}")

    threads = [threading.Thread(target=send, args=(model, tensors))
               for model, tensors in _inputs().items() if model in models
               for _ in range(instance_count(repository, model, preset))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError("warm-up request failed: " + "; ".join(failures))
