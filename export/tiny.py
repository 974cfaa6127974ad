"""Tiny, seeded, random-initialised checkpoints of the real architecture classes, saved with `save_pretrained`.

They are the embedded default for the demo, the tests and CI (no machine of this project can download real
weights). Each folder has the layout of its Hugging Face original, so the exporters load it exactly as they would
load `jixin0101/ObjectClear` and anyone can open it with diffusers/transformers.

Default location: artifacts/tiny/<model>/ (see TINY_ROOT).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from torch import nn
from transformers import (CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection,
                          CLIPTokenizer)

from export.postfuse import PostfuseModule

TINY_ROOT = Path(__file__).resolve().parent.parent / "artifacts" / "tiny"
OBJECTCLEAR_PROMPT = "remove the instance of object"

# The real architectures (ObjectClear's unet/ and vae/ configs: SDXL-inpainting), and the tiny ones scaled down from
# them with the structure (block types, 9 input channels, text_time embedding) unchanged.
SDXL_INPAINT_UNET = dict(
    sample_size=128, in_channels=9, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)
SDXL_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, sample_size=1024,
    scaling_factor=0.13025,
)
CROSS_DIM = 64  # real 2048 = CLIP-L 768 + bigG 1280
TEXT_DIM = CROSS_DIM // 2
POOLED_DIM = 32  # real 1280
TIME_EMBED_DIM = 8  # real 256
UNET_CONFIG = dict(
    SDXL_INPAINT_UNET, sample_size=32, block_out_channels=(32, 64, 128), transformer_layers_per_block=(1, 1, 2),
    attention_head_dim=(1, 4, 8), cross_attention_dim=CROSS_DIM, addition_time_embed_dim=TIME_EMBED_DIM,
    projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + POOLED_DIM,
)
VAE_CONFIG = dict(SDXL_VAE, block_out_channels=(16, 32, 64, 64), layers_per_block=1, norm_num_groups=8,
                  sample_size=256, force_upcast=False)
CLIP_VISION = dict(image_size=224, patch_size=14, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                   num_attention_heads=4, hidden_act="quick_gelu")
CLIP_PROJECTION_DIM = 24  # real 768
TEXT_ENCODER = dict(hidden_size=TEXT_DIM, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=77, hidden_act="quick_gelu")
SCHEDULER_CONFIG = dict(  # ObjectClear's scheduler/scheduler_config.json
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="epsilon", timestep_spacing="leading", steps_offset=1, interpolation_type="linear",
    use_karras_sigmas=False,
)
ATTN_LAYER = "down_blocks.1.attentions.0.transformer_blocks.0.attn2"


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE (GPT-2/CLIP) uses for raw bytes."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def save_tiny_clip_tokenizer(folder: Path, words: list[str], pad_token: str) -> CLIPTokenizer:
    """A real CLIPTokenizer whose BPE knows every byte plus whole-word merges for `words` (the prompt's words)."""
    base = _bytes_to_unicode()
    vocab = base + [c + "</w>" for c in base]
    merges = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            if pieces[0] not in vocab:
                vocab.append(pieces[0])
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token=pad_token,
                              model_max_length=77)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


# A larger UNet for CPU benchmarks, where the denoising loop must dominate the request as it does at full size
# (each call >= 50 ms on 2 cores even at ultra_fast's latent size); everything else stays tiny.
BENCH_UNET_CONFIG = dict(UNET_CONFIG, block_out_channels=(64, 128, 256), transformer_layers_per_block=(1, 2, 2),
                         attention_head_dim=(2, 4, 8))


def build_tiny_objectclear(folder: Path, seed: int = 0, unet_config: dict = UNET_CONFIG) -> Path:
    """Write a tiny checkpoint in ObjectClear's Hugging Face layout (jixin0101/ObjectClear) to `folder`."""
    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_config)
    # Random init gives a flat token-5 softmax (p ~ 1/77 everywhere): sharpen the probed layer so the attention map,
    # and therefore the attention-guided fusion, varies across the image as it does with trained weights.
    probed = unet.get_submodule(ATTN_LAYER)
    with torch.no_grad():
        probed.to_q.weight.mul_(4.0)
        probed.to_k.weight.mul_(4.0)
    unet.save_pretrained(folder / "unet")
    torch.manual_seed(seed + 1)
    AutoencoderKL(**VAE_CONFIG).save_pretrained(folder / "vae")
    torch.manual_seed(seed + 2)
    clip_config = CLIPConfig(text_config=dict(TEXT_ENCODER), vision_config=dict(CLIP_VISION),
                             projection_dim=CLIP_PROJECTION_DIM)
    CLIPModel(clip_config).save_pretrained(folder / "image_prompt_encoder")
    torch.manual_seed(seed + 3)
    PostfuseModule(embed_dim=CROSS_DIM, embed_dim_img=CLIP_PROJECTION_DIM).save_pretrained(folder / "postfuse_module")
    torch.manual_seed(seed + 4)
    vocab_size = None
    for sub, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        tokenizer = save_tiny_clip_tokenizer(folder / sub, OBJECTCLEAR_PROMPT.split(), pad)
        vocab_size = len(tokenizer)
    special_ids = dict(vocab_size=vocab_size, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                       pad_token_id=vocab_size - 1)
    CLIPTextModel(CLIPTextConfig(**special_ids, **TEXT_ENCODER)).save_pretrained(folder / "text_encoder")
    CLIPTextModelWithProjection(CLIPTextConfig(**special_ids, **TEXT_ENCODER, projection_dim=POOLED_DIM)
                                ).save_pretrained(folder / "text_encoder_2")
    EulerDiscreteScheduler(**SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "ObjectClearPipeline", "_diffusers_version": "0.42.1",
        "force_zeros_for_empty_prompt": True, "requires_aesthetics_score": False,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]}, indent=2))
    return folder


# SAM 3: every size scaled down (reference/sam3.md 4.1), classes and structure unchanged. 112 px -> an 8x8 token grid
# (real: 1008 px, 72x72); every 256-d part is SAM3_WIDTH wide (a multiple of 8 for the mask decoder's GroupNorm(8)).
SAM3_IMAGE = 112
SAM3_WIDTH = 32
SAM3_VIT = dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2,  # head dim 16: divisible by 4 for the 2-D axial RoPE
                image_size=SAM3_IMAGE, patch_size=14, window_size=4, global_attn_indexes=[1], pretrain_image_size=56)
SAM3_TEXT = dict(model_type="clip_text_model", hidden_size=32, intermediate_size=64, projection_dim=32,
                 num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32)
SAM3_PARTS = dict(hidden_size=SAM3_WIDTH, num_attention_heads=2, intermediate_size=64)
SAM3_WORDS = ["a", "the", "of", "and", "dog", "cat", "cup", "person", "car", "red", "visual", "photo"]


def build_tiny_sam3(folder: Path, seed: int = 0) -> Path:
    """Write a tiny `Sam3Model` and its `Sam3Processor` (112 px images, a CLIP BPE tokenizer that knows
    SAM3_WORDS and every byte) to `folder`, in `facebook/sam3`'s layout."""
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    folder = Path(folder)
    tokenizer = save_tiny_clip_tokenizer(folder, SAM3_WORDS, "<|endoftext|>")
    vocab_size = len(tokenizer)
    special_ids = dict(vocab_size=vocab_size, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                       pad_token_id=vocab_size - 1)
    grid = SAM3_IMAGE // SAM3_VIT["patch_size"]
    config = Sam3Config(
        vision_config=dict(backbone_config=dict(SAM3_VIT), fpn_hidden_size=SAM3_WIDTH,
                           backbone_feature_sizes=[[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]]),
        text_config=dict(SAM3_TEXT, **special_ids),
        geometry_encoder_config=dict(SAM3_PARTS, num_layers=1),
        detr_encoder_config=dict(SAM3_PARTS, num_layers=1),
        detr_decoder_config=dict(SAM3_PARTS, num_layers=2, num_queries=8),
        mask_decoder_config=dict(hidden_size=SAM3_WIDTH, num_attention_heads=2),
    )
    torch.manual_seed(seed)
    model = Sam3Model(config)
    with torch.no_grad():
        # transformers draws every weight with std 0.02, which at these widths shrinks each layer's signal ~10x: the
        # scores, boxes and presence then hardly depend on the image (a noise photo moved scores by < 1.4e-4) and
        # FPN level 0 barely reaches the masks, so a dropped or swapped hand-off would pass the parity tests.
        # Fan-in scaled weights (std 1/sqrt(fan in), variance-preserving, as trained layers roughly are) make every
        # input count: tests/test_sam3_sensitivity.py measures each hand-off against the parity tolerances.
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                module.weight.normal_(0.0, module.weight[0].numel() ** -0.5)
        # The score is sigmoid(query logit) * sigmoid(presence logit): a confident presence token (+3) lifts some
        # queries over the 0.3 threshold and leaves others under it, so post-processing filters as with trained
        # weights (a random presence token scores every query under it).
        model.detr_decoder.presence_head.layer3.bias.add_(3.0)
    model.save_pretrained(folder)
    image_processor = Sam3ImageProcessor(size={"height": SAM3_IMAGE, "width": SAM3_IMAGE},
                                         mask_size={"height": 4 * grid, "width": 4 * grid})
    Sam3Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


# FLUX.1: diffusers' own test sizes (tests/pipelines/flux/test_pipeline_flux.py) for the transformer and CLIP, a
# written-out tiny T5 v1.1 (gated-gelu) and a "Flux-style" VAE with the real 16 latent channels and 8x scale, so
# packing sees the real 64 (Fill: 384) channels (reference/flux.md 2.1). Every variant gets the same text encoders,
# tokenizers and VAE (same seeds), as the real FLUX.1 family shares them.
FLUX_WIDTH = 32  # joint_attention_dim = CLIP hidden = pooled_projection_dim = T5 d_model (real 4096 / 768)
FLUX_TRANSFORMER = dict(patch_size=1, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                        joint_attention_dim=FLUX_WIDTH, pooled_projection_dim=FLUX_WIDTH, axes_dims_rope=[4, 4, 8])
FLUX_VARIANTS = {  # variant: (in_channels, guidance_embeds, FlowMatchEulerDiscreteScheduler shift options)
    "schnell": (64, False, dict(shift=1.0, use_dynamic_shifting=False)),
    "dev": (64, True, dict(shift=3.0, use_dynamic_shifting=True)),
    "fill": (384, True, dict(shift=3.0, use_dynamic_shifting=True)),  # 64 noisy + 64 masked-image + 256 mask
}
FLUX_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 16, 16, 16), layers_per_block=1,
                latent_channels=16, norm_num_groups=8, sample_size=64, use_quant_conv=False,
                use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611)
FLUX_WORDS = "a photo of cat dog holding sign that says hello world on the moon empty background".split()


def save_tiny_t5_tokenizer(folder: Path, words: list[str]):
    """A real (Unigram) T5Tokenizer: whole-word pieces for `words`, single letters and digits for anything else."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + w, -1.0) for w in words]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def build_tiny_flux(folder: Path, variant: str = "schnell", seed: int = 0,
                    transformer_config: dict = FLUX_TRANSFORMER) -> Path:
    """Write a complete tiny FluxPipeline ("schnell", "dev") or FluxFillPipeline ("fill") folder with
    `save_pretrained`, loadable by diffusers' `from_pretrained` like black-forest-labs/FLUX.1-*."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    in_channels, guidance_embeds, shift = FLUX_VARIANTS[variant]
    folder = Path(folder)
    tokenizer = save_tiny_clip_tokenizer(folder / "tokenizer", FLUX_WORDS, "<|endoftext|>")
    tokenizer_2 = save_tiny_t5_tokenizer(folder / "tokenizer_2", FLUX_WORDS)
    clip_ids = dict(vocab_size=len(tokenizer), bos_token_id=len(tokenizer) - 2, eos_token_id=len(tokenizer) - 1,
                    pad_token_id=len(tokenizer) - 1)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**clip_ids, hidden_size=FLUX_WIDTH, intermediate_size=37,
                                                num_hidden_layers=2, num_attention_heads=4, projection_dim=FLUX_WIDTH,
                                                hidden_act="gelu"))
    torch.manual_seed(seed + 1)
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), d_model=FLUX_WIDTH, d_ff=37, d_kv=8,
                                             num_heads=4, num_layers=2, relative_attention_num_buckets=8,
                                             feed_forward_proj="gated-gelu", is_encoder_decoder=False,
                                             use_cache=False, dropout_rate=0.0))
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(**FLUX_VAE)
    torch.manual_seed(seed + 3)
    transformer = FluxTransformer2DModel(in_channels=in_channels, out_channels=64, guidance_embeds=guidance_embeds,
                                         **transformer_config)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096, **shift)
    pipeline_class = FluxFillPipeline if variant == "fill" else FluxPipeline
    pipeline_class(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                   text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer
                   ).save_pretrained(str(folder))
    return folder
