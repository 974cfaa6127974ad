"""Image bytes in and out, and the resize rules of the pipelines. Pure PIL/numpy; no Triton, no torch."""
from __future__ import annotations

import io
import math
import re

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Decompression bombs and absurd sizes are refused before any work (PIL's own guard only warns below 2x this).
MAX_PIXELS = 4096 * 4096


class InputError(ValueError):
    """A request input is unusable; the message names the input. Served as INVALID_ARG."""

    def __init__(self, input_name: str, problem: str):
        super().__init__(f"input '{input_name}': {problem}")
        self.input_name = input_name

    @classmethod
    def parse(cls, message: str) -> "InputError | None":
        """The InputError whose str() is `message`, if it is one."""
        match = re.fullmatch(r"input '([^']+)': (.*)", message, flags=re.DOTALL)
        return cls(match.group(1), match.group(2)) if match else None


def check_range(input_name: str, value, low, high) -> None:
    if not low <= value <= high:
        raise InputError(input_name, f"must be between {low} and {high}, got {value}")


def check_same_size(image: np.ndarray, mask: np.ndarray) -> None:
    if mask.shape != image.shape[:2]:
        hint = " as displayed (EXIF orientation applied)" if mask.shape == image.shape[1::-1] else ""
        raise InputError("MASK", f"size {mask.shape[1]}x{mask.shape[0]} differs from the image's "
                                 f"{image.shape[1]}x{image.shape[0]}{hint}")


def decode_image(data: bytes, input_name: str, mode: str = "RGB", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded JPEG/PNG/WebP/... bytes -> uint8 array (H, W, 3) for RGB or (H, W) for L, as displayed: a camera
    stores a portrait photo's pixels sideways with an EXIF Orientation tag saying how to turn them, and viewers
    turn them; so do we (PIL's ImageOps.exif_transpose), so results come back upright and masks drawn over the
    photo as it is shown fit it."""
    if not data:
        raise InputError(input_name, "empty; expected encoded image bytes (JPEG, PNG or WebP)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise InputError(input_name, f"{img.width}x{img.height} image exceeds the limit of {max_pixels} pixels")
            return np.array(ImageOps.exif_transpose(img).convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(input_name, f"not a decodable image ({type(e).__name__}: {e})") from None


def encode_png(array: np.ndarray) -> bytes:
    # zlib level 1: ~4x faster than PIL's default 6 for ~10% more bytes (0.07 vs 0.27 s for a 1200x800 photo), the
    # right trade for a response that crosses a network once
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple)) * multiple


def short_side_size(width: int, height: int, short_side: int, multiple: int = 16) -> tuple[int, int]:
    """ObjectClear's processing size: scale the short side to `short_side` (the long side truncated), never
    upscale a smaller image, then round both sides up to a multiple of 16."""
    if min(width, height) >= short_side:
        if width < height:
            width, height = short_side, int(height * short_side / width)
        else:
            width, height = int(width * short_side / height), short_side
    return round_up(width, multiple), round_up(height, multiple)


# The serving envelope of ObjectClear's networks: every processing size lies in [MIN_SIDE, short_side * MAX_ASPECT] on
# both axes, so one TensorRT optimisation profile per preset covers every photo (export/profiles.py). Photos inside it
# (aspect ratio up to 2:1, short side from 64 px) keep the reference rule's size exactly.
MIN_SIDE = 64  # 8 latents: the smallest side the exported UNet and VAE are traced for
MAX_ASPECT = 2


def processing_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """`short_side_size`, brought into the serving envelope: a panorama longer than MAX_ASPECT x `short_side` is
    processed with its long side at that bound (the short side shrinks with it), and a side under MIN_SIDE is
    stretched to MIN_SIDE. The pipeline resizes back to the input size, so only the processing resolution changes."""
    size = short_side_size(width, height, short_side)
    longest = short_side * MAX_ASPECT
    if max(size) > longest:
        scale = longest / max(width, height)
        size = tuple(min(longest, round_up(int(side * scale), 16)) for side in (width, height))
    return tuple(max(MIN_SIDE, side) for side in size)


def resize(array: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """Resize a uint8 image array to (width, height); a no-op when the size already matches."""
    if (array.shape[1], array.shape[0]) == tuple(size):
        return array
    return np.array(Image.fromarray(array).resize(size, resample=resample))
