"""Compositing into the input's resolution and EXIF orientation, served by the session's tritonserver: outside the
feathered region the output is the decoded input bit for bit (a real photo at 4000 px wide), on the region it is
the model's upscaled output, COMPOSITE false gives the old whole-picture resize (what the parity tests compare), and
a JPEG whose EXIF says "rotated" comes back the way a viewer shows it."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import skimage.data
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image, ImageDraw
from tritonclient.utils import InferenceServerException

from conftest import as_bytes, call, decode, png

pytestmark = pytest.mark.server
# README: the feather reaches at most 16 processing pixels beyond MASK, and the bilinear upscale of its weights one
# more; in input pixels, times the resize factor
FEATHER_REACH = 16 + 1


@pytest.fixture(scope="module")
def server(default_server):
    return default_server


def boolean(value):
    return np.array([value], dtype=bool), "BOOL"


def int32(value):
    return np.array([value], dtype=np.int32), "INT32"


def inpaint(module, server, model, image: bytes, mask: bytes | None = None, **extra):
    url = server.http_url if module is httpclient else server.grpc_url
    tensors = dict(IMAGE=as_bytes(image), SEED=(np.array([5], dtype=np.int64), "INT64"), **extra)
    if mask is not None:
        tensors["MASK"] = as_bytes(mask)
    result, region = call(module, url, model, ["IMAGE", "MASK"], **tensors)
    return decode(result[0]), decode(region[0])


def check_composite(photo, on, off, region, short_side_scale):
    """on (COMPOSITE default) against off (the upscaled model output) and the input photo."""
    assert on.shape == off.shape == photo.shape and region.shape == photo.shape[:2]
    distance = cv2.distanceTransform((region == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = distance > FEATHER_REACH * short_side_scale
    inside = region > 0
    assert np.array_equal(on[outside], photo[outside])  # bit for bit the decoded input
    assert np.abs(on[inside].astype(np.int16) - off[inside]).max() <= 1  # the upscaled model output
    low, high = np.minimum(photo, off).astype(np.int16), np.maximum(photo, off).astype(np.int16)
    assert ((on >= low - 1) & (on <= high + 1)).all()  # in between, a blend of the two
    # not vacuous: the model changed a region, and today's resize changes the picture outside it too
    assert 0 < inside.mean() < 0.5 and outside.mean() > 0.3
    assert np.abs(off[outside].astype(np.int16) - photo[outside]).mean() > 0.5
    return outside


def test_objectclear_keeps_a_4000px_photo_outside_the_feathered_region(server):
    photo = np.asarray(Image.fromarray(skimage.data.coffee()).resize((4000, 2667), Image.LANCZOS))
    mask = Image.new("L", (4000, 2667), 0)
    ImageDraw.Draw(mask).ellipse((870, 270, 3130, 2200), fill=255)  # the cup
    image, mask = png(photo), png(np.asarray(mask))
    on, region = inpaint(httpclient, server, "objectclear_inpaint", image, mask, STEPS=int32(2))
    off, region_off = inpaint(grpcclient, server, "objectclear_inpaint", image, mask, STEPS=int32(2),
                              COMPOSITE=boolean(False))
    assert np.array_equal(region, region_off)
    outside = check_composite(photo, on, off, region, 2667 / 384)  # balanced: short side 384
    print(f"4000x2667: {outside.mean():.1%} of the pixels are the input's own")


def test_flux_fill_and_remove_object_composite_too(server, coffee):
    photo, mask = coffee
    on, region = inpaint(grpcclient, server, "flux_fill_inpaint", png(photo), png(mask), STEPS=int32(2))
    off, _ = inpaint(grpcclient, server, "flux_fill_inpaint", png(photo), png(mask), STEPS=int32(2),
                     COMPOSITE=boolean(False))
    check_composite(photo, on, off, region, 1.0)  # 600x400 is processed at 624x416: no scale-up
    explicit, _ = inpaint(httpclient, server, "flux_fill_inpaint", png(photo), png(mask), STEPS=int32(2),
                          COMPOSITE=boolean(True))
    assert np.array_equal(explicit, on)  # on is the preset's default
    # remove_object: SAM 3's union through ObjectClear, and through Fill (COMPOSITE forwarded to it)
    for engine in ("objectclear", "flux_fill"):
        extra = dict(PROMPT=as_bytes("a cup"), ENGINE=as_bytes(engine), STEPS=int32(2))
        on, region = inpaint(httpclient, server, "remove_object", png(photo), **extra)
        off, _ = inpaint(httpclient, server, "remove_object", png(photo), COMPOSITE=boolean(False), **extra)
        assert region.any(), engine
        distance = cv2.distanceTransform((region == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        outside = distance > FEATHER_REACH * (400 / 384)
        assert np.array_equal(on[outside], photo[outside]) and not np.array_equal(off[outside], photo[outside])


# -- EXIF orientation -------------------------------------------------------------------------------------------------
def rotated_jpeg(upright: np.ndarray) -> bytes:
    """A JPEG as a camera held upright-in-portrait writes it: the pixels stored turned a quarter to the left, and
    EXIF Orientation 6 ("rotate 90 clockwise to display")."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(buffer, format="JPEG", quality=95,
                                                                     exif=exif.tobytes())
    return buffer.getvalue()


def test_an_exif_rotated_jpeg_comes_back_as_displayed(server, coffee):
    photo, mask = coffee  # 600x400 as the user sees it; a mask drawn on that view
    data = rotated_jpeg(photo)
    stored = np.asarray(Image.open(io.BytesIO(data)))
    assert stored.shape == (600, 400, 3)  # sideways in the file
    displayed = np.rot90(stored, -1)  # what a viewer shows (numpy, not PIL's exif_transpose)
    image, region = inpaint(httpclient, server, "objectclear_inpaint", data, png(mask), STEPS=int32(1))
    assert image.shape == (400, 600, 3) and region.shape == (400, 600)
    # the same request with the displayed pixels as a plain PNG gives the same result, bit for bit
    same, same_region = inpaint(httpclient, server, "objectclear_inpaint", png(np.ascontiguousarray(displayed)),
                                png(mask), STEPS=int32(1))
    assert np.array_equal(image, same) and np.array_equal(region, same_region)
    outside = cv2.distanceTransform((region == 0).astype(np.uint8), cv2.DIST_L2, 5) > FEATHER_REACH * 400 / 384
    assert np.array_equal(image[outside], displayed[outside])
    # SAM 3 sees it upright too: masks in the displayed frame
    (masks,) = call(httpclient, server.http_url, "sam3_segment", ["MASKS"], IMAGE=as_bytes(data),
                    PROMPT=as_bytes("a cup"))
    assert masks.shape[1:] == (400, 600)


def test_a_mask_of_the_stored_orientation_is_invalid_arg_naming_mask(server, coffee):
    photo, mask = coffee
    with pytest.raises(InferenceServerException) as error:
        inpaint(grpcclient, server, "objectclear_inpaint", rotated_jpeg(photo), png(np.rot90(mask, 1).copy()))
    assert "INVALID_ARGUMENT" in str(error.value.status())
    assert "'MASK'" in error.value.message() and "as displayed" in error.value.message()
