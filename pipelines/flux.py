"""FLUX.1 as plain Python classes: text -> image (schnell / dev), and image + mask -> image (Fill).

Each `__call__` reads as diffusers' FluxPipeline / FluxFillPipeline (reference/flux.md 1): encode the prompt (CLIP
pooled + T5 sequence) -> prepare latents (seeded noise, 2x2 packing, position ids) -> flow-match Euler loop ->
unpack -> decode. The networks are `Component`s (a network runtime in-process, or Triton models via BLS); latents
live on `device` (the CPU by default, a GPU beside networks that answer there); noise comes from
`torch.Generator().manual_seed(seed)` on the CPU in diffusers' order, so a seed gives diffusers' image anywhere.
Tokenizers, scheduler and VAE constants are read from the pipeline folder the exporter copied (configs only).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image
from transformers import AutoTokenizer

from pipelines.components import Component, OnDevice
from pipelines.composite import restore_size
from pipelines.flow_match import FlowMatchSchedule
from pipelines.imaging import InputError, check_range, check_same_size
from pipelines.progress import NO_OBSERVER, Observer

# role -> Triton model that serves it. The FLUX.1 family shares its text encoders and VAE (reference/flux.md 1.1), so
# those are one Triton model each, whichever variants are served; every variant has its own transformer.
SHARED_MODELS = {"clip": "flux_clip_text_encoder", "t5": "flux_t5_encoder", "vae_decoder": "flux_vae_decoder"}
TRANSFORMER_MODELS = {"schnell": "flux_schnell_transformer", "dev": "flux_dev_transformer",
                      "fill": "flux_fill_transformer"}
FILL_MODELS = dict(SHARED_MODELS, transformer=TRANSFORMER_MODELS["fill"], vae_encoder="flux_vae_encoder")
# variant -> its public text-to-image model. flux_generate, the pinned name, is an ensemble that forwards each request
# to the default variant's (its config names it; this is the one the repository ships)
GENERATORS = {"schnell": "flux_schnell_generate", "dev": "flux_dev_generate"}
DEFAULT_VARIANT = "schnell"
# T5 tokens each variant pads its prompt to: schnell was trained with 256, dev and Fill with 512 (BFL's reference code;
# diffusers leaves it to the caller), so the shared T5 serves both lengths
T5_LENGTHS = {"schnell": 256, "dev": 512, "fill": 512}


def generate_models(variant: str) -> dict[str, str]:
    return dict(SHARED_MODELS, transformer=TRANSFORMER_MODELS[variant])


def variant_of(model_name: str) -> str:
    """"flux_dev_generate" -> "dev"."""
    return {model: variant for variant, model in GENERATORS.items()}[model_name]


def pipeline_model(network: str) -> str:
    """The public model whose exported 1/pipeline/ folder describes a network's inputs: a transformer's variant's,
    Fill's for the VAE encoder, the default variant's for the networks every variant shares."""
    variants = {model: variant for variant, model in TRANSFORMER_MODELS.items()}
    variant = "fill" if network == FILL_MODELS["vae_encoder"] else variants.get(network, DEFAULT_VARIANT)
    return "flux_fill_inpaint" if variant == "fill" else GENERATORS[variant]

COMPONENT_OUTPUTS = {"clip": ["pooled_embeds"], "t5": ["text_embeds"], "transformer": ["velocity"],
                     "vae_decoder": ["image"], "vae_encoder": ["latent_mean", "latent_logvar"]}
PATCH = 2  # latents are packed in 2x2 patches
MIN_SIDE, MAX_SIDE = 256, 2048


@dataclass(frozen=True)
class FluxConfig:
    """What the exporter copied next to the serving model: tokenizers and the configs that shape the loop."""
    folder: Path
    scheduler: dict
    vae_scale_factor: int  # pixels per latent
    latent_channels: int
    scaling_factor: float
    shift_factor: float
    guidance_embeds: bool
    max_sequence_length: int  # T5 tokens: 256 for schnell, 512 for dev and Fill

    @classmethod
    def load(cls, folder: Path) -> "FluxConfig":
        folder = Path(folder)
        read = lambda *parts: json.loads(folder.joinpath(*parts).read_text())  # noqa: E731
        vae, transformer = read("vae", "config.json"), read("transformer", "config.json")
        return cls(folder, read("scheduler", "scheduler_config.json"), 2 ** (len(vae["block_out_channels"]) - 1),
                   vae["latent_channels"], vae["scaling_factor"], vae["shift_factor"],
                   transformer.get("guidance_embeds", False), read("serving.json")["max_sequence_length"])

    @property
    def multiple(self) -> int:
        return self.vae_scale_factor * PATCH  # image sides are multiples of 16


def check_loop(steps: int, guidance_scale: float) -> None:
    check_range("STEPS", steps, 1, 100)
    check_range("GUIDANCE_SCALE", guidance_scale, 0, 100)


@dataclass(frozen=True)
class GenerateSettings:
    width: int = 512
    height: int = 512
    steps: int = 4
    guidance_scale: float = 3.5  # dev only; schnell has no guidance input

    def validate(self) -> None:
        check_range("WIDTH", self.width, MIN_SIDE, MAX_SIDE)
        check_range("HEIGHT", self.height, MIN_SIDE, MAX_SIDE)
        check_loop(self.steps, self.guidance_scale)


@dataclass(frozen=True)
class FillSettings:
    pixels: int = 512 * 512  # processing area; the aspect ratio is kept
    steps: int = 4
    guidance_scale: float = 30.0
    prompt: str = ""
    composite: bool = True  # blend into the untouched input (pipelines/composite.py); off: diffusers' resize

    def validate(self) -> None:
        check_loop(self.steps, self.guidance_scale)


# -- latent layout (FluxPipeline._pack_latents / _unpack_latents / _prepare_latent_image_ids) ---------------------------
def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, C*4), channel index c*4 + dy*2 + dx."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(latents: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, channels = latents.shape
    return latents.view(b, h // 2, w // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, -1, h, w)


def image_ids(h: int, w: int) -> torch.Tensor:
    """(h/2 * w/2, 3) rows [0, row, col] of the packed tokens."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] += torch.arange(h // 2)[:, None]
    ids[..., 2] += torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3)


def pack_mask(mask: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, 1, H, W) pixel mask -> (B, N, scale*scale*4): every pixel of each latent cell as a channel, packed."""
    b, _, height, width = mask.shape
    h, w = height // scale, width // scale
    mask = mask[:, 0].view(b, h, scale, w, scale).permute(0, 2, 4, 1, 3).reshape(b, scale * scale, h, w)
    return pack(mask)


def fill_size(width: int, height: int, pixels: int, multiple: int = 16) -> tuple[int, int]:
    """Processing size for Fill: about `pixels` in area with the image's aspect ratio, sides multiples of 16, each
    within FLUX's generation limits (so an extreme panorama is squeezed rather than sent outside the sizes the
    networks are built for: export/serving.py)."""
    scale = (pixels / (width * height)) ** 0.5
    return tuple(min(MAX_SIDE, max(MIN_SIDE, round(side * scale / multiple) * multiple)) for side in (width, height))


class FluxBase:
    def __init__(self, components: dict[str, Component], config: FluxConfig, device: str = "cpu"):
        self.device = torch.device(device)
        components = {role: OnDevice(component, self.device) for role, component in components.items()}
        self.clip, self.t5 = components["clip"], components["t5"]
        self.transformer, self.vae_decoder = components["transformer"], components["vae_decoder"]
        self.vae_encoder = components.get("vae_encoder")
        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(config.folder / "tokenizer")
        self.tokenizer_2 = AutoTokenizer.from_pretrained(config.folder / "tokenizer_2")

    def encode_prompt(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CLIP pooled (1, 768) and T5 last hidden state (1, T, 4096), both padded without attention masks."""
        clip_ids = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                                  truncation=True, return_tensors="pt").input_ids
        t5_ids = self.tokenizer_2(prompt, padding="max_length", max_length=self.config.max_sequence_length,
                                  truncation=True, return_tensors="pt").input_ids
        pooled = self.clip(input_ids=clip_ids)["pooled_embeds"]
        text = self.t5(input_ids=t5_ids)["text_embeds"]
        return text, pooled, torch.zeros(text.shape[1], 3, device=self.device)

    def latent_size(self, width: int, height: int) -> tuple[int, int]:
        return PATCH * (height // self.config.multiple), PATCH * (width // self.config.multiple)

    def denoise(self, latents, condition, prompt_embeds, pooled, text_ids, latent_size: tuple[int, int],
                schedule: FlowMatchSchedule, guidance_scale: float, observer: Observer) -> torch.Tensor:
        batch = latents.shape[0]
        ids = image_ids(*latent_size).to(self.device)
        # Triton batches only tensors with a leading batch axis, so the ids travel once per row; materialised here,
        # once, rather than by every step's hand-over
        fixed = dict(encoder_hidden_states=prompt_embeds, pooled_projections=pooled,
                     img_ids=ids.expand(batch, -1, -1).contiguous(),
                     txt_ids=text_ids.expand(batch, -1, -1).contiguous())
        if self.config.guidance_embeds:
            fixed["guidance"] = torch.full([batch], guidance_scale, dtype=torch.float32, device=self.device)
        for i in range(len(schedule)):
            if observer.cancelled():
                raise InterruptedError("request cancelled")
            hidden = latents if condition is None else torch.cat([latents, condition], dim=2)
            velocity = self.transformer(hidden_states=hidden, timestep=schedule.model_timestep(i, batch),
                                        **fixed)["velocity"]
            latents = schedule.step(velocity, i, latents)
            observer.step(i + 1, len(schedule), unpack(latents, *latent_size))
        return latents

    def decode(self, latents: torch.Tensor, h: int, w: int) -> np.ndarray:
        latents = unpack(latents, h, w) / self.config.scaling_factor + self.config.shift_factor
        image = (self.vae_decoder(latents=latents)["image"] / 2 + 0.5).clamp(0, 1)
        return (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()


class FluxGenerator(FluxBase):
    def __call__(self, prompt: str, seed: int, settings: GenerateSettings,
                 observer: Observer = NO_OBSERVER) -> np.ndarray:
        """-> (H, W, 3) uint8, H and W the requested size rounded down to multiples of 16, as diffusers does.
        `observer` hears the stages and steps and may cancel the loop."""
        settings.validate()
        if not prompt.strip():
            raise InputError("PROMPT", "empty; describe the image to generate")
        h, w = self.latent_size(settings.width, settings.height)
        generator = torch.Generator().manual_seed(int(seed))

        observer.stage("text_encode")
        prompt_embeds, pooled, text_ids = self.encode_prompt(prompt)
        latents = pack(torch.randn(1, self.config.latent_channels, h, w, generator=generator)).to(self.device)
        schedule = FlowMatchSchedule.from_config(self.config.scheduler, settings.steps, latents.shape[1])
        observer.stage("denoise")
        latents = self.denoise(latents, None, prompt_embeds, pooled, text_ids, (h, w), schedule,
                               settings.guidance_scale, observer)
        observer.stage("decode")
        return self.decode(latents, h, w)


class FluxFillInpainter(FluxBase):
    def __init__(self, components: dict[str, Component], config: FluxConfig, device: str = "cpu"):
        super().__init__(components, config, device)
        # diffusers' own preprocessing (lanczos resize, [-1, 1]; the mask grey, binarised at 0.5)
        self.image_processor = VaeImageProcessor(vae_scale_factor=config.multiple,
                                                 vae_latent_channels=config.latent_channels)
        self.mask_processor = VaeImageProcessor(vae_scale_factor=config.multiple,
                                                vae_latent_channels=config.latent_channels, do_normalize=False,
                                                do_binarize=True, do_convert_grayscale=True)

    def __call__(self, image: np.ndarray, mask: np.ndarray, seed: int, settings: FillSettings,
                 observer: Observer = NO_OBSERVER) -> tuple[np.ndarray, np.ndarray]:
        """image (H, W, 3) uint8, mask (H, W) uint8 (white = fill) -> (image, binarised mask 0/255), both at the
        input's resolution; with settings.composite, the image is the input outside the feathered mask. `observer`
        hears the stages and steps and may cancel the loop."""
        settings.validate()
        check_same_size(image, mask)
        observer.stage("encode")
        height, width = image.shape[:2]
        size = fill_size(width, height, settings.pixels, self.config.multiple)
        pixels = self.image_processor.preprocess(Image.fromarray(image), height=size[1], width=size[0])
        mask_pixels = self.mask_processor.preprocess(Image.fromarray(mask), height=size[1], width=size[0])
        pixels, mask_pixels = pixels.float().to(self.device), mask_pixels.to(self.device)
        h, w = self.latent_size(*size)
        generator = torch.Generator().manual_seed(int(seed))

        prompt_embeds, pooled, text_ids = self.encode_prompt(settings.prompt)
        schedule = FlowMatchSchedule.from_config(self.config.scheduler, settings.steps, (h // 2) * (w // 2))
        # FluxFillPipeline's draws: the image's posterior sample, the noise, the masked image's posterior sample
        image_latents = self.encode_image(pixels, generator)
        noise = torch.randn(image_latents.shape, generator=generator).to(self.device)
        latents = pack(schedule.scale_noise(image_latents, noise))
        masked_latents = pack(self.encode_image(pixels * (1 - mask_pixels), generator))
        condition = torch.cat([masked_latents, pack_mask(mask_pixels, self.config.vae_scale_factor)], dim=2)
        observer.stage("denoise")
        latents = self.denoise(latents, condition, prompt_embeds, pooled, text_ids, (h, w), schedule,
                               settings.guidance_scale, observer)
        observer.stage("decode")
        return restore_size(image, self.decode(latents, h, w), mask_pixels[0, 0], settings.composite)

    def encode_image(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        moments = self.vae_encoder(image=pixels)
        mean, std = moments["latent_mean"], torch.exp(0.5 * moments["latent_logvar"])
        sample = mean + std * torch.randn(mean.shape, generator=generator).to(self.device)
        return (sample - self.config.shift_factor) * self.config.scaling_factor
