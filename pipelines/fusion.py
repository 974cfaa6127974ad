"""Attention-guided fusion (AGF): keep the diffusion output only where the object and its effects were.

Inside the (dilated, feathered) attention region the output is the generated image; outside it, the original's
high frequencies on top of the generated low frequencies, which hides colour drift at the seam. Written in torch
so it can run next to the latents on a GPU; it reproduces the OpenCV/SciPy post-process of the reference
(cv2.dilate with a 21x21 ellipse, cv2.GaussianBlur 9x9 sigma 2, a 5-level SciPy wavelet split), including its two
uint8 truncations.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ATTENTION_THRESHOLD = 128  # on the 0..255 attention map
DILATE_SIZE = 21
BLUR_SIZE, BLUR_SIGMA = 9, 2.0
WAVELET_LEVELS = 5


def ellipse_kernel(size: int) -> torch.Tensor:
    """OpenCV's MORPH_ELLIPSE structuring element: each row spans round(c * sqrt(1 - dy^2 / r^2)) around the centre."""
    r = c = size // 2
    kernel = torch.zeros(size, size)
    for i in range(size):
        dy = i - r
        dx = round(c * math.sqrt((r * r - dy * dy) / (r * r))) if r else 0
        kernel[i, max(c - dx, 0):min(c + dx + 1, size)] = 1
    return kernel


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(x * x) / (2 * sigma * sigma))
    return (k / k.sum()).float()


def _dilate(mask: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    pad = kernel.shape[-1] // 2
    hits = F.conv2d(F.pad(mask, (pad, pad, pad, pad)), kernel[None, None].to(mask))
    return (hits > 0.5).to(mask.dtype)


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    pad = kernel.numel() // 2
    k = kernel.to(x)
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))  # reflect == BORDER_REFLECT_101
    return F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), k.view(1, 1, -1, 1))


def _binomial(x: torch.Tensor) -> torch.Tensor:
    """3x3 [1 2 1]^T [1 2 1] / 16 per channel with edge replication (scipy.ndimage.convolve mode='nearest')."""
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device) / 4
    channels = x.shape[1]
    x = F.conv2d(F.pad(x, (1, 1, 0, 0), mode="replicate"), k.view(1, 1, 1, 3).repeat(channels, 1, 1, 1),
                 groups=channels)
    return F.conv2d(F.pad(x, (0, 0, 1, 1), mode="replicate"), k.view(1, 1, 3, 1).repeat(channels, 1, 1, 1),
                    groups=channels)


def _overshoots(size_in: int, size_out: int, device) -> torch.Tensor:
    """Output lines whose source coordinate k * (in - 1) / (out - 1), computed in float64 as SciPy does, lands a
    rounding error past the last input line. SciPy's default 'constant' mode returns 0 there, so the reference's
    wavelet split sees black edge lines at some sizes (464 px wide, for one); reproduced for parity."""
    coords = torch.arange(size_out, dtype=torch.float64) * ((size_in - 1) / max(size_out - 1, 1))
    return (coords > size_in - 1).to(device)


def _zoom(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """scipy.ndimage.zoom(order=1): linear, corner pixel centres mapped onto each other (align_corners=True)."""
    out = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    rows, cols = _overshoots(x.shape[-2], size[0], x.device), _overshoots(x.shape[-1], size[1], x.device)
    if rows.any() or cols.any():
        out = out.masked_fill(rows[:, None] | cols[None, :], 0.0)
    return out


def low_frequency(x: torch.Tensor) -> torch.Tensor:
    """Cascade of binomial blurs; level r > 1 also zooms down r times and back up."""
    h, w = x.shape[-2:]
    for level in range(WAVELET_LEVELS):
        x = _binomial(x)
        r = 2 ** level
        if r > 1:
            x = _zoom(_zoom(x, (round(h / r), round(w / r))), (h, w))
    return x


ELLIPSE = ellipse_kernel(DILATE_SIZE)
GAUSSIAN = gaussian_kernel(BLUR_SIZE, BLUR_SIGMA)


def attention_region(attention: torch.Tensor, scale: int) -> torch.Tensor:
    """(h, w) attention in [0, 1] at latent resolution -> binary (h*scale, w*scale) float mask, blocky like the
    reference's nearest-neighbour upsample."""
    hard = (torch.floor(attention * 255) > ATTENTION_THRESHOLD).float()
    return hard.repeat_interleave(scale, 0).repeat_interleave(scale, 1)


def feather(region: torch.Tensor) -> torch.Tensor:
    """(H, W) binary float region -> (H, W) weights in [0, 1]: 1 on the region, falling off through the 21x21
    ellipse dilation and 9x9 Gaussian around it; 0 wherever that is 0, i.e. beyond 10 + 4*sqrt(2) < 16 px from it."""
    hard = region[None, None]
    return torch.maximum(hard, _blur(_dilate(hard, ELLIPSE), GAUSSIAN)).clamp(0, 1)[0, 0]


def attention_guided_fusion(original: torch.Tensor, generated: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """original, generated: (H, W, 3) uint8; region: (H, W) binary float from `attention_region` -> (H, W, 3) uint8."""
    hard = region[None, None]
    soft = feather(region)[None, None]
    as_planes = lambda img: img.permute(2, 0, 1)[None].double()  # noqa: E731
    keep = 1 - hard.double()
    ori, gen = as_planes(original), as_planes(generated)
    background = ori * keep / 255
    wavelet = (background - low_frequency(background)) + low_frequency(gen * keep / 255)
    wavelet = torch.floor(wavelet.clamp(0, 1) * 255)
    soft = soft.double()
    fused = torch.floor(wavelet * (1 - soft) + gen * soft)
    return fused[0].permute(1, 2, 0).to(torch.uint8)
