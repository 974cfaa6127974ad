"""FLUX.1: the served networks, their export descriptions, and the configs the serving pipelines read.

Source: a diffusers pipeline folder or Hugging Face id (black-forest-labs/FLUX.1-schnell, -dev, -Fill-dev), or a
tiny one (export/tiny.py). Writes into the model repository:
  flux_clip_text_encoder/1/model.onnx   input_ids (B, 77) -> pooled_embeds (B, 768)
  flux_t5_encoder/1/model.onnx          input_ids (B, T) -> text_embeds (B, T, 4096)
  flux_{schnell,dev}_transformer/1/model.onnx   packed latents (+ guidance for dev) -> velocity (B, N, 64)
  flux_fill_transformer/1/model.onnx    (Fill)  the same with 384 input channels
  flux_vae_decoder/1/model.onnx         unscaled latents (B, 16, h, w) -> image in [-1, 1]
  flux_vae_encoder/1/model.onnx         (Fill)  image -> posterior mean and log-variance
  flux_{schnell,dev}_generate/1/pipeline/ or flux_fill_inpaint/1/pipeline/   tokenizers, scheduler/vae/transformer
                                        configs, serving.json (T5 length) -- configs only, no weights
The FLUX.1 family shares its text encoders and VAE, so schnell, dev and Fill write the same networks there, which
every variant's pipeline calls; each variant's transformer and pipeline folder are its own, so all three serve side
by side.
"""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, FluxTransformer2DModel
from torch import nn
from torch.export import Dim
from transformers import T5EncoderModel

from export.onnx_export import MAX_BATCH, ComponentSpec, ExportReport, NetworkWrapper, export_networks, seeded
from export.vae import vae_specs
from pipelines.flux import GENERATORS, T5_LENGTHS, TRANSFORMER_MODELS, image_ids

MAX_TOKENS = (2048 // 16) ** 2  # packed image tokens of a 2048 px square


class ClipPooled(NetworkWrapper):
    """FluxPipeline uses only CLIP's pooled output (no projection head)."""

    def __init__(self, text_encoder: nn.Module):
        super().__init__(text_encoder=text_encoder)
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids=input_ids).pooler_output


class T5Hidden(NetworkWrapper):
    def __init__(self, text_encoder: nn.Module):
        super().__init__(text_encoder=text_encoder)
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids=input_ids).last_hidden_state


class BatchedIdsTransformer(NetworkWrapper):
    """FluxTransformer2DModel with img_ids/txt_ids given per row (B, N, 3) and row 0 used: every input then has a
    leading batch axis, so Triton's dynamic batcher can merge the calls of concurrent requests of one size."""

    def __init__(self, transformer: nn.Module):
        super().__init__(transformer=transformer)
        self.transformer = transformer

    def forward(self, hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids,
                guidance=None):
        return self.transformer(hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                                pooled_projections=pooled_projections, timestep=timestep, img_ids=img_ids[0],
                                txt_ids=txt_ids[0], guidance=guidance, return_dict=False)[0]


@contextlib.contextmanager
def float32_rope():
    """FluxPosEmbed computes RoPE in float64 off mps/npu; TensorRT's ONNX parser has next to no DOUBLE support
    (reference/flux.md 2.4 #4), so trace it in float32. The parity check runs the float64 original."""
    import diffusers.models.transformers.transformer_flux as transformer_flux

    original = transformer_flux.maybe_adjust_dtype_for_device
    transformer_flux.maybe_adjust_dtype_for_device = lambda dtype, device: torch.float32
    try:
        yield
    finally:
        transformer_flux.maybe_adjust_dtype_for_device = original


def token_ids(vocab: int, batch: int, tokens: int, seed: int) -> tuple[torch.Tensor]:
    return (torch.randint(0, vocab, (batch, tokens), generator=seeded(seed)),)


def clip_spec(pipeline) -> tuple[ComponentSpec, NetworkWrapper]:
    length, vocab = pipeline.tokenizer.model_max_length, pipeline.text_encoder.config.vocab_size
    spec = ComponentSpec(
        name="flux_clip_text_encoder", input_names=["input_ids"], output_names=["pooled_embeds"],
        dynamic_shapes={"input_ids": {0: Dim("batch", min=1, max=MAX_BATCH)}}, axis_names={"input_ids": {0: "batch"}},
        dummy_inputs=lambda: token_ids(vocab, 2, length, 0),
        check_inputs=lambda: [token_ids(vocab, 1, length, 1), token_ids(vocab, 3, length, 2)],
        tolerance=1e-4,
    )
    return spec, ClipPooled(pipeline.text_encoder)


def t5_spec(text_encoder_2: nn.Module) -> tuple[ComponentSpec, NetworkWrapper]:
    batch, text, vocab = Dim("batch", min=1, max=MAX_BATCH), Dim("text", min=2, max=512), text_encoder_2.config.vocab_size
    spec = ComponentSpec(
        name="flux_t5_encoder", input_names=["input_ids"], output_names=["text_embeds"],
        dynamic_shapes={"input_ids": {0: batch, 1: text}}, axis_names={"input_ids": {0: "batch", 1: "text"}},
        dummy_inputs=lambda: token_ids(vocab, 2, 64, 0),
        check_inputs=lambda: [token_ids(vocab, 1, 256, 1), token_ids(vocab, 3, 512, 2)],
        tolerance=1e-4,
    )
    return spec, T5Hidden(text_encoder_2)


def transformer_spec(name: str, transformer: nn.Module) -> tuple[ComponentSpec, NetworkWrapper]:
    config = transformer.config
    guidance = config.guidance_embeds
    batch = Dim("batch", min=1, max=MAX_BATCH)
    tokens, text = Dim("tokens", min=2, max=MAX_TOKENS), Dim("text", min=2, max=512)
    names = ["hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids"]
    axes = {"hidden_states": {0: "batch", 1: "tokens"}, "encoder_hidden_states": {0: "batch", 1: "text"},
            "pooled_projections": {0: "batch"}, "timestep": {0: "batch"}, "img_ids": {0: "batch", 1: "tokens"},
            "txt_ids": {0: "batch", 1: "text"}}
    if guidance:
        names.append("guidance")
        axes["guidance"] = {0: "batch"}
    dims = {"batch": batch, "tokens": tokens, "text": text}

    def inputs(b, h, w, t, seed):
        """b rows of an (h x w)-token image and t text tokens, as the pipeline builds them."""
        g = seeded(seed)
        ids = image_ids(2 * h, 2 * w)  # the pipeline's own ids for an (h x w)-token grid
        row = (torch.randn(b, h * w, config.in_channels, generator=g),
               torch.randn(b, t, config.joint_attention_dim, generator=g),
               torch.randn(b, config.pooled_projection_dim, generator=g), torch.linspace(1.0, 0.25, b),
               ids.expand(b, -1, -1).contiguous(), torch.zeros(b, t, 3))
        return row + ((torch.full((b,), 3.5),) if guidance else ())

    spec = ComponentSpec(
        name=name, input_names=names, output_names=["velocity"],
        dynamic_shapes={n: {axis: dims[label] for axis, label in axes[n].items()} for n in names},
        axis_names=axes,
        dummy_inputs=lambda: inputs(2, 4, 6, 16, 0),  # batch >= 2 or torch.export makes it static (flux.md 2.4)
        # 32x32 tokens = a 512 px square; 3x5 an odd-sided 48x80 px; the text lengths of schnell and dev
        check_inputs=lambda: [inputs(1, 32, 32, 256, 1), inputs(3, 3, 5, 512, 2)],
        tolerance=1e-4,
        external_data=True,  # 23.8 GB in bf16 at full size
        export_context=float32_rope,
    )
    return spec, BatchedIdsTransformer(transformer)


def export_flux(source: Path, repository: Path, dtype: torch.dtype = torch.float32,
                device: str = "cpu") -> list[ExportReport]:
    """The small parts first (CLIP, VAE), then T5 (4.8 B parameters), then the transformer (12 B), each large part
    loaded just before its export and released after it: the peak is the largest part, not the pipeline. FLUX
    checkpoints are stored in bf16, so a reduced-precision export loads them in bf16 (losing nothing); its fp32
    reference is computed block by block (export/onnx_export.py: computed_in_fp32)."""
    stored = torch.float32 if dtype == torch.float32 else torch.bfloat16
    on_device = {} if torch.device(device).type == "cpu" else {"device_map": str(device)}
    pipeline = DiffusionPipeline.from_pretrained(source, transformer=None, text_encoder_2=None, dtype=stored)
    variant = flux_variant(FluxTransformer2DModel.load_config(source, subfolder="transformer"), pipeline.vae.config)
    fill = variant == "fill"
    encoder, decoder = vae_specs("flux", pipeline.vae)
    reports = export_networks([clip_spec(pipeline), decoder] + ([encoder] if fill else []), repository, dtype, device)
    text_encoder_2 = T5EncoderModel.from_pretrained(source, subfolder="text_encoder_2", dtype=stored, **on_device)
    reports += export_networks([t5_spec(text_encoder_2)], repository, dtype, device)
    del text_encoder_2
    transformer = FluxTransformer2DModel.from_pretrained(source, subfolder="transformer", dtype=stored,
                                                         **on_device)
    reports += export_networks([transformer_spec(TRANSFORMER_MODELS[variant], transformer)], repository, dtype, device)
    save_pipeline_configs(pipeline, transformer, Path(source), repository / (
        "flux_fill_inpaint" if fill else GENERATORS[variant]) / "1" / "pipeline", T5_LENGTHS[variant])
    return reports


def flux_variant(transformer_config, vae_config) -> str:
    """"fill" (384 input channels: latents, masked image, mask), "dev" (guidance embedding) or "schnell"."""
    if transformer_config["in_channels"] != 4 * vae_config["latent_channels"]:
        return "fill"
    return "dev" if transformer_config["guidance_embeds"] else "schnell"


def save_pipeline_configs(pipeline, transformer: nn.Module, source: Path, folder: Path,
                          max_sequence_length: int) -> None:
    """Tokenizers and configs (no weights) for the serving model, plus the T5 length to pad to (T5_LENGTHS)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pipeline.tokenizer.save_pretrained(str(folder / "tokenizer"))
    pipeline.tokenizer_2.save_pretrained(str(folder / "tokenizer_2"))
    pipeline.scheduler.save_config(str(folder / "scheduler"))
    pipeline.vae.save_config(str(folder / "vae"))
    transformer.save_config(str(folder / "transformer"))
    (folder / "serving.json").write_text(json.dumps({"max_sequence_length": max_sequence_length,
                                                     "source": str(source)}, indent=2))
