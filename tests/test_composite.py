"""pipelines/composite.py and EXIF orientation in pipelines/imaging.py, without a server: the result goes back into
the untouched input only through the feathered region, COMPOSITE off is the plain resize of before, and images are
read the way a viewer shows them."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from pipelines.composite import restore_size
from pipelines.imaging import InputError, check_same_size, decode_image

# README: the feather reaches at most 16 processing pixels beyond the region (10 px of dilation, then the blur's 4 px
# in each axis: 10 + 4 * sqrt(2)); the bilinear upscale of the weights reaches one processing pixel further.
FEATHER_REACH = 16 + 1


def inputs(size=(600, 400), small=(96, 64), seed=0):
    """A real photo at `size`, a noisy 'result' at the processing size `small`, and a blob region there."""
    original = np.asarray(Image.fromarray(skimage.data.chelsea()).resize(size, Image.BICUBIC))
    result = np.random.default_rng(seed).integers(0, 256, (small[1], small[0], 3), dtype=np.uint8)
    region = torch.zeros(small[1], small[0])
    region[20:40, 30:60] = 1
    region[45, 10] = 1  # a lone pixel: the feather around it alone
    return original, result, region


def distance_from(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance in pixels of every pixel to the nearest pixel of `mask`."""
    return cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def test_composite_off_is_the_resize_of_the_whole_result():
    original, result, region = inputs()
    image, mask = restore_size(original, result, region, composite=False)
    assert np.array_equal(image, np.asarray(Image.fromarray(result).resize((600, 400), Image.BICUBIC)))
    expected_mask = np.asarray(Image.fromarray((region.numpy() * 255).astype(np.uint8)).resize((600, 400),
                                                                                                Image.NEAREST))
    assert np.array_equal(mask, expected_mask)


@pytest.mark.parametrize("size, small", [((600, 400), (96, 64)), ((1200, 800), (288, 192)), ((90, 70), (96, 64))])
def test_composite_is_the_input_outside_the_feathered_region_and_the_result_on_it(size, small):
    original, result, region = inputs(size, small)
    image, mask = restore_size(original, result, region, composite=True)
    upscaled, same_mask = restore_size(original, result, region, composite=False)
    assert np.array_equal(mask, same_mask)
    scale = max(size[0] / small[0], size[1] / small[1])
    distance = distance_from(mask)
    outside = distance > FEATHER_REACH * scale
    assert np.array_equal(image[outside], original[outside])
    assert np.abs(image[mask > 0].astype(int) - upscaled[mask > 0]).max() <= 1
    # in between, a blend: each channel between the input's and the result's
    low, high = np.minimum(original, upscaled).astype(int), np.maximum(original, upscaled).astype(int)
    assert ((image >= low - 1) & (image <= high + 1)).all()
    # not vacuous: the band is a real blend, and the resized result differs from the input outside it
    band = ~outside & (mask == 0)
    assert 0 < (image[band] != original[band]).mean() < 1
    assert (upscaled[outside] != original[outside]).mean() > 0.5


def test_an_empty_region_gives_the_input_back():
    original, result, region = inputs()
    image, mask = restore_size(original, result, torch.zeros_like(region), composite=True)
    assert np.array_equal(image, original) and not mask.any()


# -- EXIF orientation ---------------------------------------------------------------------------------------------
def exif_jpeg(stored: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


# EXIF orientation -> how a viewer turns the stored pixels, in numpy (independent of PIL's exif_transpose)
DISPLAYED = {1: lambda a: a, 3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1), 8: lambda a: np.rot90(a, 1),
             2: lambda a: a[:, ::-1], 5: lambda a: np.rot90(a, 1)[::-1]}


@pytest.mark.parametrize("orientation", sorted(DISPLAYED))
def test_images_are_decoded_as_displayed(orientation):
    stored = np.asarray(Image.fromarray(skimage.data.coffee()).resize((150, 100)))
    data = exif_jpeg(stored, orientation)
    raw = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # the stored pixels, not turned
    decoded = decode_image(data, "IMAGE")
    assert np.array_equal(decoded, DISPLAYED[orientation](raw))
    mask = decode_image(exif_jpeg(np.full((100, 150, 3), 255, np.uint8), orientation), "MASK", mode="L")
    assert mask.shape == decoded.shape[:2]  # a mask with the same tag is turned the same way


def test_a_mask_of_the_stored_orientation_is_refused_with_a_hint():
    image = decode_image(exif_jpeg(np.zeros((100, 150, 3), np.uint8), 6), "IMAGE")  # displayed 100 wide, 150 high
    with pytest.raises(InputError, match=r"input 'MASK': size 150x100 differs from the image's 100x150 as displayed"):
        check_same_size(image, np.zeros((100, 150), np.uint8))
