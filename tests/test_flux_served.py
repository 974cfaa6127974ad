"""FLUX.1 served by a real tritonserver over HTTP and gRPC with the real tritonclient, against diffusers'
FluxPipeline (schnell, dev: served side by side over shared networks) and FluxFillPipeline on the same tiny
pipeline folders, seeds, sizes and steps; the Fill engine reached from objectclear_inpaint and remove_object; bad
input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from diffusers import FluxFillPipeline
from PIL import Image
from tritonclient.utils import InferenceServerException

from conftest import as_bytes, call, decode, diffusers_uint8, max_difference, png
from pipelines.flux import GENERATORS, SHARED_MODELS, TRANSFORMER_MODELS, fill_size

pytestmark = pytest.mark.server
PROMPT = "a photo of a cat holding a sign that says hello world"
# Measured (ONNX Runtime vs PyTorch, ~1e-6 in the networks): generation differs from diffusers by at most 1 grey level
# (a few pixels crossing a rounding boundary); Fill by at most 2 after the bicubic resize back to the input size,
# which can add two 1-level differences of neighbouring pixels.
GENERATE_TOLERANCE = 1
FILL_TOLERANCE = 2
MODULES = pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
INVALID = {httpclient: "400", grpcclient: "StatusCode.INVALID_ARGUMENT"}


def url(server, module) -> str:
    return server.http_url if module is httpclient else server.grpc_url


def int32(value):
    return np.array([value], dtype=np.int32), "INT32"


def int64(value):
    return np.array([value], dtype=np.int64), "INT64"


def fp32(value):
    return np.array([value], dtype=np.float32), "FP32"


def boolean(value):
    return np.array([value], dtype=bool), "BOOL"


def generate(module, server, prompt=PROMPT, seed=0, model="flux_generate", **extra) -> np.ndarray:
    (image,) = call(module, url(server, module), model, ["IMAGE"], PROMPT=as_bytes(prompt), SEED=int64(seed), **extra)
    return decode(image[0])


@pytest.fixture(scope="module")
def server(default_server):
    return default_server  # every model: FLUX, and the ObjectClear/SAM 3 callers of the Fill engine


@pytest.fixture(scope="module")
def fill_reference(flux_checkpoints):
    pipeline = FluxFillPipeline.from_pretrained(flux_checkpoints["fill"])
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


# -- generation (flux_generate: the deployment's default variant, schnell) ------------------------------------------
@MODULES
@pytest.mark.parametrize("seed, size, steps", [(0, None, None), (7, (320, 256), 2)])
def test_schnell_matches_diffusers(server, schnell_pipeline, module, seed, size, steps):
    extra = {}
    if size:
        extra.update(WIDTH=int32(size[0]), HEIGHT=int32(size[1]))
    if steps:
        extra.update(STEPS=int32(steps))
    served = generate(module, server, seed=seed, **extra)
    width, height = size or (512, 512)  # the balanced preset
    expected = diffusers_uint8(schnell_pipeline(PROMPT, width=width, height=height, num_inference_steps=steps or 4,
                                guidance_scale=0.0, max_sequence_length=256, output_type="np",
                                generator=torch.Generator().manual_seed(seed)).images)
    assert served.shape == (height, width, 3)
    assert max_difference(served, expected) <= GENERATE_TOLERANCE
    assert expected.std() > 10  # a real picture, not a flat one that any pipeline would match


def test_seed_controls_the_image_and_http_equals_grpc(server):
    first = generate(httpclient, server, seed=5)
    assert np.array_equal(generate(grpcclient, server, seed=5), first)
    assert max_difference(generate(httpclient, server, seed=6), first) > 10


def test_size_is_rounded_down_to_sixteen_like_diffusers(server):
    image = generate(httpclient, server, WIDTH=int32(300), HEIGHT=int32(270), STEPS=int32(1))
    assert image.shape == (256, 288, 3)


# -- generation with FLUX.1-dev: shifted sigmas, guidance input, 512 T5 tokens ---------------------------------------
@MODULES
def test_dev_matches_diffusers(server, dev_pipeline, module):
    served = generate(module, server, seed=3, model=GENERATORS["dev"], STEPS=int32(3), WIDTH=int32(256),
                      HEIGHT=int32(320))
    expected = diffusers_uint8(dev_pipeline(PROMPT, width=256, height=320, num_inference_steps=3, guidance_scale=3.5,
                                            max_sequence_length=512, output_type="np",
                                            generator=torch.Generator().manual_seed(3)).images)
    assert max_difference(served, expected) <= GENERATE_TOLERANCE
    guided = generate(module, server, seed=3, model=GENERATORS["dev"], STEPS=int32(3), WIDTH=int32(256),
                      HEIGHT=int32(320), GUIDANCE_SCALE=fp32(9.0))
    assert max_difference(guided, served) > 0  # dev's guidance input reaches the transformer


# -- schnell and dev side by side -------------------------------------------------------------------------------------
def model_stats(server, model: str) -> dict:
    with httpclient.InferenceServerClient(server.http_url) as client:
        return client.get_inference_statistics(model)["model_stats"][0]


def test_schnell_and_dev_are_served_at_once_over_networks_loaded_once(server, schnell_pipeline, dev_pipeline):
    with httpclient.InferenceServerClient(server.http_url) as client:
        ready = [m["name"] for m in client.get_model_repository_index() if m.get("state") == "READY"]
    public = ("_generate", "_inpaint", "_stream")  # pipelines and their streaming twins
    flux_networks = sorted(m for m in ready if m.startswith("flux_") and not m.endswith(public))
    # one T5, one CLIP, one VAE decoder for every variant; a transformer per variant (dev's has guidance embeddings)
    assert flux_networks == sorted([*SHARED_MODELS.values(), *TRANSFORMER_MODELS.values(), "flux_vae_encoder"])
    assert len(ready) == len(set(ready)) and {*GENERATORS.values(), "flux_generate"} <= set(ready)
    shared_before = {m: model_stats(server, m)["inference_count"] for m in SHARED_MODELS.values()}
    steps_before = {v: model_stats(server, TRANSFORMER_MODELS[v])["inference_count"] for v in GENERATORS}

    size = dict(width=320, height=256, num_inference_steps=2, output_type="np")
    references = {"schnell": schnell_pipeline(PROMPT, guidance_scale=0.0, max_sequence_length=256,
                                              generator=torch.Generator().manual_seed(11), **size),
                  "dev": dev_pipeline(PROMPT, guidance_scale=3.5, max_sequence_length=512,
                                      generator=torch.Generator().manual_seed(11), **size)}
    for variant, model in GENERATORS.items():
        served = generate(grpcclient, server, seed=11, model=model, WIDTH=int32(320), HEIGHT=int32(256),
                          STEPS=int32(2))
        assert max_difference(served, diffusers_uint8(references[variant].images)) <= GENERATE_TOLERANCE, variant
    assert max_difference(diffusers_uint8(references["schnell"].images), diffusers_uint8(references["dev"].images)) > 10

    # both requests went through the same shared models, each through its own transformer (2 steps each)
    assert all(model_stats(server, m)["inference_count"] == shared_before[m] + 2 for m in SHARED_MODELS.values())
    assert all(model_stats(server, TRANSFORMER_MODELS[v])["inference_count"] == steps_before[v] + 2
               for v in GENERATORS)


def test_flux_generate_is_the_default_variant(server):
    extra = dict(WIDTH=int32(256), HEIGHT=int32(256), STEPS=int32(1))
    default = generate(httpclient, server, seed=2, **extra)
    assert np.array_equal(default, generate(httpclient, server, seed=2, model=GENERATORS["schnell"], **extra))
    assert max_difference(default, generate(httpclient, server, seed=2, model=GENERATORS["dev"], **extra)) > 0


# -- FLUX.1 Fill ------------------------------------------------------------------------------------------------------
def fill(module, server, photo, mask, model="flux_fill_inpaint", seed=3, **extra):
    image, region = call(module, url(server, module), model, ["IMAGE", "MASK"], IMAGE=as_bytes(png(photo)),
                         MASK=as_bytes(png(mask)), SEED=int64(seed), **extra)
    return decode(image[0]), decode(region[0])


@MODULES
def test_fill_matches_diffusers(server, fill_reference, coffee, module):
    """With COMPOSITE off (diffusers resizes its whole output back); balanced: a 512x512 area, 12 steps."""
    photo, mask = coffee
    image, region = fill(module, server, photo, mask, COMPOSITE=boolean(False))
    width, height = fill_size(photo.shape[1], photo.shape[0], 512 * 512)
    expected = fill_reference(prompt="", image=Image.fromarray(photo), mask_image=Image.fromarray(mask), width=width,
                              height=height, num_inference_steps=12, guidance_scale=30.0, max_sequence_length=512,
                              generator=torch.Generator().manual_seed(3)).images[0]
    expected = np.asarray(expected.resize((photo.shape[1], photo.shape[0]), Image.BICUBIC))
    assert (width, height) == (624, 416)
    assert max_difference(image, expected) <= FILL_TOLERANCE
    # the binarised mask that was filled, back at the input size: the mask up to its resampled edge
    assert set(np.unique(region)) == {0, 255}
    assert np.mean((region > 0) != (mask >= 128)) < 0.01


def test_objectclear_inpaint_hands_flux_fill_to_the_fill_model(server, coffee):
    photo, mask = coffee
    direct = fill(httpclient, server, photo, mask, STEPS=int32(2))
    engine = fill(grpcclient, server, photo, mask, model="objectclear_inpaint", ENGINE=as_bytes("flux_fill"),
                  STEPS=int32(2))
    objectclear = fill(httpclient, server, photo, mask, model="objectclear_inpaint", STEPS=int32(2))
    assert all(np.array_equal(a, b) for a, b in zip(direct, engine))
    assert max_difference(objectclear[0], direct[0]) > 0


def test_remove_object_with_flux_fill_is_segmentation_then_fill(server, coffee):
    photo = coffee[0]
    image, region = call(httpclient, server.http_url, "remove_object", ["IMAGE", "MASK"], IMAGE=as_bytes(png(photo)),
                         PROMPT=as_bytes("a cup"), SEED=int64(3), ENGINE=as_bytes("flux_fill"))
    (masks,) = call(httpclient, server.http_url, "sam3_segment", ["MASKS"], IMAGE=as_bytes(png(photo)),
                    PROMPT=as_bytes("a cup"))
    assert len(masks) > 0
    union = (masks.any(axis=0) * 255).astype(np.uint8)
    expected = fill(httpclient, server, photo, union)
    assert np.array_equal(decode(image[0]), expected[0]) and np.array_equal(decode(region[0]), expected[1])


# -- bad input --------------------------------------------------------------------------------------------------------
@MODULES
@pytest.mark.parametrize("model, case, input_name", [
    ("flux_generate", "empty prompt", "PROMPT"),
    ("flux_generate", "prompt that is not UTF-8", "PROMPT"),
    ("flux_generate", "width over the limit", "WIDTH"),
    ("flux_generate", "zero steps", "STEPS"),
    ("flux_fill_inpaint", "undecodable mask", "MASK"),
    ("objectclear_inpaint", "unknown engine", "ENGINE"),
    ("objectclear_inpaint", "zero steps for the fill engine", "STEPS"),
])
def test_bad_input_is_invalid_arg_naming_the_input(server, coffee, module, model, case, input_name):
    photo, mask = coffee
    tensors = ({"PROMPT": as_bytes(PROMPT)} if model == "flux_generate"
               else {"IMAGE": as_bytes(png(photo)), "MASK": as_bytes(png(mask))})
    tensors.update({
        "empty prompt": {"PROMPT": as_bytes("   ")},
        "prompt that is not UTF-8": {"PROMPT": as_bytes(b"\xff\xfe\xfa")},
        "width over the limit": {"WIDTH": int32(4096)},
        "zero steps": {"STEPS": int32(0)},
        "undecodable mask": {"MASK": as_bytes(b"not a png")},
        "unknown engine": {"ENGINE": as_bytes("dall-e")},
        "zero steps for the fill engine": {"ENGINE": as_bytes("flux_fill"), "STEPS": int32(0)},
    }[case])
    with pytest.raises(InferenceServerException) as error:
        call(module, url(server, module), model, [], **tensors)
    assert INVALID[module] in str(error.value.status()) and input_name in error.value.message()
    with httpclient.InferenceServerClient(server.http_url) as client:
        assert client.is_server_ready()
