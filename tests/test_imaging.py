"""pipelines/imaging.py: the ObjectClear resize rule, image decoding with named input errors, PNG encoding."""
from __future__ import annotations

import io
import zlib
import struct

import numpy as np
import pytest
import skimage.data
from PIL import Image

from pipelines.imaging import InputError, decode_image, encode_png, resize, short_side_size
from reference.objectclear_reference import resized_size as reference_resized_size


# ----------------------------------------------------------------------------------------------------------------
# short_side_size: objectclear.md 1.3 (resize_by_short_side). Expected values worked out by hand.
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("width, height, short_side, expected", [
    # short side 300 < 384: no upscaling, both sides only rounded up to 16 (451 -> 464, 300 -> 304)
    (451, 300, 384, (464, 304)),
    (300, 451, 384, (304, 464)),
    # 1024x768 at 512: 1024 * 512 / 768 = 682.67, truncated to 682, rounded up to 688
    (1024, 768, 512, (688, 512)),
    (768, 1024, 512, (512, 688)),  # portrait
    # chelsea at 256: 451 * 256 / 300 = 384.85 -> 384, already a multiple of 16
    (451, 300, 256, (384, 256)),
    # 1000x600 at 512: 853.33 -> 853 -> 864
    (1000, 600, 512, (864, 512)),
    # exact multiples stay as they are
    (512, 512, 512, (512, 512)),
    (1024, 512, 512, (1024, 512)),
    (512, 1024, 512, (512, 1024)),
    (3000, 2000, 512, (768, 512)),  # 768 exactly
    (1000, 1000, 512, (512, 512)),  # square, downscaled
    # short side exactly at the target: "scaled" by 1, long side only rounded up (700 -> 704)
    (512, 700, 512, (512, 704)),
    (700, 512, 512, (704, 512)),
    # smaller than the target: never upscaled
    (200, 120, 256, (208, 128)),
    (500, 511, 512, (512, 512)),  # 500 -> 512, 511 -> 512 by rounding, not by scaling
    (10, 7, 512, (16, 16)),
    (1, 1, 512, (16, 16)),
    (16, 16, 512, (16, 16)),
    (17, 33, 512, (32, 48)),
    # a very elongated image: 4000 * 512 / 520 = 3938.46 -> 3938 -> 3952
    (4000, 520, 512, (3952, 512)),
])
def test_short_side_size_hand_computed(width, height, short_side, expected):
    assert short_side_size(width, height, short_side) == expected


def _spec_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """objectclear.md 1.3 in exact integer arithmetic: long side = floor(long * short_side / short)."""
    ceil16 = lambda v: -(-v // 16) * 16  # noqa: E731
    if min(width, height) < short_side:
        return ceil16(width), ceil16(height)
    if width < height:
        return ceil16(short_side), ceil16(height * short_side // width)
    return ceil16(width * short_side // height), ceil16(short_side)


def test_short_side_size_over_a_grid():
    rng = np.random.default_rng(0)
    sizes = [(int(w), int(h)) for w, h in rng.integers(1, 5000, (400, 2))]
    sizes += [(w, h) for w in range(500, 530) for h in range(505, 520)]  # around the 512 boundary
    for short_side in (256, 384, 512):
        for w, h in sizes:
            got = short_side_size(w, h, short_side)
            assert got == _spec_size(w, h, short_side) == reference_resized_size((w, h), short_side), (w, h)
            assert got[0] % 16 == 0 and got[1] % 16 == 0


# ----------------------------------------------------------------------------------------------------------------
# decode_image
# ----------------------------------------------------------------------------------------------------------------

def encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()  # 512x512 RGB


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return skimage.data.chelsea()  # 300x451 RGB: not square, odd width


def assert_input_error(call, name: str, *fragments: str) -> InputError:
    with pytest.raises(InputError) as info:
        call()
    assert isinstance(info.value, ValueError)  # served as INVALID_ARG
    assert info.value.input_name == name
    message = str(info.value)
    assert name in message, message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def test_empty_bytes_is_an_input_error():
    assert_input_error(lambda: decode_image(b"", "IMAGE"), "IMAGE", "empty")


@pytest.mark.parametrize("data", [b"not an image at all", bytes(range(256)) * 4, b"\x89PNG\r\n\x1a\n"])
def test_garbage_bytes_is_an_input_error(data):
    assert_input_error(lambda: decode_image(data, "MASK", mode="L"), "MASK")


def test_truncated_png_is_an_input_error(chelsea):
    data = encoded(chelsea, "PNG")
    for cut in (60, 1000, len(data) // 2, len(data) - 2000):
        assert_input_error(lambda: decode_image(data[:cut], "IMAGE"), "IMAGE", "truncated")
    # losing only the trailing checksums/IEND leaves every pixel intact: decoding it is fine, but never to garbage
    for cut in (len(data) - 20, len(data) - 5):
        try:
            np.testing.assert_array_equal(decode_image(data[:cut], "IMAGE"), chelsea)
        except InputError as error:
            assert error.input_name == "IMAGE"


def test_truncated_jpeg_is_an_input_error(chelsea):
    data = encoded(chelsea, "JPEG", quality=90)
    assert_input_error(lambda: decode_image(data[:200], "IMAGE"), "IMAGE")


def test_image_over_max_pixels_is_an_input_error(chelsea):
    data = encoded(chelsea, "PNG")
    error = assert_input_error(lambda: decode_image(data, "IMAGE", max_pixels=451 * 300 - 1), "IMAGE", "451x300")
    assert "limit" in str(error)
    assert decode_image(data, "IMAGE", max_pixels=451 * 300).shape == (300, 451, 3)  # exactly at the limit is fine


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height (1-bit grey) with a tiny, wrong IDAT: refusable from the header alone."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width, height, fragment", [
    (5000, 4000, "5000x4000"),  # 20 Mpx > the default 4096^2 limit
    (30000, 30000, ""),  # 900 Mpx: PIL's own decompression-bomb error, raised while opening
])
def test_huge_declared_size_is_refused_without_decoding(width, height, fragment):
    assert_input_error(lambda: decode_image(_png_header_only(width, height), "IMAGE"), "IMAGE", fragment)


@pytest.mark.parametrize("fmt, options, tolerance", [
    ("PNG", {}, 0),
    ("WEBP", {"lossless": True}, 0),
    ("JPEG", {"quality": 95}, 12),  # lossy: compared with the photo only loosely, with PIL's own decode exactly
    ("WEBP", {"quality": 90}, 12),
])
def test_decodes_real_photos(astronaut, chelsea, fmt, options, tolerance):
    for photo in (astronaut, chelsea):
        data = encoded(photo, fmt, **options)
        rgb = decode_image(data, "IMAGE")
        assert rgb.dtype == np.uint8 and rgb.shape == photo.shape  # (H, W, 3), not (W, H, 3)
        assert np.abs(rgb.astype(int) - photo.astype(int)).mean() <= tolerance / 4
        if tolerance == 0:
            np.testing.assert_array_equal(rgb, photo)
        with Image.open(io.BytesIO(data)) as independent:
            np.testing.assert_array_equal(rgb, np.asarray(independent.convert("RGB")))

        grey = decode_image(data, "MASK", mode="L")
        assert grey.dtype == np.uint8 and grey.shape == photo.shape[:2]
        # ITU-R 601-2 luma, computed here; PIL's fixed-point version is within one level of it
        luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        assert np.abs(grey.astype(float) - luma).max() <= 1.0


def test_decode_converts_other_modes(chelsea):
    grey = chelsea[..., 0]
    as_rgb = decode_image(encoded(grey, "PNG"), "IMAGE")  # an "L" PNG asked for as RGB
    assert as_rgb.shape == (300, 451, 3)
    for c in range(3):
        np.testing.assert_array_equal(as_rgb[..., c], grey)

    rgba = np.dstack([chelsea, np.full(chelsea.shape[:2], 77, np.uint8)])
    np.testing.assert_array_equal(decode_image(encoded(rgba, "PNG"), "IMAGE"), chelsea)  # alpha dropped

    binary_mask = (grey > 128).astype(np.uint8) * 255
    np.testing.assert_array_equal(decode_image(encoded(binary_mask, "PNG"), "MASK", mode="L"), binary_mask)


# ----------------------------------------------------------------------------------------------------------------
# encode_png, resize
# ----------------------------------------------------------------------------------------------------------------

def test_encode_png_round_trips(astronaut, chelsea):
    for array in (astronaut, chelsea, chelsea[..., 1], np.zeros((1, 1, 3), np.uint8)):
        data = encode_png(array)
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG" and image.size == (array.shape[1], array.shape[0])
            np.testing.assert_array_equal(np.asarray(image), array)
        mode = "RGB" if array.ndim == 3 else "L"
        np.testing.assert_array_equal(decode_image(data, "X", mode=mode), array)


def test_resize_is_a_no_op_at_the_same_size(chelsea):
    out = resize(chelsea, (451, 300), Image.Resampling.BICUBIC)  # size is (width, height)
    assert out is chelsea


def test_resize_changes_size_like_pil(chelsea):
    out = resize(chelsea, (464, 304), Image.Resampling.BICUBIC)
    assert out.shape == (304, 464, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(chelsea).resize((464, 304), Image.Resampling.BICUBIC)))
    # the 300x451 (H, W) array must not be treated as 451 rows
    transposed_size = resize(chelsea, (300, 451), Image.Resampling.NEAREST)
    assert transposed_size.shape == (451, 300, 3)

    mask = (chelsea[..., 0] > 100).astype(np.uint8) * 255
    small = resize(mask, (226, 150), Image.Resampling.NEAREST)
    assert small.shape == (150, 226) and set(np.unique(small)) <= {0, 255}  # NEAREST keeps a binary mask binary


def test_input_error_survives_a_round_trip_through_its_message():
    """How bad input stays INVALID_ARG across a BLS call (Triton hands the callee's error back as text)."""
    error = InputError("STEPS", "must be between 1 and 100, got 0\nsecond line")
    parsed = InputError.parse(str(error))
    assert (parsed.input_name, str(parsed)) == ("STEPS", str(error))
    assert InputError.parse("flux_transformer: out of memory") is None
