"""The client CLI (python -m client) and library against a real tritonserver: HTTP and gRPC, a folder run, FLUX
generation (default and --variant) and the Fill engine, --preset, --no-composite, and the errors."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

import client.cli
from client.api import AsyncClient, Client, InpaintResult, InvalidInput
from client.cli import main
from conftest import decode, make_room, png
from pipelines.repository import needed
from server.launcher import REPO_ROOT, TritonServer, preset_parameters

pytestmark = pytest.mark.server
# ObjectClear (with its Fill engine) and FLUX generation; not remove_object/SAM 3: this file tests the client
MODELS = needed("objectclear_inpaint", "flux_generate", "flux_dev_generate")
PROMPT = "a red bicycle"


@pytest.fixture(scope="module")
def server(model_repository):
    """ObjectClear and FLUX (generation, Fill) with the fastest preset; not remove_object/SAM 3: this file tests
    the client, not the pipelines."""
    make_room()
    with TritonServer(model_repository, preset="ultra_fast", models=MODELS) as running:
        yield running


def url(server, protocol):
    return server.http_url if protocol == "http" else server.grpc_url


def write_pair(folder, name, photo, stem=None):
    """A downscaled real photo and a mask over its middle, as name.jpg and name.mask.png."""
    image = Image.fromarray(photo).convert("RGB")
    image = image.resize((image.width // 4, image.height // 4))
    mask = np.zeros((image.height, image.width), np.uint8)
    mask[image.height // 4: image.height * 3 // 4, image.width // 4: image.width * 3 // 4] = 255
    image.save(folder / f"{name}.jpg", quality=90)
    (folder / f"{name}.mask.png").write_bytes(png(mask))
    return folder / f"{name}.jpg", folder / f"{name}.mask.png", (image.height, image.width)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_inpaint_writes_a_png_of_the_input_size(server, tmp_path, protocol, capsys):
    image, mask, size = write_pair(tmp_path, "coffee", skimage.data.coffee())
    code = main(["inpaint", str(image), str(mask), "--url", url(server, protocol), "--protocol", protocol,
                 "--seed", "3", "--save-mask"])
    assert code == 0, capsys.readouterr().err
    result = tmp_path / "coffee.inpainted.png"  # default: next to the input
    assert decode(result.read_bytes()).shape == (*size, 3)
    assert decode((tmp_path / "coffee.inpainted.mask.png").read_bytes()).shape[:2] == size
    assert f"{image}: " in capsys.readouterr().out  # the per-image timing line


def test_folder_run_with_concurrency_writes_every_output(server, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    sizes = {name: write_pair(photos, name, getattr(skimage.data, name)())[2]
             for name in ("coffee", "chelsea", "astronaut")}
    out = tmp_path / "results"
    code = main(["inpaint", str(photos), str(photos), "--url", server.grpc_url, "--protocol", "grpc",
                 "--concurrency", "2", "--out", str(out), "--preset", "ultra_fast"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.inpainted.png" for name in sizes)
    for name, size in sizes.items():
        assert decode((out / f"{name}.inpainted.png").read_bytes()).shape[:2] == size


def free_port_with_nothing_listening() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: nothing listens there


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_server_down_is_exit_code_2_with_one_line(tmp_path, protocol):
    image, mask, _ = write_pair(tmp_path, "coffee", skimage.data.coffee())
    done = subprocess.run([sys.executable, "-m", "client", "inpaint", str(image), str(mask), "--protocol", protocol,
                           "--url", f"127.0.0.1:{free_port_with_nothing_listening()}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: no Triton server at 127.0.0.1:")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "coffee.inpainted.png").exists()


def test_model_not_loaded_is_exit_code_3(server, tmp_path, capsys):
    image, _, _ = write_pair(tmp_path, "coffee", skimage.data.coffee())
    code = main(["remove", str(image), "--prompt", "cup", "--url", server.http_url])  # not loaded in this server
    assert code == 3
    assert "remove_object" in capsys.readouterr().err


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_input_is_exit_code_4_with_the_servers_message(server, tmp_path, protocol, capsys):
    image, _, _ = write_pair(tmp_path, "coffee", skimage.data.coffee())
    wrong_size = tmp_path / "small.png"
    wrong_size.write_bytes(png(np.zeros((10, 10), np.uint8)))
    code = main(["inpaint", str(image), str(wrong_size), "--url", url(server, protocol), "--protocol", protocol])
    assert code == 4
    assert "MASK" in capsys.readouterr().err
    assert not (tmp_path / "coffee.inpainted.png").exists()


# -- FLUX: generate, the Fill engine and the fill command ----------------------------------------------------------
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_generate_writes_the_png_a_library_call_returns(server, tmp_path, protocol, capsys):
    out = tmp_path / "bicycle.png"
    code = main(["generate", "--prompt", PROMPT, "--seed", "7", "--width", "256", "--height", "256", "--steps", "1",
                 "--out", str(out), "--url", url(server, protocol), "--protocol", protocol])
    assert code == 0, capsys.readouterr().err
    with Client(url(server, protocol), protocol) as library:
        expected = library.generate(PROMPT, seed=7, width=256, height=256, steps=1)
    assert decode(out.read_bytes()).shape == (256, 256, 3)
    assert out.read_bytes() == expected

    async def generate_async():
        async with AsyncClient(url(server, protocol), protocol) as library:
            return await library.generate(PROMPT, seed=7, width=256, height=256, steps=1)

    assert asyncio.run(generate_async()) == expected


def test_generate_variant_calls_that_variants_model(server, tmp_path, capsys):
    out = tmp_path / "dev.png"
    code = main(["generate", "--prompt", PROMPT, "--seed", "7", "--width", "256", "--height", "256", "--steps", "1",
                 "--variant", "dev", "--out", str(out), "--url", server.grpc_url, "--protocol", "grpc"])
    assert code == 0, capsys.readouterr().err
    with Client(server.http_url) as library:
        dev = library.generate(PROMPT, seed=7, width=256, height=256, steps=1, variant="dev")
        schnell = library.generate(PROMPT, seed=7, width=256, height=256, steps=1, variant="schnell")
        default = library.generate(PROMPT, seed=7, width=256, height=256, steps=1)
    assert out.read_bytes() == dev and default == schnell != dev


def test_inpaint_with_the_flux_fill_engine_and_the_fill_command(server, tmp_path, capsys):
    image, mask, size = write_pair(tmp_path, "coffee", skimage.data.coffee())
    engine_out, fill_out = tmp_path / "engine.png", tmp_path / "fill.png"
    code = main(["inpaint", str(image), str(mask), "--engine", "flux_fill", "--steps", "1", "--seed", "3",
                 "--out", str(engine_out), "--url", server.http_url])
    assert code == 0, capsys.readouterr().err
    filled = decode(engine_out.read_bytes())
    assert filled.shape == (*size, 3)
    with Client(server.http_url) as library:
        objectclear = decode(library.inpaint(image.read_bytes(), mask.read_bytes(), seed=3, steps=1).image)
    assert np.abs(filled.astype(int) - objectclear).max() > 10  # another engine, not ObjectClear's picture
    # the fill command calls flux_fill_inpaint itself: the same model, seed and steps give the same picture
    code = main(["fill", str(image), str(mask), "--steps", "1", "--seed", "3", "--out", str(fill_out),
                 "--url", server.grpc_url, "--protocol", "grpc"])
    assert code == 0, capsys.readouterr().err
    assert np.array_equal(decode(fill_out.read_bytes()), filled)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unknown_engine_is_invalid_input_naming_engine(server, tmp_path, protocol):
    image, mask, _ = write_pair(tmp_path, "coffee", skimage.data.coffee())
    with Client(url(server, protocol), protocol) as library, pytest.raises(InvalidInput, match="ENGINE") as error:
        library.inpaint(image.read_bytes(), mask.read_bytes(), engine="nope")
    assert error.value.exit_code == 4


class RecordingClient:
    """Stands in for client.api.Client: records the models checked and each call's keyword arguments."""
    checked: list[str] = []
    calls: list[tuple[str, dict]] = []

    def __init__(self, *args, **kwargs):
        pass

    def check(self, model):
        self.checked.append(model)

    def close(self):
        pass

    def __getattr__(self, method):
        def call(*args, **kwargs):
            self.calls.append((method, kwargs))
            return b"png" if method == "generate" else InpaintResult(b"png", b"png")
        return call


def test_preset_fills_what_the_flags_leave_out_from_that_models_config(tmp_path, monkeypatch):
    """No server: --preset reads the configs (for the engine's own model), explicit flags win, and without either
    nothing is sent (the server's preset decides)."""
    monkeypatch.setattr(client.cli, "Client", RecordingClient)
    monkeypatch.setattr(RecordingClient, "checked", [])
    monkeypatch.setattr(RecordingClient, "calls", [])
    image, mask, _ = write_pair(tmp_path, "coffee", skimage.data.coffee())
    quality = {model: preset_parameters("quality", model)
               for model in ("flux_generate", "flux_dev_generate", "objectclear_inpaint", "flux_fill_inpaint",
                             "remove_object")}
    inpaint = ["inpaint", str(image), str(mask), "--out", str(tmp_path / "out.png"), "-q"]
    assert main(["generate", "--prompt", PROMPT, "--out", str(tmp_path / "g.png"), "--preset", "quality",
                 "--steps", "2", "-q"]) == 0
    assert main(["generate", "--prompt", PROMPT, "--out", str(tmp_path / "g.png"), "--preset", "quality",
                 "--variant", "dev", "-q"]) == 0
    assert main([*inpaint, "--preset", "quality"]) == 0
    assert main([*inpaint, "--preset", "quality", "--engine", "flux_fill", "--guidance-scale", "7"]) == 0
    assert main([*inpaint, "--no-composite"]) == 0
    assert main(["remove", str(image), "--prompt", "the cup", "--out", str(tmp_path / "r.png"), "--preset", "quality",
                 "-q"]) == 0
    assert RecordingClient.calls == [
        ("generate", dict(seed=0, variant=None, width=int(quality["flux_generate"]["width"]),
                          height=int(quality["flux_generate"]["height"]), steps=2,
                          guidance_scale=float(quality["flux_generate"]["guidance_scale"]))),
        ("generate", dict(seed=0, variant="dev", width=int(quality["flux_dev_generate"]["width"]),
                          height=int(quality["flux_dev_generate"]["height"]),
                          steps=int(quality["flux_dev_generate"]["steps"]),
                          guidance_scale=float(quality["flux_dev_generate"]["guidance_scale"]))),
        ("inpaint", dict(seed=0, steps=int(quality["objectclear_inpaint"]["steps"]),
                         guidance_scale=float(quality["objectclear_inpaint"]["guidance_scale"]), composite=None,
                         engine=None)),
        ("inpaint", dict(seed=0, steps=int(quality["flux_fill_inpaint"]["steps"]), guidance_scale=7.0,
                         composite=None, engine="flux_fill")),
        ("inpaint", dict(seed=0, steps=None, guidance_scale=None, composite=False, engine=None)),
        ("remove", dict(seed=0, engine=None, steps=int(quality["remove_object"]["steps"]),
                        guidance_scale=float(quality["remove_object"]["guidance_scale"]), composite=None)),
    ]
    assert quality["objectclear_inpaint"]["steps"] != quality["flux_fill_inpaint"]["steps"]  # the engine matters
    # flux_generate's preset is its default variant's (4 steps), dev's its own
    assert quality["flux_generate"]["steps"] == "4" != quality["flux_dev_generate"]["steps"]
    assert RecordingClient.checked == ["flux_generate", "flux_dev_generate", "objectclear_inpaint",
                                       "objectclear_inpaint", "flux_fill_inpaint", "objectclear_inpaint",
                                       "remove_object"]
