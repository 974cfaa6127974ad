"""Bad requests get INVALID_ARG naming the input, and the server keeps serving."""
from __future__ import annotations

import io

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from conftest import as_bytes, call, png

pytestmark = pytest.mark.server
INVALID = {httpclient: "400", grpcclient: "StatusCode.INVALID_ARGUMENT"}


def url(server, module):
    return server.http_url if module is httpclient else server.grpc_url


def small_inputs(size=(96, 64)):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[16:48, 32:64] = 255
    return image, mask


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
@pytest.mark.parametrize("case, input_name", [
    ("undecodable image", "IMAGE"),
    ("empty image", "IMAGE"),
    ("undecodable mask", "MASK"),
    ("mask of another size", "MASK"),
    ("seed of the wrong dtype", "SEED"),
    ("image with two elements", "IMAGE"),
    ("zero steps", "STEPS"),
    ("image over the size limit", "IMAGE"),
])
def test_bad_input_is_invalid_arg_naming_the_input(default_server, module, case, input_name):
    image, mask = small_inputs()
    tensors = {"IMAGE": as_bytes(png(image)), "MASK": as_bytes(png(mask))}
    if case == "undecodable image":
        tensors["IMAGE"] = as_bytes(b"definitely not an image")
    elif case == "empty image":
        tensors["IMAGE"] = as_bytes(b"")
    elif case == "undecodable mask":
        tensors["MASK"] = as_bytes(png(image)[:40])  # a truncated PNG
    elif case == "mask of another size":
        tensors["MASK"] = as_bytes(png(np.zeros((10, 10), np.uint8)))
    elif case == "seed of the wrong dtype":
        tensors["SEED"] = (np.array([1.5], dtype=np.float32), "FP32")
    elif case == "image with two elements":
        tensors["IMAGE"] = (np.array([png(image), png(image)], dtype=object), "BYTES")
    elif case == "zero steps":
        tensors["STEPS"] = (np.array([0], dtype=np.int32), "INT32")
    elif case == "image over the size limit":
        buffer = io.BytesIO()
        Image.new("L", (4100, 4100)).save(buffer, format="PNG")  # compresses to a few kB
        tensors["IMAGE"] = as_bytes(buffer.getvalue())
    with pytest.raises(InferenceServerException) as error:
        call(module, url(default_server, module), "objectclear_inpaint", [], **tensors)
    assert error.value.status() == INVALID[module], error.value
    assert input_name in str(error.value)


def test_server_keeps_serving_after_bad_requests(default_server):
    for _ in range(3):
        with pytest.raises(InferenceServerException):
            call(httpclient, default_server.http_url, "objectclear_inpaint", [], IMAGE=as_bytes(b"junk"),
                 MASK=as_bytes(b"junk"))
    image, mask = small_inputs()
    (result,) = call(httpclient, default_server.http_url, "objectclear_inpaint", ["IMAGE"], IMAGE=as_bytes(png(image)),
                     MASK=as_bytes(png(mask)), STEPS=(np.array([2], dtype=np.int32), "INT32"))
    out = np.asarray(Image.open(io.BytesIO(result[0])))
    assert out.shape == image.shape
    with httpclient.InferenceServerClient(default_server.http_url) as client:
        assert client.is_server_ready()


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
@pytest.mark.parametrize("case, input_name", [("empty prompt", "PROMPT"), ("undecodable image", "IMAGE"),
                                              ("prompt that is not UTF-8", "PROMPT"), ("zero steps", "STEPS")])
def test_remove_object_bad_input(default_server, module, case, input_name):
    image, _ = small_inputs()
    tensors = {"IMAGE": as_bytes(png(image)), "PROMPT": as_bytes(b"a cup")}
    if case == "empty prompt":
        tensors["PROMPT"] = as_bytes(b"")
    elif case == "undecodable image":
        tensors["IMAGE"] = as_bytes(b"\x89PNG but not really")
    elif case == "prompt that is not UTF-8":
        tensors["PROMPT"] = as_bytes(b"\xff\xfe\xfa")
    elif case == "zero steps":
        tensors["STEPS"] = (np.array([0], dtype=np.int32), "INT32")
    with pytest.raises(InferenceServerException) as error:
        call(module, url(default_server, module), "remove_object", [], **tensors)
    assert error.value.status() == INVALID[module], error.value
    assert input_name in str(error.value)
