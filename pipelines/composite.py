"""Back to the input's resolution: the pipelines' last step.

The pipelines work at a preset's processing size (ObjectClear's short side, FLUX Fill's area). The reference
pipelines resize that whole result back to the input's size, so every pixel of a 12 MP photo becomes a resampled
copy of a ~0.2 MP one (`composite` off: kept, for parity with them). With `composite` on, the upscaled result goes
only where the model changed the picture: it is blended into the untouched input through the region the pipeline
returns as MASK (ObjectClear's attention-guided region, Fill's binarised mask), feathered as attention-guided
fusion feathers it (pipelines/fusion.py:feather) at the processing size and upscaled bilinearly. Outside that
feathered region every output pixel is the decoded input's own; on the region itself it is the upscaled result.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipelines.fusion import feather
from pipelines.imaging import resize


def restore_size(original: np.ndarray, result: np.ndarray, region: torch.Tensor,
                 composite: bool) -> tuple[np.ndarray, np.ndarray]:
    """original (H, W, 3) uint8 as decoded; result (h, w, 3) uint8 and region (h, w) 0/1 float at the processing
    size -> (image, region as 0/255), both (H, W)."""
    height, width = original.shape[:2]
    image = resize(result, (width, height), Image.BICUBIC)
    mask = resize((region.cpu().numpy() * 255).astype(np.uint8), (width, height), Image.NEAREST)
    if composite:
        image = blend(original, image, upscale(feather(region).cpu(), (height, width)))
    return image, mask


def upscale(weights: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(h, w) weights -> (H, W), bilinear with pixel centres aligned as in PIL's resize of the image; exact zeros
    stay exact zeros away from the region."""
    return F.interpolate(weights[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]


def blend(original: np.ndarray, upscaled: np.ndarray, weights: torch.Tensor) -> np.ndarray:
    """weights * upscaled + (1 - weights) * original, rounded, computed only inside the bounding box of the
    non-zero weights (a small part of a large photo); everywhere else the original's pixels, copied."""
    out = original.copy()
    weights = weights.numpy()
    rows, cols = np.flatnonzero(weights.any(axis=1)), np.flatnonzero(weights.any(axis=0))
    if len(rows) == 0:
        return out
    box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    alpha = weights[box][..., None]
    mixed = alpha * upscaled[box].astype(np.float32) + (1 - alpha) * original[box].astype(np.float32)
    out[box] = np.rint(mixed).astype(np.uint8)
    return out
