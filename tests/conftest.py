"""Shared fixtures: the tiny checkpoint, the exported model repository, real photos, and a real tritonserver."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw

from export.tiny import TINY_ROOT, build_tiny_objectclear, build_tiny_sam3
from server.launcher import DEFAULT_MODEL_REPOSITORY, TritonServer


@pytest.fixture(scope="session")
def objectclear_checkpoint() -> Path:
    folder = TINY_ROOT / "objectclear"
    if not (folder / "model_index.json").exists():
        build_tiny_objectclear(folder)
    return folder


@pytest.fixture(scope="session")
def sam3_checkpoint() -> Path:
    folder = TINY_ROOT / "sam3"
    if not (folder / "config.json").exists():
        build_tiny_sam3(folder)
    return folder


@pytest.fixture(scope="session")
def model_repository(objectclear_checkpoint, sam3_checkpoint) -> Path:
    """The project's model repository with the tiny models exported (`make export` normally did this already)."""
    if not (DEFAULT_MODEL_REPOSITORY / "remove_object" / "1" / "conditioning.npz").exists():
        from export.objectclear import export_objectclear
        export_objectclear(objectclear_checkpoint, DEFAULT_MODEL_REPOSITORY)
    if not (DEFAULT_MODEL_REPOSITORY / "remove_object" / "1" / "processor").exists():
        from export.sam3 import export_sam3
        export_sam3(sam3_checkpoint, DEFAULT_MODEL_REPOSITORY)
    return DEFAULT_MODEL_REPOSITORY


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="session")
def coffee() -> tuple[np.ndarray, np.ndarray]:
    """A real photo (600x400: non-square, its 400 px side gives 50 latents, not a multiple of 4) and an ellipse
    mask over the cup."""
    photo = skimage.data.coffee()
    mask = Image.new("L", (photo.shape[1], photo.shape[0]), 0)
    ImageDraw.Draw(mask).ellipse((130, 40, 470, 330), fill=255)
    return photo, np.asarray(mask)


def start_server(repository: Path, preset: str | None):
    server = TritonServer(repository, preset=preset)
    server.start()
    return server


@pytest.fixture(scope="module")
def default_server(model_repository):
    server = start_server(model_repository, None)
    yield server
    server.stop()
