"""sam3_segment served by a real tritonserver over HTTP and gRPC, against transformers' own Sam3Model +
Sam3Processor (monolithic forward, no ONNX, no Triton) on the same tiny weights and a real photo."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import png
from reference.sam3_reference import load_sam3, sam3_reference

pytestmark = pytest.mark.server
INVALID = {httpclient: "400", grpcclient: "StatusCode.INVALID_ARGUMENT"}
# Measured: scores and boxes agree to ~1e-6 (ONNX Runtime vs PyTorch); a mask pixel flips only where the resized
# mask probability sits within ~1e-6 of the 0.5 threshold.
SCORE_TOLERANCE, BOX_TOLERANCE_PX, MASK_PIXEL_TOLERANCE = 1e-4, 1e-2, 1e-4


def segment(module, url, image: np.ndarray, prompt: str, boxes=None, score_threshold=None):
    inputs = []
    tensors = {"IMAGE": (np.array([png(image)], dtype=object), "BYTES"),
               "PROMPT": (np.array([prompt.encode()], dtype=object), "BYTES")}
    if boxes is not None:
        tensors["BOXES"] = (np.asarray(boxes, dtype=np.float32), "FP32")
    if score_threshold is not None:
        tensors["SCORE_THRESHOLD"] = (np.array([score_threshold], dtype=np.float32), "FP32")
    for name, (value, datatype) in tensors.items():
        tensor = module.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    with module.InferenceServerClient(url) as client:
        result = client.infer("sam3_segment", inputs)
    return {name: result.as_numpy(name) for name in ("MASKS", "BOXES", "SCORES")}


@pytest.fixture(scope="module")
def transformers_sam3(sam3_checkpoint):
    return load_sam3(sam3_checkpoint)


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
@pytest.mark.parametrize("prompt, boxes", [("a cat", None), ("person", None), ("a cat", [[40, 30, 300, 280]]),
                                           ("", [[40, 30, 300, 280], [300, 100, 440, 290]])],
                         ids=["cat", "person", "cat+box", "boxes-only"])
def test_matches_transformers(default_server, transformers_sam3, module, prompt, boxes):
    photo = skimage.data.chelsea()  # 451x300
    url = default_server.http_url if module is httpclient else default_server.grpc_url
    got = segment(module, url, photo, prompt, boxes)
    want = sam3_reference(transformers_sam3, photo, prompt or None, boxes)
    assert len(want["SCORES"]) > 0  # the tiny model finds something, so the comparison is not vacuous
    assert got["MASKS"].shape == want["MASKS"].shape == (len(want["SCORES"]), 300, 451)
    assert got["MASKS"].dtype == np.uint8 and set(np.unique(got["MASKS"])) <= {0, 1}
    np.testing.assert_allclose(got["SCORES"], want["SCORES"], atol=SCORE_TOLERANCE)
    np.testing.assert_allclose(got["BOXES"], want["BOXES"], atol=BOX_TOLERANCE_PX)
    differing = int((got["MASKS"] != want["MASKS"]).sum())
    print(f"{prompt!r} boxes={boxes}: {len(want['SCORES'])} instances, score diff "
          f"{np.abs(got['SCORES'] - want['SCORES']).max():.1e}, mask pixels differing {differing} of {want['MASKS'].size}")
    assert differing <= MASK_PIXEL_TOLERANCE * want["MASKS"].size


def test_threshold_filters_instances(default_server):
    photo = skimage.data.chelsea()
    every = segment(httpclient, default_server.http_url, photo, "a cat", score_threshold=0.0)
    none = segment(httpclient, default_server.http_url, photo, "a cat", score_threshold=1.0)
    assert len(every["SCORES"]) == 8  # the tiny model's number of queries
    assert none["MASKS"].shape == (0, 300, 451) and none["BOXES"].shape == (0, 4) and none["SCORES"].shape == (0,)


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
@pytest.mark.parametrize("case, input_name", [
    ("empty prompt", "PROMPT"), ("undecodable image", "IMAGE"), ("boxes of the wrong shape", "BOXES"),
    ("inverted box", "BOXES")])
def test_bad_input_is_invalid_arg(default_server, module, case, input_name):
    photo = skimage.data.chelsea()
    url = default_server.http_url if module is httpclient else default_server.grpc_url
    kwargs = {"image": photo, "prompt": "a cat"}
    if case == "empty prompt":
        kwargs["prompt"] = "  "
    elif case == "boxes of the wrong shape":
        kwargs["boxes"] = [[1, 2, 3]]
    elif case == "inverted box":
        kwargs["boxes"] = [[300, 30, 40, 280]]
    with pytest.raises(InferenceServerException) as error:
        if case == "undecodable image":
            with module.InferenceServerClient(url) as client:
                inputs = []
                for name, value in (("IMAGE", b"not an image"), ("PROMPT", b"a cat")):
                    tensor = module.InferInput(name, [1], "BYTES")
                    tensor.set_data_from_numpy(np.array([value], dtype=object))
                    inputs.append(tensor)
                client.infer("sam3_segment", inputs)
        else:
            segment(module, url, **kwargs)
    assert error.value.status() == INVALID[module], error.value
    assert input_name in str(error.value)
