"""Shared fixtures: the tiny checkpoint, the exported model repository, real photos, and a real tritonserver."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw

from export.tiny import FLUX_VARIANTS, TINY_ROOT, build_tiny_flux, build_tiny_objectclear, build_tiny_sam3
from pipelines.progress import STREAM_SUFFIX
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
def flux_checkpoints() -> dict[str, Path]:
    """variant -> tiny diffusers pipeline folder (FluxPipeline for schnell/dev, FluxFillPipeline for fill)."""
    folders = {variant: TINY_ROOT / f"flux-{variant}" for variant in FLUX_VARIANTS}
    for variant, folder in folders.items():
        if not (folder / "model_index.json").exists():
            build_tiny_flux(folder, variant)
    return folders


def flux_pipeline(folder: Path):
    from diffusers import FluxPipeline

    pipeline = FluxPipeline.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="session")
def schnell_pipeline(flux_checkpoints):
    """diffusers' FluxPipeline on the tiny schnell folder flux_schnell_generate (and flux_generate) was exported from."""
    return flux_pipeline(flux_checkpoints["schnell"])


@pytest.fixture(scope="session")
def dev_pipeline(flux_checkpoints):
    """diffusers' FluxPipeline on the tiny dev folder flux_dev_generate was exported from."""
    return flux_pipeline(flux_checkpoints["dev"])


@pytest.fixture(scope="session")
def hub_layouts(objectclear_checkpoint, sam3_checkpoint, flux_checkpoints, tmp_path_factory) -> dict[str, Path]:
    """pipeline -> the tiny checkpoint laid out as its Hugging Face repository is (export/tiny_hub.py)."""
    from export.hub import HUB
    from export.tiny_hub import build_tiny_hub

    plain = {"objectclear": objectclear_checkpoint, "sam3": sam3_checkpoint,
             **{f"flux-{variant}": folder for variant, folder in flux_checkpoints.items()}}
    root = tmp_path_factory.mktemp("tiny-hub")
    return {pipeline: build_tiny_hub(pipeline, plain[pipeline], root / repo.repo_id) for pipeline, repo in HUB.items()}


@pytest.fixture(scope="session")
def model_repository(hub_layouts) -> Path:
    """The project's model repository with the tiny models exported from their Hub layouts, by the command a user
    runs (`make export` normally did this already, the same way)."""
    from export.__main__ import run

    for pipeline, model in (("objectclear", "remove_object/1/conditioning.npz"), ("sam3", "remove_object/1/processor"),
                            ("flux-schnell", "flux_schnell_generate/1/pipeline"),
                            ("flux-dev", "flux_dev_generate/1/pipeline"), ("flux-fill", "flux_fill_inpaint/1/pipeline")):
        if not (DEFAULT_MODEL_REPOSITORY / model).exists():
            run([pipeline, "--source", str(hub_layouts[pipeline])])
    return DEFAULT_MODEL_REPOSITORY


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def call(module, url: str, model: str, outputs: list[str], timeout_s: float | None = None,
         **tensors) -> list[np.ndarray]:
    """One inference with the real tritonclient (module: tritonclient.http or .grpc), given up after timeout_s
    (default: tritonclient's own, 60 s over HTTP, none over gRPC). tensors: name -> (numpy array, Triton datatype)."""
    inputs = []
    for name, (value, datatype) in tensors.items():
        tensor = module.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    http = module.__name__.endswith(".http")
    timeout = {} if timeout_s is None else {"network_timeout" if http else "client_timeout": timeout_s}
    # an open connection would hold up the server's exit
    with module.InferenceServerClient(url, **(timeout if http else {})) as client:
        result = client.infer(model, inputs, **({} if http else timeout))
    return [result.as_numpy(name) for name in outputs]


def as_bytes(data: bytes | str):
    return np.array([data.encode() if isinstance(data, str) else data], dtype=object), "BYTES"


def diffusers_uint8(images: np.ndarray) -> np.ndarray:
    """The first image of a diffusers output_type="np" batch as its PIL output holds it."""
    return (images[0] * 255).round().astype(np.uint8)


def max_difference(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(int) - b.astype(int)).max())


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


def start_server(repository: Path, preset: str | None, models: list[str] | None = None) -> TritonServer:
    """Every model for the default preset; for another preset, those named or every model but the streaming twins
    (tested once, in the default server: each is one more python-backend process to start)."""
    if preset is not None and models is None:
        models = [m for m in TritonServer(repository).repository_models() if not m.endswith(STREAM_SUFFIX)]
    server = TritonServer(repository, preset=preset, models=models)
    server.start()
    return server


# Memory: every python-backend stub imports PyTorch (~0.45 GB of private memory each, CUDA build), the default server
# runs about forty of them and CI machines have 24 GB without swap. So a module that starts a large server of its own
# calls make_room() first, which stops the default server; the next test that uses it restarts it, on the same ports.
SHARED: list[TritonServer] = []


def make_room() -> None:
    for server in SHARED:
        server.stop()


@pytest.fixture(scope="session")
def default_server(model_repository):
    """One server with every model in its default (balanced) config, shared by the test modules: each start loads
    about forty models, a minute on two cores."""
    server = start_server(model_repository, None)
    SHARED.append(server)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def default_server_running(request):
    """Restarts the default server for a test that uses it after make_room() stopped it."""
    if "default_server" in request.fixturenames:
        server = request.getfixturevalue("default_server")
        if server.process.poll() is not None:
            server.start()
