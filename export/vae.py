"""AutoencoderKL halves as served networks, shared by ObjectClear (SDXL VAE) and FLUX (16-channel VAE)."""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from torch.export import Dim

from export.onnx_export import MAX_BATCH, ComponentSpec, NetworkWrapper, seeded

LATENT_RANGE = dict(min=8, max=512)  # 64 px .. 4096 px sides


class VaeEncoderMoments(NetworkWrapper):
    """Posterior mean and log-variance, unscaled: the pipeline samples with its own seeded generator."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__(vae=vae)
        self.vae = vae

    def forward(self, image):
        posterior = self.vae.encode(image).latent_dist
        return posterior.mean, posterior.logvar


class VaeDecoder(NetworkWrapper):
    def __init__(self, vae: AutoencoderKL):
        super().__init__(vae=vae)
        self.vae = vae

    def forward(self, latents):
        return self.vae.decode(latents).sample


def vae_specs(prefix: str, vae: AutoencoderKL) -> list[tuple[ComponentSpec, NetworkWrapper]]:
    """<prefix>_vae_encoder (image in [-1, 1] -> latent_mean, latent_logvar) and <prefix>_vae_decoder (unscaled
    latents -> image in [-1, 1]), dynamic in batch and both sides."""
    latent_channels = vae.config.latent_channels
    batch = Dim("batch", min=1, max=MAX_BATCH)
    latent_h, latent_w = Dim("latent_h", **LATENT_RANGE), Dim("latent_w", **LATENT_RANGE)
    image_h8, image_w8 = Dim("image_h8", **LATENT_RANGE), Dim("image_w8", **LATENT_RANGE)
    encoder = ComponentSpec(
        name=f"{prefix}_vae_encoder",
        input_names=["image"], output_names=["latent_mean", "latent_logvar"],
        # derived 8*k dims: plain Dims make torch.export fail on a stride guard of the (H/8)(W/8) token count
        dynamic_shapes={"image": {0: batch, 2: 8 * image_h8, 3: 8 * image_w8}},
        axis_names={"image": {0: "batch", 2: "latent_h", 3: "latent_w"}},  # image sides 8 * latent_h, 8 * latent_w
        dummy_inputs=lambda: (torch.rand(2, 3, 256, 384, generator=seeded(0)) * 2 - 1,),
        check_inputs=lambda: [(torch.rand(1, 3, 304, 464, generator=seeded(1)) * 2 - 1,),
                              (torch.rand(1, 3, 688, 512, generator=seeded(2)) * 2 - 1,)],
        tolerance=1e-4,
    )
    decoder = ComponentSpec(
        name=f"{prefix}_vae_decoder",
        input_names=["latents"], output_names=["image"],
        dynamic_shapes={"latents": {0: batch, 2: latent_h, 3: latent_w}},
        axis_names={"latents": {0: "batch", 2: "latent_h", 3: "latent_w"}},
        dummy_inputs=lambda: (torch.randn(2, latent_channels, 32, 48, generator=seeded(0)),),
        check_inputs=lambda: [(torch.randn(1, latent_channels, 38, 58, generator=seeded(1)),),
                              (torch.randn(1, latent_channels, 64, 86, generator=seeded(2)),)],
        tolerance=1e-3,  # fp32 torch itself is ~4e-4 off an fp64 decode at these sizes (objectclear.md 8.3)
    )
    return [(encoder, VaeEncoderMoments(vae)), (decoder, VaeDecoder(vae))]
