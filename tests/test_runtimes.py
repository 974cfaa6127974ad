"""Every public model served on each network runtime that runs here gives the references' results.

Both repositories are what `python -m server.repository --runtime <runtime>` writes from the exported one, for the
models the tests call: `onnxruntime` (the graphs in ONNX Runtime on the CPU) and `torch --device cpu` (the export's
own wrapper modules in PyTorch, fp32 on the CPU): same pipelines, same presets, different network models. Each
public model is compared with the independent references (transformers' Sam3Model, diffusers' FluxPipeline /
FluxFillPipeline, the ObjectClear reference) at the tolerances measured for the served ONNX Runtime path
(test_presets_served.py, test_sam3_served.py, test_flux_served.py).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import skimage.data
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from diffusers import FluxFillPipeline
from PIL import Image

from conftest import as_bytes, call, decode, diffusers_uint8, make_room, max_difference, png
from pipelines.flux import fill_size
from pipelines.repository import needed
from reference.objectclear_reference import objectclear_reference
from reference.sam3_reference import load_sam3, sam3_reference
from server.launcher import TritonServer, preset_parameters
from server.repository import generate

pytestmark = pytest.mark.server
RUNTIMES = ["onnxruntime", "torch"]
SEED = 11
PROMPT = "a photo of a cat holding a sign that says hello world"
PUBLIC = ["objectclear_inpaint", "sam3_segment", "remove_object", "flux_generate", "flux_fill_inpaint"]  # tested below


@pytest.fixture(scope="module", params=RUNTIMES)
def served(request, model_repository, tmp_path_factory):
    """One server per runtime, one after the other, with one instance per model: parity needs no concurrency, and
    every stub holds its own PyTorch (conftest: make_room)."""
    repository = generate(request.param, tmp_path_factory.mktemp(request.param) / "repository", model_repository,
                          needed(*PUBLIC), device="cpu")
    for config in repository.glob("*/config.pbtxt"):
        config.write_text(re.sub(r"count: \d+", "count: 1", config.read_text()))
    make_room()
    server = TritonServer(repository)
    server.start(timeout=900)  # torch's network stubs import torch, diffusers and transformers: slower to start
    yield server
    server.stop()


def int32(value):
    return np.array([value], dtype=np.int32), "INT32"


def int64(value):
    return np.array([value], dtype=np.int64), "INT64"


NO_COMPOSITE = np.array([False]), "BOOL"  # the references resize their whole output back


@pytest.fixture(scope="module")
def objectclear_expected(objectclear_checkpoint, coffee):
    params = preset_parameters("balanced")
    image, mask = objectclear_reference(objectclear_checkpoint, Image.fromarray(coffee[0]), Image.fromarray(coffee[1]),
                                        SEED, int(params["steps"]), float(params["guidance_scale"]),
                                        int(params["short_side"]))
    return np.asarray(image), np.asarray(mask)


def test_objectclear_inpaint_matches_the_reference(served, coffee, objectclear_expected):
    photo, mask = coffee
    image, region = call(grpcclient, served.grpc_url, "objectclear_inpaint", ["IMAGE", "MASK"],
                         IMAGE=as_bytes(png(photo)), MASK=as_bytes(png(mask)), SEED=int64(SEED), COMPOSITE=NO_COMPOSITE)
    assert max_difference(decode(image[0]), objectclear_expected[0]) <= 1
    assert np.array_equal(decode(region[0]), objectclear_expected[1])
    assert np.abs(decode(image[0]).astype(int) - photo).mean() > 1  # the photo was changed: not a vacuous match


def test_sam3_segment_matches_transformers(served, sam3_checkpoint):
    photo = skimage.data.chelsea()
    masks, boxes, scores = call(httpclient, served.http_url, "sam3_segment", ["MASKS", "BOXES", "SCORES"],
                                IMAGE=as_bytes(png(photo)), PROMPT=as_bytes("a cat"))
    want = sam3_reference(load_sam3(sam3_checkpoint), photo, "a cat", None)
    assert len(want["SCORES"]) > 0 and masks.shape == want["MASKS"].shape
    np.testing.assert_allclose(scores, want["SCORES"], atol=1e-4)
    np.testing.assert_allclose(boxes, want["BOXES"], atol=1e-2)
    assert (masks != want["MASKS"]).sum() <= 1e-4 * masks.size


def test_remove_object_is_its_two_halves(served, coffee):
    photo = as_bytes(png(coffee[0]))
    image, region = call(httpclient, served.http_url, "remove_object", ["IMAGE", "MASK"], IMAGE=photo,
                         PROMPT=as_bytes("a cup"), SEED=int64(SEED))
    (masks,) = call(httpclient, served.http_url, "sam3_segment", ["MASKS"], IMAGE=photo, PROMPT=as_bytes("a cup"))
    union = (masks.any(axis=0) * 255).astype(np.uint8)
    halves = call(httpclient, served.http_url, "objectclear_inpaint", ["IMAGE", "MASK"], IMAGE=photo,
                  MASK=as_bytes(png(union)), SEED=int64(SEED))
    assert union.any()
    assert np.array_equal(decode(image[0]), decode(halves[0][0]))
    assert np.array_equal(decode(region[0]), decode(halves[1][0]))


def test_flux_generate_matches_diffusers(served, schnell_pipeline):
    (image,) = call(grpcclient, served.grpc_url, "flux_generate", ["IMAGE"], PROMPT=as_bytes(PROMPT),
                    SEED=int64(SEED), WIDTH=int32(320), HEIGHT=int32(256), STEPS=int32(2))
    expected = diffusers_uint8(schnell_pipeline(PROMPT, width=320, height=256, num_inference_steps=2,
                                                guidance_scale=0.0, max_sequence_length=256, output_type="np",
                                                generator=torch.Generator().manual_seed(SEED)).images)
    assert max_difference(decode(image[0]), expected) <= 1
    assert expected.std() > 10


def test_flux_fill_inpaint_matches_diffusers(served, flux_checkpoints, coffee):
    photo, mask = coffee
    image, _ = call(httpclient, served.http_url, "flux_fill_inpaint", ["IMAGE", "MASK"], IMAGE=as_bytes(png(photo)),
                    MASK=as_bytes(png(mask)), SEED=int64(SEED), STEPS=int32(2), COMPOSITE=NO_COMPOSITE)
    pixels = int(preset_parameters("balanced", "flux_fill_inpaint")["pixels"])
    width, height = fill_size(photo.shape[1], photo.shape[0], pixels)
    pipeline = FluxFillPipeline.from_pretrained(flux_checkpoints["fill"])
    pipeline.set_progress_bar_config(disable=True)
    expected = pipeline(prompt="", image=Image.fromarray(photo), mask_image=Image.fromarray(mask), width=width,
                        height=height, num_inference_steps=2, guidance_scale=30.0, max_sequence_length=512,
                        generator=torch.Generator().manual_seed(SEED)).images[0]
    expected = np.asarray(expected.resize((photo.shape[1], photo.shape[0]), Image.BICUBIC))
    assert max_difference(decode(image[0]), expected) <= 2  # test_flux_served.py: Fill's measured tolerance
