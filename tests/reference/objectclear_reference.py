"""Independent PyTorch reference of ObjectClear inference, the yardstick for the served (ONNX/Triton) pipeline.

It follows /work/shared/reference/objectclear.md (sections 1.3, 2.2, 2.3, 3 and 4) and drives the diffusers and
transformers modules of a checkpoint in ObjectClear's Hugging Face layout directly. It deliberately shares no code
with pipelines/, export/ or server/: a bug copied into both sides of a parity test would go unnoticed.

Everything runs in float32 on the CPU with one CPU torch.Generator, so a run is fully determined by its arguments.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor
from PIL import Image
from safetensors.torch import load_file
from scipy import ndimage
from torch import nn
from transformers import CLIPModel, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

PROMPT = "remove the instance of object"
OBJECT_TOKEN_INDEX = 5  # "<bos> remove the instance of object": index 5 is the word "object"
CLIP_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VAE_SCALE = 8  # pixels per latent cell
ATTN_THRESHOLD = 128  # on the uint8 attention map: strictly greater counts as object+effect


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------

class _MLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, residual: bool):
        super().__init__()
        self.layernorm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.act = nn.GELU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(self.act(self.fc1(self.layernorm(x))))
        return y + x if self.residual else y


class PostfuseModule(nn.Module):
    """Maps a CLIP image embedding to one text-token embedding (objectclear.md section 4)."""

    def __init__(self, embed_dim: int, embed_dim_img: int):
        super().__init__()
        self.mlp1 = _MLP(embed_dim_img, embed_dim, embed_dim, residual=False)
        self.mlp2 = _MLP(embed_dim, embed_dim, embed_dim, residual=True)
        self.layer_norm = nn.LayerNorm(embed_dim)

    def forward(self, object_embeds: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.mlp2(self.mlp1(object_embeds)))


@dataclass
class Components:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    tokenizers: tuple[CLIPTokenizer, CLIPTokenizer]
    text_encoders: tuple[CLIPTextModel, CLIPTextModelWithProjection]
    clip: CLIPModel
    postfuse: PostfuseModule


@functools.lru_cache(maxsize=4)
def load_components(checkpoint: str) -> Components:
    root = Path(checkpoint)
    postfuse_config = json.loads((root / "postfuse_module" / "config.json").read_text())
    postfuse = PostfuseModule(postfuse_config["embed_dim"], postfuse_config["embed_dim_img"])
    postfuse.load_state_dict(load_file(root / "postfuse_module" / "model.safetensors"), strict=True)
    parts = Components(
        unet=UNet2DConditionModel.from_pretrained(root / "unet"),
        vae=AutoencoderKL.from_pretrained(root / "vae"),
        tokenizers=(CLIPTokenizer.from_pretrained(root / "tokenizer"),
                    CLIPTokenizer.from_pretrained(root / "tokenizer_2")),
        text_encoders=(CLIPTextModel.from_pretrained(root / "text_encoder"),
                       CLIPTextModelWithProjection.from_pretrained(root / "text_encoder_2")),
        clip=CLIPModel.from_pretrained(root / "image_prompt_encoder"),
        postfuse=postfuse,
    )
    for module in (parts.unet, parts.vae, *parts.text_encoders, parts.clip, parts.postfuse):
        module.float().eval().requires_grad_(False)
    return parts


def attention_layer(unet: UNet2DConditionModel):
    """The one cross-attention layer whose token-5 probabilities ObjectClear reads as the object+effect map."""
    return unet.down_blocks[1].attentions[0].transformer_blocks[0].attn2


# ---------------------------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class ReferenceResult:
    image: Image.Image  # RGB, original size
    mask: Image.Image  # "L", 0/255, original size: the hard attention mask AGF used
    size: tuple[int, int]  # (W, H) the model ran at
    prompt_embeds: torch.Tensor  # (1, 77, D) conditional row, token 5 already replaced
    pooled_embeds: torch.Tensor  # (1, P)
    object_token: torch.Tensor  # (1, D)
    timesteps: torch.Tensor
    attention_map: torch.Tensor  # (H/8, W/8), min-max normalised to [0, 1]
    generated: np.ndarray  # (H, W, 3) uint8 VAE output before fusion


def objectclear_reference(checkpoint: str | Path, image: Image.Image, mask: Image.Image, seed: int, steps: int,
                          guidance_scale: float, short_side: int) -> tuple[Image.Image, Image.Image]:
    """Returns (output RGB image, attention-guided mask "L" 0/255), both at the input image's size."""
    result = run_objectclear_reference(checkpoint, image, mask, seed, steps, guidance_scale, short_side)
    return result.image, result.mask


@torch.no_grad()
def run_objectclear_reference(checkpoint: str | Path, image: Image.Image, mask: Image.Image, seed: int, steps: int,
                              guidance_scale: float, short_side: int) -> ReferenceResult:
    """Same as objectclear_reference, plus the intermediates a parity test may want to compare."""
    parts = load_components(str(checkpoint))
    original_size = image.size

    image, mask = resize_inputs(image, mask, short_side)
    width, height = image.size
    init_image, binary_mask = to_tensors(image, mask)

    prompt_embeds, pooled = encode_prompt(parts)
    object_token = encode_object(parts, init_image, binary_mask)
    prompt_embeds = prompt_embeds.clone()
    prompt_embeds[:, OBJECT_TOKEN_INDEX] = object_token

    generator = torch.Generator().manual_seed(seed)
    image_latents, noise, masked_image_latents = prepare_latents(parts.vae, init_image, generator)

    scheduler = EulerDiscreteScheduler.from_pretrained(checkpoint, subfolder="scheduler")
    scheduler.set_timesteps(steps)
    latent_mask = F.interpolate(binary_mask, size=noise.shape[-2:])  # nearest, as the pipeline does
    latents, attention_map = denoise(parts.unet, scheduler, noise, image_latents, masked_image_latents, latent_mask,
                                     prompt_embeds, pooled, guidance_scale, height, width)

    generated = decode(parts.vae, latents)
    original = np.asarray(image)
    fused, hard_mask = attention_guided_fusion(original, generated, (attention_map.numpy() * 255).astype(np.uint8))

    out_image = Image.fromarray(fused)
    out_mask = Image.fromarray((hard_mask * 255).astype(np.uint8))
    if out_image.size != original_size:
        out_image = out_image.resize(original_size, Image.Resampling.BICUBIC)
        out_mask = out_mask.resize(original_size, Image.Resampling.NEAREST)
    return ReferenceResult(out_image, out_mask.convert("L"), (width, height), prompt_embeds, pooled, object_token,
                           scheduler.timesteps, attention_map, generated)


# ---------------------------------------------------------------------------------------------------------------
# Steps, in the order the main function calls them
# ---------------------------------------------------------------------------------------------------------------

def resized_size(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """ObjectClear's resize_by_short_side: never upscale a small image, always land on multiples of 16."""
    def ceil16(x: int) -> int:
        return math.ceil(x / 16) * 16

    w, h = size
    if min(w, h) < short_side:
        return ceil16(w), ceil16(h)
    if w < h:
        return ceil16(short_side), ceil16(int(h * short_side / w))
    return ceil16(int(w * short_side / h)), ceil16(short_side)


def resize_inputs(image: Image.Image, mask: Image.Image, short_side: int) -> tuple[Image.Image, Image.Image]:
    image, mask = image.convert("RGB"), mask.convert("L")
    size = resized_size(image.size, short_side)
    # Always resize, even to the same size: that is what the original does, and PIL returns a copy either way.
    return image.resize(size, Image.Resampling.BICUBIC), mask.resize(size, Image.Resampling.NEAREST)


def to_tensors(image: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    init_image = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    mask_values = torch.from_numpy(np.array(mask))[None, None].float() / 255
    return init_image, (mask_values >= 0.5).float()


def encode_prompt(parts: Components) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard SDXL prompt encoding: penultimate hidden states of both encoders side by side, pooled from #2."""
    hidden = []
    for tokenizer, encoder in zip(parts.tokenizers, parts.text_encoders):
        ids = tokenizer(PROMPT, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        output = encoder(ids, output_hidden_states=True)
        hidden.append(output.hidden_states[-2])
    pooled = output.text_embeds  # the last encoder is the one with the projection
    return torch.cat(hidden, dim=-1), pooled


def encode_object(parts: Components, init_image: torch.Tensor, binary_mask: torch.Tensor) -> torch.Tensor:
    """The object token: CLIP of the whole frame with the background zeroed (mid-grey in [-1, 1]).

    The CLIP normalisation is applied to [-1, 1] values on purpose: the released pipeline does so (section 4).
    """
    obj = init_image * (binary_mask > 0.5)
    obj = F.interpolate(obj, size=(CLIP_SIZE, CLIP_SIZE), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    pooled = parts.clip.vision_model(pixel_values=(obj - mean) / std).pooler_output
    return parts.postfuse(parts.clip.visual_projection(pooled))


def prepare_latents(vae: AutoencoderKL, init_image: torch.Tensor,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three draws from one generator, in the pipeline's order: image latents, noise, "masked" image latents.

    The "masked" image is the full, unmasked frame (section 3.2), so the two latents are two posterior samples of
    the same image; only the random draws differ.
    """
    scale = vae.config.scaling_factor
    image_latents = scale * vae.encode(init_image).latent_dist.sample(generator=generator)
    noise = torch.randn(image_latents.shape, generator=generator)
    masked_image_latents = scale * vae.encode(init_image).latent_dist.sample(generator=generator)
    return image_latents, noise, masked_image_latents


def denoise(unet, scheduler, noise, image_latents, masked_image_latents, latent_mask, prompt_embeds, pooled,
            guidance_scale, height, width) -> tuple[torch.Tensor, torch.Tensor]:
    """The Euler loop with ObjectClear's two extras: the background reset after step 0 and the last-step map."""
    cfg = guidance_scale > 1
    if cfg:  # row 0 unconditional (all zeros: force_zeros_for_empty_prompt), row 1 conditional
        encoder_states = torch.cat([torch.zeros_like(prompt_embeds), prompt_embeds])
        text_embeds = torch.cat([torch.zeros_like(pooled), pooled])
    else:
        encoder_states, text_embeds = prompt_embeds, pooled
    batch = encoder_states.shape[0]
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32).repeat(batch, 1)
    conditioning = torch.cat([latent_mask, masked_image_latents], dim=1).repeat(batch, 1, 1, 1)

    latents = noise * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    attention_map = None
    for i, t in enumerate(timesteps):
        last = i == len(timesteps) - 1
        x = scheduler.scale_model_input(torch.cat([latents] * batch), t)
        sample = torch.cat([x, conditioning], dim=1)  # [noisy 4 | mask 1 | image latents 4]
        with capture_attention_probs(attention_layer(unet), enabled=last) as captured:
            eps = unet(sample, t, encoder_hidden_states=encoder_states,
                       added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}).sample
        if cfg:
            uncond, cond = eps.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
        latents = scheduler.step(eps, t, latents, return_dict=False)[0]

        if i == 0 and len(timesteps) > 1:
            # "Adaptive strength": restart the background from the real image at the next noise level, once.
            background = scheduler.add_noise(image_latents, noise, timesteps[1:2])
            latents = (1 - latent_mask) * background + latent_mask * latents
        if last:
            attention_map = attention_map_from_probs(captured, attention_layer(unet).heads, latents.shape[-2:],
                                                     row=1 if cfg else 0)
    return latents, attention_map


class capture_attention_probs:
    """Context manager: while enabled, run `attn` with the classic processor and record its softmax probabilities.

    The default SDPA processor never materialises the probabilities, hence the temporary processor swap. Both the
    processor and the method are restored on exit, so later calls are the stock UNet again.
    """

    def __init__(self, attn, enabled: bool):
        self.attn, self.enabled, self.probs = attn, enabled, []

    def __enter__(self) -> list[torch.Tensor]:
        if self.enabled:
            self.saved_processor = self.attn.processor
            original = self.attn.get_attention_scores

            def recording(*args, **kwargs):
                probs = original(*args, **kwargs)
                self.probs.append(probs)
                return probs

            self.attn.set_processor(AttnProcessor())
            self.attn.get_attention_scores = recording  # instance attribute shadows the class method
        return self.probs

    def __exit__(self, *exc) -> None:
        if self.enabled:
            del self.attn.get_attention_scores
            self.attn.set_processor(self.saved_processor)


def attention_map_from_probs(captured: list[torch.Tensor], heads: int, latent_size, row: int) -> torch.Tensor:
    if len(captured) != 1:
        raise RuntimeError(f"expected one attention capture in the last UNet call, got {len(captured)}")
    probs = captured[0][:, :, OBJECT_TOKEN_INDEX]  # (B*heads, h2*w2)
    h2, w2 = latent_size[0] // 2, latent_size[1] // 2
    maps = probs.reshape(-1, heads, h2, w2).mean(dim=1, keepdim=True)
    maps = F.interpolate(maps, size=tuple(latent_size), mode="bilinear", align_corners=False)
    lo = maps.amin(dim=(2, 3), keepdim=True)
    hi = maps.amax(dim=(2, 3), keepdim=True)
    maps = (maps - lo) / (hi - lo + 1e-8)
    return maps[row, 0]


def decode(vae: AutoencoderKL, latents: torch.Tensor) -> np.ndarray:
    image = vae.decode(latents / vae.config.scaling_factor).sample
    image = (image / 2 + 0.5).clamp(0, 1)
    return (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


# ---------------------------------------------------------------------------------------------------------------
# Attention-guided fusion (section 3.5), numpy/cv2/scipy on the CPU like the original
# ---------------------------------------------------------------------------------------------------------------

_BINOMIAL = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64) / 16


def attention_guided_fusion(original: np.ndarray, generated: np.ndarray,
                            attn_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (fused uint8 image, hard mask A_up in {0, 1} at image size).

    Inside the feathered object+effect region the diffusion output wins; elsewhere the original's high
    frequencies carry the generated image's low frequencies, which hides colour drift at the seam.
    Computed in float64 throughout.
    """
    hard = (attn_u8 > ATTN_THRESHOLD).astype(np.float64)
    hard_up = np.repeat(np.repeat(hard, VAE_SCALE, axis=0), VAE_SCALE, axis=1)
    if hard_up.shape != original.shape[:2]:
        raise ValueError(f"attention map {attn_u8.shape} does not tile the image {original.shape[:2]}")
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (21, 21))
    feather = cv2.GaussianBlur(cv2.dilate(hard_up, kernel, iterations=1), (9, 9), 2)
    soft = np.clip(np.maximum(hard_up, feather), 0, 1)[..., None]

    keep = 1 - hard_up[..., None]
    background_o = original * keep
    background_g = generated * keep
    if original.shape[0] % 8 or original.shape[1] % 8:
        # The original reflect-pads to a multiple of 8 here; model sizes are multiples of 16, so it never does.
        raise ValueError(f"image size {original.shape[:2]} is not a multiple of 8")
    wavelet = np.clip(high_freq(background_o / 255) + low_freq(background_g / 255), 0, 1) * 255
    wavelet = wavelet.astype(np.uint8)
    fused = (wavelet * (1 - soft) + generated * soft).astype(np.uint8)
    return fused, hard_up


def low_freq(x: np.ndarray) -> np.ndarray:
    for radius in (1, 2, 4, 8, 16):
        x = _binomial_blur(x, radius)
    return x


def high_freq(x: np.ndarray) -> np.ndarray:
    return x - low_freq(x)


def _binomial_blur(x: np.ndarray, radius: int) -> np.ndarray:
    channels = []
    for c in range(x.shape[-1]):
        y = ndimage.convolve(x[..., c], _BINOMIAL, mode="nearest")
        if radius > 1:
            y = ndimage.zoom(ndimage.zoom(y, 1 / radius, order=1), radius, order=1)
            if y.shape != x.shape[:2]:
                raise ValueError(f"zoom round trip at radius {radius} changed {x.shape[:2]} to {y.shape}")
        channels.append(y)
    return np.stack(channels, axis=-1)
