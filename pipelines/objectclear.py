"""ObjectClear object removal as a plain Python class: image + mask + seed -> image without the object + region.

Reads top to bottom as the algorithm (reference/objectclear.md): resize -> object token -> latents -> Euler loop
with CFG, the step-0 background reset and the last-step attention map -> decode -> attention-guided fusion ->
back to the input's resolution (pipelines/composite.py). The networks are `Component`s (ONNX Runtime in-process,
or Triton models via BLS); everything else is torch on `device` (the CPU by default; a GPU takes the loop and fusion off the host, and keeps latents next to
networks that return GPU tensors), with noise always drawn on the CPU from `torch.Generator().manual_seed(seed)` so
a seed gives the same image anywhere.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipelines.components import Component, OnDevice
from pipelines.composite import restore_size
from pipelines.euler import EulerSchedule
from pipelines.fusion import attention_guided_fusion, attention_region
from pipelines.imaging import check_range, check_same_size, processing_size, resize
from pipelines.progress import NO_OBSERVER, Observer

VAE_SCALE = 8  # pixels per latent
CLIP_SIZE = 224
# role -> Triton model that serves it
COMPONENT_MODELS = {"unet": "objectclear_unet", "vae_encoder": "objectclear_vae_encoder",
                    "vae_decoder": "objectclear_vae_decoder", "object_encoder": "objectclear_object_encoder"}


@dataclass(frozen=True)
class Conditioning:
    """What export computed once: the constant prompt's embeddings and the checkpoint's scheduler/VAE constants."""
    prompt_embeds: torch.Tensor  # (1, 77, D)
    pooled_prompt_embeds: torch.Tensor  # (1, P)
    scheduler_config: dict
    vae_scaling_factor: float
    object_token_index: int

    @classmethod
    def load(cls, path: Path) -> "Conditioning":
        with np.load(path) as data:
            return cls(torch.from_numpy(data["prompt_embeds"]), torch.from_numpy(data["pooled_prompt_embeds"]),
                       json.loads(str(data["scheduler_config"])), float(data["vae_scaling_factor"]),
                       int(data["object_token_index"]))


@dataclass(frozen=True)
class Settings:
    """One preset's knobs (PRODUCT.md)."""
    steps: int = 8
    guidance_scale: float = 2.0
    short_side: int = 384
    composite: bool = True  # blend into the untouched input (pipelines/composite.py); off: the reference's resize

    def validate(self) -> None:
        check_range("STEPS", self.steps, 1, 100)
        check_range("GUIDANCE_SCALE", self.guidance_scale, 0, 30)


class ObjectClearInpainter:
    def __init__(self, components: dict[str, Component], conditioning: Conditioning, device: str = "cpu"):
        self.device = torch.device(device)
        self.unet, self.vae_encoder, self.vae_decoder, self.object_encoder = (
            OnDevice(components[role], self.device)
            for role in ("unet", "vae_encoder", "vae_decoder", "object_encoder"))
        self.conditioning = conditioning

    def __call__(self, image: np.ndarray, mask: np.ndarray, seed: int, settings: Settings,
                 observer: Observer = NO_OBSERVER) -> tuple[np.ndarray, np.ndarray]:
        """image (H, W, 3) uint8 RGB, mask (H, W) uint8 (white = remove) -> (image, attention region 0/255),
        both at the input's resolution; with settings.composite, the image is the input outside the feathered
        region. `observer` hears the stages and steps and may cancel the loop."""
        settings.validate()
        check_same_size(image, mask)
        observer.stage("encode")
        height, width = image.shape[:2]
        size = processing_size(width, height, settings.short_side)
        image_small = resize(image, size, Image.BICUBIC)
        mask_small = resize(mask, size, Image.NEAREST)

        original = torch.from_numpy(image_small).to(self.device)
        pixels = original.permute(2, 0, 1)[None].float() / 255 * 2 - 1
        object_mask = (torch.from_numpy(mask_small).to(self.device)[None, None].float() / 255 >= 0.5).float()
        generator = torch.Generator().manual_seed(int(seed))

        prompt_embeds, pooled = self.encode_prompt(pixels, object_mask, settings.guidance_scale)
        image_latents, noise, masked_image_latents = self.prepare_latents(pixels, generator)
        latent_mask = F.interpolate(object_mask, size=noise.shape[-2:])
        observer.stage("denoise")
        latents, attention = self.denoise(noise, image_latents, masked_image_latents, latent_mask, prompt_embeds,
                                          pooled, settings, observer)
        observer.stage("decode")
        generated = self.decode(latents)

        observer.stage("fusion")
        region = attention_region(attention, VAE_SCALE)
        fused = attention_guided_fusion(original, generated, region).cpu().numpy()
        return restore_size(image, fused, region, settings.composite)

    @functools.lru_cache(maxsize=16)
    def schedule(self, steps: int) -> EulerSchedule:
        return EulerSchedule.from_config(self.conditioning.scheduler_config, steps)

    # -- steps ---------------------------------------------------------------------------------------------------
    def encode_prompt(self, pixels: torch.Tensor, object_mask: torch.Tensor, guidance_scale: float):
        """The constant prompt with its "object" token replaced by the object's CLIP embedding; with CFG, an
        all-zero unconditional row first."""
        frame = pixels * (object_mask > 0.5)  # the whole frame, background set to 0 (mid-grey)
        frame = F.interpolate(frame, size=(CLIP_SIZE, CLIP_SIZE), mode="bilinear", antialias=True)
        token = self.object_encoder(pixels=frame)["object_token"]
        prompt_embeds = self.conditioning.prompt_embeds.to(self.device, copy=True)
        prompt_embeds[:, self.conditioning.object_token_index] = token
        pooled = self.conditioning.pooled_prompt_embeds.to(self.device)
        if guidance_scale > 1.0:
            prompt_embeds = torch.cat([torch.zeros_like(prompt_embeds), prompt_embeds])
            pooled = torch.cat([torch.zeros_like(pooled), pooled])
        return prompt_embeds, pooled

    def prepare_latents(self, pixels: torch.Tensor, generator: torch.Generator):
        """Two independent posterior samples of the full (unmasked) image around the initial noise, drawn in the
        reference pipeline's order: background latents, noise, conditioning latents."""
        moments = self.vae_encoder(image=pixels)
        mean, std = moments["latent_mean"], torch.exp(0.5 * moments["latent_logvar"])
        scale = self.conditioning.vae_scaling_factor
        draw = lambda: torch.randn(mean.shape, generator=generator).to(self.device)  # noqa: E731
        image_latents = scale * (mean + std * draw())
        noise = draw()
        masked_image_latents = scale * (mean + std * draw())
        return image_latents, noise, masked_image_latents

    def denoise(self, noise, image_latents, masked_image_latents, latent_mask, prompt_embeds, pooled,
                settings: Settings, observer: Observer):
        schedule = self.schedule(settings.steps)
        rows = prompt_embeds.shape[0]  # 2 with CFG
        height, width = (VAE_SCALE * s for s in noise.shape[-2:])
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32,
                                device=self.device).repeat(rows, 1)
        condition = torch.cat([latent_mask, masked_image_latents], dim=1).repeat(rows, 1, 1, 1)
        latents = noise * schedule.init_noise_sigma
        for i in range(len(schedule)):
            if observer.cancelled():
                raise InterruptedError("request cancelled")
            scaled = schedule.scale_model_input(latents.repeat(rows, 1, 1, 1), i)
            out = self.unet(sample=torch.cat([scaled, condition], dim=1),
                            timestep=schedule.timesteps[i].repeat(rows), encoder_hidden_states=prompt_embeds,
                            text_embeds=pooled, time_ids=time_ids)
            noise_pred = out["noise_pred"]
            if rows == 2:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + settings.guidance_scale * (cond - uncond)
            latents = schedule.step(noise_pred, i, latents)
            if i == 0 and len(schedule) > 1:
                # "adaptive strength": restart the background from the image itself, at the next step's noise level
                background = schedule.add_noise(image_latents, noise, 1)
                latents = (1 - latent_mask) * background + latent_mask * latents
            observer.step(i + 1, len(schedule), latents)
        return latents, self.object_attention(out["obj_attn"][-1:], noise.shape[-2:])

    @staticmethod
    def object_attention(obj_attn: torch.Tensor, latent_size) -> torch.Tensor:
        """The conditional row's last-step token attention, upsampled to latent size and min-max normalised."""
        attention = F.interpolate(obj_attn, size=tuple(latent_size), mode="bilinear", align_corners=False)[0, 0]
        return (attention - attention.min()) / (attention.max() - attention.min() + 1e-8)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        image = self.vae_decoder(latents=latents / self.conditioning.vae_scaling_factor)["image"]
        image = (image / 2 + 0.5).clamp(0, 1)
        return (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8)
