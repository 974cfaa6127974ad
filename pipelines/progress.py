"""What a pipeline tells whoever runs it while it runs: the one hook behind streaming progress and the metrics.

A pipeline calls `observer.stage(name)` where a stage starts (a stage lasts until the next one starts),
`observer.step(k, n, latents)` after denoising step k of n, and asks `observer.cancelled()` before each network call
of its loop. The default `Observer` does nothing and never cancels, so in-process use and the parity tests run the
pipelines exactly as before. Served models pass their own observers (pipelines/triton_observers.py): one that times
stages and counts steps into Prometheus metrics, and, in the streaming `<model>_stream` models, one that also sends
each stage and step to the client.

Also here: the cheap preview of latents that the streaming models send on request, a fixed linear projection of the
latent channels to RGB, as diffusion UIs show while they sample.
"""
from __future__ import annotations

import numpy as np
import torch


class Observer:
    """The no-op observer: the pipelines' default."""

    def stage(self, name: str) -> None:
        """Stage `name` starts now; the previous one (if any) ends."""

    def step(self, step: int, steps: int, latents: torch.Tensor) -> None:
        """Denoising step `step` of `steps` is done; `latents` (B, C, h, w) are the current (model-space) latents."""

    def cancelled(self) -> bool:
        """Whether whoever asked for this work has gone: the loop then stops before its next network call."""
        return False


NO_OBSERVER = Observer()

# Latent -> RGB in [-1, 1] per latent pixel, for the latents the denoising loops work on (scaled by the VAE's
# scaling factor, FLUX's also shifted): the least-squares factors published with ComfyUI's latent previews
# (comfy/latent_formats.py: SDXL, Flux) and used by most diffusion UIs. The SDXL VAE is ObjectClear's (4 channels),
# the FLUX.1 VAE is shared by schnell, dev and Fill (16 channels). Rows are latent channels; columns R, G, B.
LATENT_RGB = {
    4: (np.array([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068],
                  [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]], np.float32),
        np.array([0.1084, -0.0175, -0.0011], np.float32)),
    16: (np.array([[-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433],
                   [-0.0174, 0.0160, 0.0617], [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115],
                   [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259], [-0.0245, 0.0250, 0.1180],
                   [0.1008, 0.0755, -0.0421], [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
                   [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103], [-0.0280, -0.0881, -0.0499],
                   [-0.1262, -0.0982, -0.0778]], np.float32),
         np.array([-0.0329, -0.0718, -0.0851], np.float32)),
}


def latent_preview(latents: torch.Tensor) -> np.ndarray:
    """(B, C, h, w) latents -> (h, w, 3) uint8: the first image's RGB approximation, one pixel per latent pixel (an
    eighth of the output's side), at the cost of one small matrix product."""
    channels = latents.shape[1]
    if channels not in LATENT_RGB:
        raise ValueError(f"no latent preview for {channels}-channel latents")
    factors, bias = LATENT_RGB[channels]
    rgb = latents[0].detach().float().cpu().permute(1, 2, 0).numpy() @ factors + bias
    return ((rgb + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


# The streaming twins' interface beyond their public model's (the configs are generated from it: server/streaming.py)
STREAM_SUFFIX = "_stream"
# the models with a loop; flux_generate is an ensemble (never the step of one's twin): its variants' models have twins
STREAMED = ["remove_object", "objectclear_inpaint", "flux_fill_inpaint", "flux_schnell_generate", "flux_dev_generate"]
PREVIEW_INPUT = "PREVIEW"  # TYPE_BOOL, optional: send PREVIEW_IMAGE with each step
PROGRESS_OUTPUTS = {  # name -> (Triton type, what it holds); each dims [1]
    "STAGE": ("TYPE_STRING", "the stage running: decode_input, segmentation, encode, denoise, decode, png, ..."),
    "STEP": ("TYPE_INT32", "denoising steps done (0 in the message that starts a stage)"),
    "TOTAL_STEPS": ("TYPE_INT32", "denoising steps of this request (0 in the message that starts a stage)"),
    "ELAPSED": ("TYPE_FP32", "seconds since the request started"),
    "PREVIEW_IMAGE": ("TYPE_STRING", "PNG, the latents' RGB projection (with PREVIEW, in step messages)"),
}
