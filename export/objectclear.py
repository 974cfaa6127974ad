"""ObjectClear: the four served networks, their export descriptions, and the constant prompt conditioning.

Source: a Hugging Face id or local folder in ObjectClear's layout (`jixin0101/ObjectClear`), or the tiny checkpoint.
Writes into the model repository:
  objectclear_unet/1/model.onnx            9-channel SDXL-inpainting UNet + the token-5 attention output
  objectclear_vae_encoder/1/model.onnx     image in [-1, 1] -> posterior mean and log-variance (unscaled)
  objectclear_vae_decoder/1/model.onnx     latents / scaling_factor -> image in [-1, 1]
  objectclear_object_encoder/1/model.onnx  224x224 mask-zeroed frame -> CLIP vision -> projection -> postfuse row
  objectclear_inpaint/1/conditioning.npz   constant prompt embeddings, scheduler config, scaling factor
  remove_object/1/conditioning.npz         the same, for the SAM 3 -> ObjectClear pipeline
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from torch import nn
from torch.export import Dim
from transformers import CLIPModel, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from export.onnx_export import MAX_BATCH, ComponentSpec, ExportReport, NetworkWrapper, export_networks, seeded
from export.postfuse import PostfuseModule
from export.vae import LATENT_RANGE, vae_specs

PROMPT = "remove the instance of object"
OBJECT_TOKEN_INDEX = 5  # "object" in "<bos> remove the instance of object <eos>"
PROBED_LAYER = "down_blocks.1.attentions.0.transformer_blocks.0.attn2"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SERVING_MODELS = ["objectclear_inpaint", "remove_object"]  # python-backend models that run the denoising loop


@dataclass
class ObjectClearModels:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    clip: CLIPModel
    postfuse: PostfuseModule
    text_encoders: tuple[CLIPTextModel, CLIPTextModelWithProjection]
    tokenizers: tuple[CLIPTokenizer, CLIPTokenizer]
    scheduler_config: dict


def weights(folder: Path) -> dict:
    """from_pretrained's arguments for one component folder: the fp32 file, which the Hub repository has beside its
    fp16 variant (the master, from which the parity reference and any --dtype cast are made), or the fp16 variant
    read upcast when it is all a folder holds (a download filtered to it, as ObjectClear's own --use_fp16 does)."""
    names = {path.name for path in Path(folder).glob("*.safetensors")}
    if names and all(name.endswith(".fp16.safetensors") for name in names):
        print(f"{folder}: only the fp16 variant is present; reading it upcast to fp32", flush=True)
        return dict(dtype=torch.float32, variant="fp16")
    return dict(dtype=torch.float32)


def load_objectclear(folder: Path) -> ObjectClearModels:
    folder = Path(folder)
    return ObjectClearModels(
        unet=UNet2DConditionModel.from_pretrained(folder / "unet", **weights(folder / "unet")).eval(),
        vae=AutoencoderKL.from_pretrained(folder / "vae", **weights(folder / "vae")).eval(),
        clip=CLIPModel.from_pretrained(folder / "image_prompt_encoder",
                                       **weights(folder / "image_prompt_encoder")).eval(),
        postfuse=PostfuseModule.from_pretrained(folder / "postfuse_module"),
        text_encoders=(CLIPTextModel.from_pretrained(folder / "text_encoder", **weights(folder / "text_encoder")).eval(),
                       CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2",
                                                                   **weights(folder / "text_encoder_2")).eval()),
        tokenizers=(CLIPTokenizer.from_pretrained(folder / "tokenizer"),
                    CLIPTokenizer.from_pretrained(folder / "tokenizer_2")),
        scheduler_config=dict(EulerDiscreteScheduler.load_config(folder, subfolder="scheduler")),
    )


# --------------------------------------------------------------------------------------------------------------------
# Export wrappers: plain diffusers/transformers modules, only re-plumbed so the graph has the inputs/outputs we serve
# --------------------------------------------------------------------------------------------------------------------
def token_attention(attn: nn.Module, hidden_states: torch.Tensor, context: torch.Tensor, token: int) -> torch.Tensor:
    """Head mean of the cross-attention probabilities softmax(QK^T * scale) for one key token -> (B, N).

    The same numbers ObjectClear reads from the classic attention processor on its last step; computed here as an
    explicit side branch because the fused SDPA kernel never materialises the probabilities. Only size-free
    reshapes (unflatten with -1) so batch and token counts stay symbolic."""
    q = attn.to_q(hidden_states).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
    k = attn.to_k(context).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * attn.scale
    return scores.softmax(dim=-1)[..., token].mean(dim=1)


class UNetWithObjectAttention(NetworkWrapper):
    """noise_pred plus `obj_attn` (B, 1, h/2, w/2), the token-5 attention of the probed layer, in one graph.

    Two forward pre-hooks do the re-plumbing without touching diffusers code:
    * every up block gets `upsample_size` = the size of its matching down-block input. Diffusers only passes it
      when a latent side is not a multiple of 4; a graph traced without it hard-codes x2 upsampling and breaks at
      such sides (a 688 px side gives 86 latents). `num_upsamplers = 0` removes the `side % 4` branch (and the
      shape guard torch.export would otherwise add).
    * the probed attention layer computes `token_attention` from its own inputs; its real output still comes
      from the stock processor.
    """

    def __init__(self, unet: UNet2DConditionModel):
        super().__init__(unet=unet)
        self.unet = unet
        self._seen: dict = {}
        down, up = unet.down_blocks, unet.up_blocks
        for k, block in enumerate(down):
            block.register_forward_pre_hook(self._remember(("down", k)), with_kwargs=True)
        for i, block in enumerate(up[:-1]):  # the last up block has no upsampler
            block.register_forward_pre_hook(self._upsample_to(("down", len(down) - 2 - i)), with_kwargs=True)
        unet.num_upsamplers = 0
        probed = unet.get_submodule(PROBED_LAYER)
        probed_grid = unet.get_submodule(PROBED_LAYER.rsplit(".transformer_blocks", 1)[0])
        probed_grid.register_forward_pre_hook(self._remember("grid"), with_kwargs=True)
        probed.register_forward_pre_hook(self._probe, with_kwargs=True)

    @staticmethod
    def _hidden(args, kwargs) -> torch.Tensor:
        return kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    def _remember(self, key):
        def hook(module, args, kwargs):
            self._seen[key] = self._hidden(args, kwargs).shape[-2:]
        return hook

    def _upsample_to(self, key):
        def hook(module, args, kwargs):
            kwargs["upsample_size"] = self._seen[key]
            return args, kwargs
        return hook

    def _probe(self, module, args, kwargs):
        self._seen["attn"] = token_attention(module, self._hidden(args, kwargs), kwargs["encoder_hidden_states"],
                                             OBJECT_TOKEN_INDEX)

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids):
        noise_pred = self.unet(sample, timestep, encoder_hidden_states,
                               added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids},
                               return_dict=False)[0]
        h2, w2 = self._seen["grid"]
        return noise_pred, self._seen["attn"].unflatten(1, (h2, w2)).unsqueeze(1)


class ObjectEncoder(NetworkWrapper):
    """CLIP-normalise -> CLIP vision pooled -> visual projection -> postfuse MLP: one prompt-token row.

    The antialiased 224 px resize stays in the pipeline: its ONNX Resize does not match torch reliably."""

    def __init__(self, clip: CLIPModel, postfuse: PostfuseModule):
        super().__init__(clip=clip, postfuse=postfuse)
        self.vision, self.projection, self.postfuse = clip.vision_model, clip.visual_projection, postfuse
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels):
        pooled = self.vision(pixel_values=(pixels - self.mean) / self.std)[1]
        return self.postfuse.fuse_fn(self.projection(pooled))


# --------------------------------------------------------------------------------------------------------------------
# Declarative descriptions
# --------------------------------------------------------------------------------------------------------------------
def component_specs(models: ObjectClearModels) -> list[tuple[ComponentSpec, NetworkWrapper]]:
    unet_cfg = models.unet.config
    cross_dim = unet_cfg.cross_attention_dim
    pooled_dim = unet_cfg.projection_class_embeddings_input_dim - 6 * unet_cfg.addition_time_embed_dim
    latent_channels = models.vae.config.latent_channels
    batch = Dim("batch", min=1, max=MAX_BATCH)
    latent_h, latent_w = Dim("latent_h", **LATENT_RANGE), Dim("latent_w", **LATENT_RANGE)

    def unet_inputs(b, h, w, seed=0):
        g = seeded(seed)
        sample = torch.randn(b, unet_cfg.in_channels, h, w, generator=g)
        sample[:, latent_channels] = (torch.rand(b, h, w, generator=g) > 0.5).float()  # the latent mask channel
        return (sample, torch.linspace(951.0, 1.0, b), torch.randn(b, 77, cross_dim, generator=g),
                torch.randn(b, pooled_dim, generator=g), torch.tensor([[8.0 * h, 8.0 * w, 0, 0, 8.0 * h, 8.0 * w]] * b))

    unet = ComponentSpec(
        name="objectclear_unet",
        input_names=["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"],
        output_names=["noise_pred", "obj_attn"],
        dynamic_shapes={"sample": {0: batch, 2: latent_h, 3: latent_w}, "timestep": {0: batch},
                        "encoder_hidden_states": {0: batch}, "text_embeds": {0: batch}, "time_ids": {0: batch}},
        axis_names={"sample": {0: "batch", 2: "latent_h", 3: "latent_w"}, "timestep": {0: "batch"},
                    "encoder_hidden_states": {0: "batch"}, "text_embeds": {0: "batch"}, "time_ids": {0: "batch"}},
        dummy_inputs=lambda: unet_inputs(2, 64, 64),
        # 38x58 and 64x86: latent sides that are not multiples of 4 (a 688 px side gives 86)
        check_inputs=lambda: [unet_inputs(1, 38, 58, 1), unet_inputs(2, 64, 86, 2), unet_inputs(3, 16, 24, 3)],
        tolerance=1e-4,
        external_data=True,
    )
    object_encoder = ComponentSpec(
        name="objectclear_object_encoder",
        input_names=["pixels"], output_names=["object_token"],
        dynamic_shapes={"pixels": {0: batch}},
        axis_names={"pixels": {0: "batch"}},
        dummy_inputs=lambda: (torch.rand(2, 3, 224, 224, generator=seeded(0)) * 2 - 1,),
        check_inputs=lambda: [(torch.rand(1, 3, 224, 224, generator=seeded(1)) * 2 - 1,),
                              (torch.rand(3, 3, 224, 224, generator=seeded(2)) * 2 - 1,)],
        tolerance=1e-4,
    )
    return [(unet, UNetWithObjectAttention(models.unet)), *vae_specs("objectclear", models.vae),
            (object_encoder, ObjectEncoder(models.clip, models.postfuse))]


# --------------------------------------------------------------------------------------------------------------------
# Constant conditioning: the prompt never changes, so the text encoders are not served
# --------------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def prompt_conditioning(models: ObjectClearModels) -> dict[str, np.ndarray]:
    """SDXL prompt encoding: penultimate hidden states of both CLIP text encoders side by side, plus the pooled
    projection of the second."""
    hidden, pooled = [], None
    for tokenizer, encoder in zip(models.tokenizers, models.text_encoders):
        ids = tokenizer(PROMPT, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        out = encoder(ids, output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled = out[0]
    return {"prompt_embeds": torch.cat(hidden, dim=-1).numpy(), "pooled_prompt_embeds": pooled.numpy()}


def export_objectclear(source: Path, repository: Path, dtype: torch.dtype = torch.float32,
                       device: str = "cpu") -> list[ExportReport]:
    models = load_objectclear(source)
    conditioning = prompt_conditioning(models)  # in fp32, before the networks are cast
    reports = export_networks(component_specs(models), repository, dtype, device)
    for model_name in SERVING_MODELS:
        (repository / model_name / "1").mkdir(parents=True, exist_ok=True)
        np.savez(repository / model_name / "1" / "conditioning.npz", **conditioning,
                 scheduler_config=json.dumps(models.scheduler_config),
                 vae_scaling_factor=np.float32(models.vae.config.scaling_factor),
                 object_token_index=np.int64(OBJECT_TOKEN_INDEX))
    return reports
