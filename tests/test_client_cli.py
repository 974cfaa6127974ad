"""The client CLI (python -m client) against a real tritonserver: HTTP and gRPC, a folder run, and its errors."""
from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

from client.cli import main
from conftest import decode, png
from server.launcher import REPO_ROOT, TritonServer

pytestmark = pytest.mark.server
OBJECTCLEAR = ["objectclear_inpaint", "objectclear_unet", "objectclear_vae_encoder", "objectclear_vae_decoder",
               "objectclear_object_encoder"]


@pytest.fixture(scope="module")
def server(model_repository):
    """Only the ObjectClear models, with the fastest preset: this file tests the client, not the pipeline."""
    with TritonServer(model_repository, preset="ultra_fast", models=OBJECTCLEAR) as running:
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
