"""objectclear_inpaint and remove_object served by a real tritonserver, per preset, over HTTP and gRPC with the
real tritonclient; objectclear_inpaint compared with the independent PyTorch reference (tests/reference) on the
same tiny weights and seed (with COMPOSITE off: the reference resizes its whole output back), remove_object with its
two public halves chained by the client; FLUX in every preset."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image

from conftest import as_bytes, call, decode, diffusers_uint8, make_room, max_difference, png, start_server
from pipelines.repository import needed
from reference.objectclear_reference import objectclear_reference

pytestmark = pytest.mark.server

PRESETS = {  # PRODUCT.md: steps, short side, guidance
    "quality": (20, 512, 2.5),
    "balanced": (8, 384, 2.0),
    "ultra_fast": (4, 256, 1.5),
    "low_memory": (6, 320, 1.8),
}
SEED = 1234
# Measured: the served image differs from the reference by at most 1 grey level (ONNX Runtime vs PyTorch ~1e-6 in
# the networks, moving a handful of pixels across a rounding boundary); the removed-region mask is identical.
PIXEL_TOLERANCE = 1
# what the tests call, with the models those call (flux_generate: schnell; the Fill engine: flux_fill_inpaint)
MODELS = needed("objectclear_inpaint", "remove_object", "sam3_segment", "flux_generate")


@pytest.fixture(scope="module", params=list(PRESETS))
def served(request, model_repository):
    make_room()
    server = start_server(model_repository, request.param, MODELS)
    yield request.param, server
    server.stop()


def infer(module, url: str, image: bytes, mask: bytes, seed: int) -> tuple[np.ndarray, np.ndarray]:
    inputs = []
    for name, value, datatype in (("IMAGE", np.array([image], dtype=object), "BYTES"),
                                  ("MASK", np.array([mask], dtype=object), "BYTES"),
                                  ("SEED", np.array([seed], dtype=np.int64), "INT64"),
                                  ("COMPOSITE", np.array([False]), "BOOL")):
        tensor = module.InferInput(name, [1], datatype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    outputs = [module.InferRequestedOutput("IMAGE"), module.InferRequestedOutput("MASK")]
    with module.InferenceServerClient(url) as client:  # an open connection would hold up the server's exit
        result = client.infer("objectclear_inpaint", inputs, outputs=outputs)
    return decode(result.as_numpy("IMAGE")[0]), decode(result.as_numpy("MASK")[0])


@pytest.fixture(scope="module")
def http_result(served, coffee):
    preset, server = served
    photo, mask = coffee
    return infer(httpclient, server.http_url, png(photo), png(mask), SEED)


def test_http_returns_png_at_input_resolution(http_result, coffee):
    image, region = http_result
    assert image.shape == coffee[0].shape and image.dtype == np.uint8
    assert region.shape == coffee[1].shape
    assert set(np.unique(region)) <= {0, 255}


def test_grpc_gives_the_same_image_as_http(served, coffee, http_result):
    _, server = served
    image, region = infer(grpcclient, server.grpc_url, png(coffee[0]), png(coffee[1]), SEED)
    assert np.array_equal(image, http_result[0]) and np.array_equal(region, http_result[1])


def test_matches_independent_pytorch_reference(served, coffee, objectclear_checkpoint, http_result):
    preset, _ = served
    steps, short_side, guidance = PRESETS[preset]
    want_image, want_mask = objectclear_reference(objectclear_checkpoint, Image.fromarray(coffee[0]),
                                                  Image.fromarray(coffee[1]), SEED, steps, guidance, short_side)
    image, region = http_result
    diff = np.abs(image.astype(int) - np.asarray(want_image).astype(int))
    print(f"{preset}: max pixel diff {diff.max()}, mean {diff.mean():.2e}, mask pixels differing "
          f"{int((region != np.asarray(want_mask)).sum())}")
    assert diff.max() <= PIXEL_TOLERANCE
    assert np.array_equal(region, np.asarray(want_mask))
    # the comparison is not vacuous: the pipeline changed the photo, and only part of it was replaced
    assert np.abs(image.astype(int) - coffee[0]).mean() > 1
    assert 0 < (region > 0).mean() < 1


def test_seed_controls_the_noise(served, coffee, http_result):
    _, server = served
    again = infer(httpclient, server.http_url, png(coffee[0]), png(coffee[1]), SEED)
    other = infer(httpclient, server.http_url, png(coffee[0]), png(coffee[1]), SEED + 1)
    assert np.array_equal(again[0], http_result[0])
    assert not np.array_equal(other[0], http_result[0])


# -- remove_object: SAM 3 -> union of the instance masks -> ObjectClear, chained inside Triton ---------------------
PROMPT = "a cup"


def remove(module, url, photo, prompt=PROMPT, **extra):
    image, mask = call(module, url, "remove_object", ["IMAGE", "MASK"],
                       IMAGE=(np.array([png(photo)], dtype=object), "BYTES"),
                       PROMPT=(np.array([prompt.encode()], dtype=object), "BYTES"),
                       SEED=(np.array([SEED], dtype=np.int64), "INT64"), **extra)
    return decode(image[0]), decode(mask[0])


@pytest.fixture(scope="module")
def removed(served, coffee):
    _, server = served
    return remove(httpclient, server.http_url, coffee[0])


def test_remove_object_over_http_and_grpc(served, coffee, removed):
    _, server = served
    image, region = removed
    assert image.shape == coffee[0].shape and region.shape == coffee[0].shape[:2]
    assert set(np.unique(region)) <= {0, 255} and region.any()
    assert np.abs(image.astype(int) - coffee[0]).mean() > 1
    grpc_image, grpc_region = remove(grpcclient, server.grpc_url, coffee[0])
    assert np.array_equal(grpc_image, image) and np.array_equal(grpc_region, region)


def test_remove_object_is_segmentation_then_inpainting(served, coffee, removed):
    """The chained model gives exactly what its two public halves give when the client chains them itself."""
    _, server = served
    photo = np.array([png(coffee[0])], dtype=object), "BYTES"
    (masks,) = call(httpclient, server.http_url, "sam3_segment", ["MASKS"], IMAGE=photo,
                    PROMPT=(np.array([PROMPT.encode()], dtype=object), "BYTES"))
    union = (masks.any(axis=0) * 255).astype(np.uint8)
    image, region = call(httpclient, server.http_url, "objectclear_inpaint", ["IMAGE", "MASK"], IMAGE=photo,
                         MASK=(np.array([png(union)], dtype=object), "BYTES"),
                         SEED=(np.array([SEED], dtype=np.int64), "INT64"))
    assert len(masks) > 0
    assert np.array_equal(decode(image[0]), removed[0]) and np.array_equal(decode(region[0]), removed[1])


def test_nothing_found_returns_the_input_without_denoising(served, coffee):
    _, server = served
    with httpclient.InferenceServerClient(server.http_url) as client:
        unet_runs = client.get_inference_statistics("objectclear_unet")["model_stats"][0]["execution_count"]
        image, region = remove(httpclient, server.http_url, coffee[0],
                               SCORE_THRESHOLD=(np.array([1.0], dtype=np.float32), "FP32"))
        after = client.get_inference_statistics("objectclear_unet")["model_stats"][0]["execution_count"]
    assert np.array_equal(image, coffee[0])
    assert not region.any()
    assert after == unet_runs


# -- FLUX.1 in every preset: quality renders 1024x1024, the others 512x512, 4 steps (PRODUCT.md) ----------------------
FLUX_SIDE = {"quality": 1024, "balanced": 512, "ultra_fast": 512, "low_memory": 512}


def test_flux_generate_renders_the_presets_size_as_diffusers_does(served, schnell_pipeline):
    preset, server = served
    side = FLUX_SIDE[preset]
    (image,) = call(httpclient, server.http_url, "flux_generate", ["IMAGE"], PROMPT=as_bytes("a photo of a dog"),
                    SEED=(np.array([SEED], dtype=np.int64), "INT64"))
    expected = diffusers_uint8(schnell_pipeline("a photo of a dog", width=side, height=side, num_inference_steps=4,
                                                guidance_scale=0.0, max_sequence_length=256, output_type="np",
                                                generator=torch.Generator().manual_seed(SEED)).images)
    assert max_difference(decode(image[0]), expected) <= 1  # test_flux_served.py's measured tolerance


def test_flux_fill_engine_keeps_the_input_size(served, coffee):
    _, server = served
    photo, mask = coffee
    image, region = call(grpcclient, server.grpc_url, "objectclear_inpaint", ["IMAGE", "MASK"],
                         IMAGE=as_bytes(png(photo)), MASK=as_bytes(png(mask)), ENGINE=as_bytes("flux_fill"),
                         STEPS=(np.array([1], dtype=np.int32), "INT32"))
    assert decode(image[0]).shape == photo.shape and decode(region[0]).shape == mask.shape
