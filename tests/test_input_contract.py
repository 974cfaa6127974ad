"""The public models' input contract (README, "Inputs"), over HTTP and gRPC on the session's default server: long
prompts are served, truncated to each model's text context as the reference pipelines truncate them; prompts over
the byte limit, NaN, infinite and out-of-range numbers are refused with INVALID_ARG naming the input, also when the
error comes back across a BLS hop."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import as_bytes, call, decode, diffusers_uint8, max_difference, png
from reference.sam3_reference import load_sam3, sam3_reference
from test_flux_served import fp32, int32, url
from test_sam3_served import BOX_TOLERANCE_PX, SCORE_TOLERANCE

pytestmark = pytest.mark.server
MODULES = pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
INVALID = {httpclient: "400", grpcclient: "StatusCode.INVALID_ARGUMENT"}
# The issue's prompt: 23 words, 85 tokens of the tiny CLIP vocabulary (SAM 3's text encoder has 32 positions)
LONG_PROMPT = ("the white ceramic cup with the saucer and the silver spoon on the wooden table near the window in the "
               "morning light please")
# Past CLIP's 77 tokens and T5's 256 (FLUX.1-schnell) too
VERY_LONG_PROMPT = " ".join([LONG_PROMPT] * 12)
MAX_TEXT_BYTES = 4096  # pipelines/triton_io.py; README
PROMPT_MODELS = ["sam3_segment", "remove_object", "flux_generate", "flux_fill_inpaint"]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return skimage.data.chelsea()[::2, ::2].copy()  # 226x150: small, so the served cases stay cheap


def cheapest_request(model: str, photo: np.ndarray, prompt: str) -> dict:
    """Inputs for one valid request to `model` with this prompt, at its fewest steps and smallest size."""
    if model == "flux_generate":
        return dict(PROMPT=as_bytes(prompt), WIDTH=int32(256), HEIGHT=int32(256), STEPS=int32(1))
    image = as_bytes(png(photo))
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[40:110, 60:170] = 255
    return {
        "sam3_segment": dict(IMAGE=image, PROMPT=as_bytes(prompt)),
        "remove_object": dict(IMAGE=image, PROMPT=as_bytes(prompt), STEPS=int32(1), SCORE_THRESHOLD=fp32(0.0)),
        "flux_fill_inpaint": dict(IMAGE=image, MASK=as_bytes(png(mask)), PROMPT=as_bytes(prompt), STEPS=int32(1)),
    }[model]


def refused(module, server, model: str, tensors: dict) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as error:
        call(module, url(server, module), model, [], **tensors)
    assert INVALID[module] in str(error.value.status()), error.value
    return error.value


# -- long prompts -----------------------------------------------------------------------------------------------------
@MODULES
@pytest.mark.parametrize("model", PROMPT_MODELS)
def test_long_prompt_is_served(default_server, photo, module, model):
    outputs = {"sam3_segment": ["SCORES"], "flux_generate": ["IMAGE"]}.get(model, ["IMAGE", "MASK"])
    prompt = LONG_PROMPT if model in ("sam3_segment", "remove_object") else VERY_LONG_PROMPT
    (first, *_) = call(module, url(default_server, module), model, outputs, **cheapest_request(model, photo, prompt))
    if model != "sam3_segment":
        assert decode(first[0]).ndim == 3


@MODULES
def test_long_sam3_prompt_is_truncated_as_meta_does(default_server, sam3_checkpoint, module):
    """The served result equals transformers' Sam3Model fed Meta's truncation of the prompt (its first 31 tokens and
    the end token), not the processor's untruncated 85 tokens, which the model cannot take either."""
    photo = skimage.data.chelsea()
    (masks, boxes, scores) = call(module, url(default_server, module), "sam3_segment", ["MASKS", "BOXES", "SCORES"],
                                  IMAGE=as_bytes(png(photo)), PROMPT=as_bytes(LONG_PROMPT),
                                  SCORE_THRESHOLD=fp32(0.0))
    want = sam3_reference(load_sam3(sam3_checkpoint), photo, LONG_PROMPT, threshold=0.0)
    assert len(scores) == len(want["SCORES"]) > 0
    np.testing.assert_allclose(scores, want["SCORES"], atol=SCORE_TOLERANCE)
    np.testing.assert_allclose(boxes, want["BOXES"], atol=BOX_TOLERANCE_PX)
    # a prompt with the same first 30 tokens and a different tail is the same query once truncated
    (same,) = call(module, url(default_server, module), "sam3_segment", ["SCORES"], IMAGE=as_bytes(png(photo)),
                   PROMPT=as_bytes(LONG_PROMPT + " and then some more words"), SCORE_THRESHOLD=fp32(0.0))
    np.testing.assert_array_equal(same, scores)


def test_long_flux_prompt_is_truncated_as_diffusers_does(default_server, schnell_pipeline):
    """CLIP at 77 tokens and T5 at 256 (schnell), as FluxPipeline truncates them."""
    (image,) = call(httpclient, default_server.http_url, "flux_generate", ["IMAGE"],
                    **cheapest_request("flux_generate", None, VERY_LONG_PROMPT))
    expected = diffusers_uint8(schnell_pipeline(VERY_LONG_PROMPT, width=256, height=256, num_inference_steps=1,
                                                guidance_scale=0.0, max_sequence_length=256, output_type="np",
                                                generator=torch.Generator().manual_seed(0)).images)
    assert max_difference(decode(image[0]), expected) <= 1  # test_flux_served.GENERATE_TOLERANCE


@MODULES
@pytest.mark.parametrize("model", PROMPT_MODELS)
def test_prompt_over_the_byte_limit_is_refused(default_server, photo, module, model):
    tensors = cheapest_request(model, photo, "x" * (MAX_TEXT_BYTES + 1))
    assert "PROMPT" in refused(module, default_server, model, tensors).message()


# -- numbers ----------------------------------------------------------------------------------------------------------
BAD_NUMBERS = [
    ("sam3_segment", "SCORE_THRESHOLD", fp32(np.nan)),
    ("sam3_segment", "SCORE_THRESHOLD", fp32(np.inf)),
    ("sam3_segment", "SCORE_THRESHOLD", fp32(1.5)),
    ("sam3_segment", "BOXES", (np.array([[10, 10, 400, 80]], np.float32), "FP32")),  # past the 226 px width
    ("remove_object", "SCORE_THRESHOLD", fp32(np.nan)),
    ("remove_object", "GUIDANCE_SCALE", fp32(np.nan)),
    ("objectclear_inpaint", "GUIDANCE_SCALE", fp32(np.inf)),
    ("objectclear_inpaint", "GUIDANCE_SCALE", fp32(-1.0)),
    ("flux_generate", "GUIDANCE_SCALE", fp32(np.nan)),
    ("flux_fill_inpaint", "GUIDANCE_SCALE", fp32(-np.inf)),
]


@MODULES
@pytest.mark.parametrize("model, name, value", BAD_NUMBERS,
                         ids=[f"{m}-{n}-{v[0].ravel()[-1]}" for m, n, v in BAD_NUMBERS])
def test_nan_infinite_and_out_of_range_numbers_are_refused(default_server, photo, module, model, name, value):
    if model == "objectclear_inpaint":
        tensors = cheapest_request("flux_fill_inpaint", photo, "")
        del tensors["PROMPT"]
    else:
        tensors = cheapest_request(model, photo, "a cat")
    tensors[name] = value
    assert f"'{name}'" in refused(module, default_server, model, tensors).message()


# -- across a BLS hop -------------------------------------------------------------------------------------------------
@MODULES
@pytest.mark.parametrize("model", ["objectclear_inpaint", "remove_object"])
def test_bad_input_found_by_the_fill_engine_keeps_its_status_and_name(default_server, photo, module, model):
    """ENGINE "flux_fill" hands the request to flux_fill_inpaint through BLS; its refusal comes back as this
    request's INVALID_ARG naming the input (remove_object: after SAM 3 found something, threshold 0)."""
    tensors = cheapest_request("flux_fill_inpaint" if model == "objectclear_inpaint" else model, photo, "a cat")
    if model == "objectclear_inpaint":
        del tensors["PROMPT"]
    tensors.update(ENGINE=as_bytes("flux_fill"), GUIDANCE_SCALE=fp32(200.0))  # Fill allows 0..100; ObjectClear 0..30
    message = refused(module, default_server, model, tensors).message()
    assert "'GUIDANCE_SCALE'" in message and "100" in message, message
