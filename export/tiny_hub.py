"""The tiny checkpoints laid out as the five Hugging Face repositories are (export/hub.py): the fixtures CI exports
through `python -m export <pipeline> --source <folder>`, exactly as a user exports the real ones.

Each layout starts from the tiny checkpoint that `save_pretrained` wrote (export/tiny.py) and changes what the Hub
copy has differently: file names, sharded weights with their index files, fp16 variant files beside the fp32 ones,
single-file duplicates, the pipeline class in model_index.json, and the metadata keys and values of every config
(`_class_name`, `_diffusers_version`, `_name_or_path`, `torch_dtype`, EMA bookkeeping, legacy CLIP token ids, ...).
Architecture keys keep their tiny values, and weights keep their fp32 values, so a model loaded from a layout equals
the one loaded from the plain checkpoint (tests/test_hub_layouts.py): the served parity tests, which compare with
the plain checkpoints, then also check the loaders. What cannot be reproduced is listed in NOT_REPRODUCED.

Default location: artifacts/tiny-hub/<repository id>/ (see TINY_HUB_ROOT).
"""
from __future__ import annotations

import json
import shutil
import sys
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from export.hub import HUB
from export.tiny import TINY_ROOT, build_tiny_flux, build_tiny_objectclear, build_tiny_sam3

TINY_HUB_ROOT = TINY_ROOT.parent / "tiny-hub"
NOT_REPRODUCED = {  # files of the real repository the tiny layout lacks, and why
    "tokenizer_2/spiece.model": "writing a SentencePiece model needs the sentencepiece package; transformers 5 reads "
                                "the T5 tokenizer from tokenizer.json, as it does for the real repository",
}
SDXL_INPAINTING = "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"


BUILDERS = {"objectclear": build_tiny_objectclear, "sam3": build_tiny_sam3,
            "flux-schnell": partial(build_tiny_flux, variant="schnell"),
            "flux-dev": partial(build_tiny_flux, variant="dev"), "flux-fill": partial(build_tiny_flux, variant="fill")}


def hub_folder(pipeline: str) -> Path:
    return TINY_HUB_ROOT / HUB[pipeline].repo_id


def build_tiny_hub_folder(pipeline: str) -> Path:
    """The tiny checkpoint, rebuilt in TINY_ROOT/<pipeline> (it always matches export/tiny.py; seconds), and its Hub
    layout in hub_folder(pipeline)."""
    return build_tiny_hub(pipeline, BUILDERS[pipeline](TINY_ROOT / pipeline))


def build_tiny_hub(pipeline: str, plain: Path, folder: Path | None = None) -> Path:
    """Lay the plain tiny checkpoint `plain` out as HUB[pipeline] is, in `folder` (default hub_folder)."""
    folder = Path(folder or hub_folder(pipeline))
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(plain, folder)
    LAYOUTS[pipeline.split("-")[0]](folder, pipeline)
    for name in (".gitattributes", "README.md", "LICENSE"):
        if name in HUB[pipeline].files:
            (folder / name).write_text(f"Tiny random-weight stand-in for {HUB[pipeline].repo_id} "
                                       "(export/tiny_hub.py); the real file belongs to that repository.\n")
    missing, extra = layout_difference(folder, pipeline)
    assert not missing and not extra, f"{pipeline}: layout differs from {HUB[pipeline].repo_id}: {missing} {extra}"
    return folder


def layout_difference(folder: Path, pipeline: str) -> tuple[set[str], set[str]]:
    """(files the repository has that `folder` lacks, files `folder` has that the repository does not)."""
    have = {str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file()}
    want = set(HUB[pipeline].files) - set(NOT_REPRODUCED)
    return want - have, have - want


# --------------------------------------------------------------------------------------------------------------------
# Helpers: configs, tokenizers, weights
# --------------------------------------------------------------------------------------------------------------------
def edit_json(path: Path, set_keys: dict | None = None, drop: tuple[str, ...] = ("dtype",)) -> dict:
    """Rewrite a config with the real repository's metadata: `set_keys` added or overridden, `drop` removed
    (transformers 5 writes `dtype`; the Hub configs carry the older `torch_dtype`)."""
    config = {k: v for k, v in json.loads(path.read_text()).items() if k not in drop}
    config = dict(sorted({**config, **(set_keys or {})}.items()))
    path.write_text(json.dumps(config, indent=2) + "\n")
    return config


def write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")


def added_token(content: str) -> dict:
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True, "rstrip": False,
            "single_word": False}


def clip_tokenizer_files(folder: Path, pad: str, legacy: bool) -> None:
    """A CLIP tokenizer as the Hub repositories store it: vocab.json + merges.txt, special_tokens_map.json and a
    tokenizer_config.json (old `__type: AddedToken` entries for SDXL-era repositories); no tokenizer.json."""
    (folder / "tokenizer.json").unlink()
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    specials = {"bos_token": bos, "eos_token": eos, "pad_token": pad, "unk_token": eos}
    config = {"add_prefix_space": False, "clean_up_tokenization_spaces": True, "do_lower_case": True,
              "errors": "replace", "model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}
    if legacy:
        config |= {name: added_token(value) if name != "pad_token" else value for name, value in specials.items()}
    else:
        vocab = json.loads((folder / "vocab.json").read_text())
        config |= specials | {"added_tokens_decoder": {
            str(vocab[token]): {"content": token, "lstrip": False, "normalized": token == bos, "rstrip": False,
                                "single_word": False, "special": True} for token in (bos, eos)}}
    write_json(folder / "tokenizer_config.json", config)
    write_json(folder / "special_tokens_map.json", specials)


def fp16_variant(folder: Path, weights: str) -> None:
    """The `<name>.fp16.safetensors` file diffusers/transformers write for variant="fp16", beside the fp32 one."""
    stem = weights.removesuffix(".safetensors")
    save_file({k: v.half() for k, v in load_file(str(folder / weights)).items()}, str(folder / f"{stem}.fp16.safetensors"))


def shard(folder: Path, weights: str, count: int) -> None:
    """Split `weights` into `count` files named as save_pretrained names shards, plus the index file."""
    stem = weights.removesuffix(".safetensors")
    tensors = load_file(str(folder / weights))
    (folder / weights).unlink()
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    groups, done = [{} for _ in range(count)], 0
    for name, tensor in tensors.items():  # in order, each shard about total / count bytes
        groups[min(count - 1, done * count // total)][name] = tensor
        done += tensor.numel() * tensor.element_size()
    weight_map = {}
    for index, group in enumerate(groups):
        filename = f"{stem}-{index + 1:05d}-of-{count:05d}.safetensors"
        save_file(group, str(folder / filename), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(group, filename)
    write_json(folder / f"{weights}.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def nan_copy(tensors: dict[str, torch.Tensor], path: Path, rename=lambda name: name) -> None:
    """A duplicate of weights the exporter must never read (BFL single files, Meta's sam3.pt), filled with NaN:
    an exporter that read it fails its parity check instead of passing by luck."""
    nan = {rename(k): torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in tensors.items()}
    if path.suffix == ".pt":
        torch.save({"model": nan}, path)
    else:
        save_file(nan, str(path))


# --------------------------------------------------------------------------------------------------------------------
# The layouts
# --------------------------------------------------------------------------------------------------------------------
def objectclear_layout(folder: Path, pipeline: str) -> None:
    """jixin0101/ObjectClear: an SDXL-inpainting folder saved with diffusers 0.21 / transformers 4.29 plus the two
    modules ObjectClear builds by hand; every weight file has its fp16 variant beside it."""
    sdxl = {"_diffusers_version": "0.21.0.dev0", "_name_or_path": SDXL_INPAINTING}
    write_json(folder / "model_index.json", {
        "_class_name": "ObjectClearPipeline", **sdxl, "_name_or_path": "stabilityai/stable-diffusion-xl-base-1.0",
        "force_zeros_for_empty_prompt": True, "requires_aesthetics_score": False,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]})
    # EMA bookkeeping the training script left in the UNet config
    edit_json(folder / "unet" / "config.json", sdxl | {
        "decay": 0.9999, "inv_gamma": 1.0, "min_decay": 0.0, "optimization_step": 37000, "power": 2 / 3,
        "update_after_step": 0, "use_ema_warmup": False})
    edit_json(folder / "vae" / "config.json", sdxl)
    write_json(folder / "scheduler" / "scheduler_config.json", {
        "_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.21.0.dev0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear",
        "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False,
        "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None,
        "use_karras_sigmas": False})
    for encoder in ("text_encoder", "text_encoder_2"):
        # CLIP's token ids before transformers PR #24773 (eos 2): transformers then pools at the argmax token id
        edit_json(folder / encoder / "config.json", {"_name_or_path": SDXL_INPAINTING, "bos_token_id": 0,
                                                     "eos_token_id": 2, "pad_token_id": 1, "torch_dtype": "float16",
                                                     "transformers_version": "4.29.2"})
    edit_json(folder / "image_prompt_encoder" / "config.json", {
        "_name_or_path": "openai/clip-vit-large-patch14", "torch_dtype": "float32", "transformers_version": "4.52.3"})
    postfuse = json.loads((folder / "postfuse_module" / "config.json").read_text())
    write_json(folder / "postfuse_module" / "config.json", {
        "_class_name": "PostfuseModule", "embed_dim": postfuse["embed_dim"], "embed_dim_img": postfuse["embed_dim_img"]})
    for tokenizer, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        clip_tokenizer_files(folder / tokenizer, pad, legacy=True)
    for sub, weights in (("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
                         ("text_encoder", "model.safetensors"), ("text_encoder_2", "model.safetensors"),
                         ("image_prompt_encoder", "model.safetensors"), ("postfuse_module", "model.safetensors")):
        fp16_variant(folder / sub, weights)


def sam3_layout(folder: Path, pipeline: str) -> None:
    """facebook/sam3: a transformers Sam3VideoModel (detector + tracker; the detector's weights under
    `detector_model.`), its Sam3VideoProcessor, and Meta's original checkpoint sam3.pt beside them."""
    from transformers import Sam3Model, Sam3Processor, Sam3VideoConfig, Sam3VideoModel, Sam3VideoProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    detector = Sam3Model.from_pretrained(folder, dtype=torch.float32)
    processor = Sam3Processor.from_pretrained(folder)
    for path in list(folder.iterdir()):
        path.unlink()
    width, size = detector.config.detr_decoder_config.hidden_size, detector.config.vision_config.image_size
    tracker = dict(  # a tracker as tiny as the detector: the exporter never reads it, but the file holds its weights
        model_type="sam3_tracker_video", image_size=size, vision_config=detector.config.vision_config.to_dict(),
        memory_attention_hidden_size=width, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=2 * width, memory_encoder_hidden_size=width,
        memory_encoder_output_channels=width // 2, mask_downsampler_embed_dim=width, memory_fuser_embed_dim=width,
        memory_fuser_intermediate_dim=2 * width, memory_fuser_num_layers=1,
        prompt_encoder_config=dict(hidden_size=width, image_size=size),
        mask_decoder_config=dict(hidden_size=width, mlp_dim=2 * width, iou_head_hidden_dim=width,
                                 num_attention_heads=2))
    torch.manual_seed(0)
    video = Sam3VideoModel(Sam3VideoConfig(detector_config=detector.config.to_dict(), tracker_config=tracker))
    video.detector_model.load_state_dict(detector.state_dict())
    video.save_pretrained(folder)
    Sam3VideoProcessor(image_processor=processor.image_processor, tokenizer=processor.tokenizer,
                       video_processor=Sam2VideoVideoProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                                               size={"height": size, "width": size})
                       ).save_pretrained(folder)
    nan_copy(detector.state_dict(), folder / "sam3.pt", rename=lambda name: f"detector.{name}")


FLUX_REAL = {  # variant: (pipeline class, _diffusers_version, extra metadata of transformer/ and vae/ configs)
    "schnell": ("FluxPipeline", "0.30.0.dev0", {}, {}),
    "dev": ("FluxPipeline", "0.30.0.dev0", {"_name_or_path": "../checkpoints/flux-dev/transformer"},
            {"_name_or_path": "../checkpoints/flux-dev"}),
    "fill": ("FluxFillPipeline", "0.32.0.dev0", {}, {}),
}


def flux_layout(folder: Path, pipeline: str) -> None:
    """black-forest-labs/FLUX.1-*: a diffusers folder in bf16 with the transformer in three shards and T5 in two,
    plus BFL's own single-file checkpoints (flux1-*.safetensors, ae.safetensors) at the top."""
    variant = pipeline.split("-")[1]
    pipeline_class, version, transformer_meta, vae_meta = FLUX_REAL[variant]
    write_json(folder / "model_index.json", {
        "_class_name": pipeline_class, "_diffusers_version": version,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"]})
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    write_json(folder / "scheduler" / "scheduler_config.json", {
        "_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": version,
        **{k: scheduler[k] for k in ("base_image_seq_len", "base_shift", "max_image_seq_len", "max_shift",
                                     "num_train_timesteps", "shift", "use_dynamic_shifting")}})
    # schnell and dev leave out_channels out (None: as many as in_channels); Fill needs it (384 in, 64 out)
    edit_json(folder / "transformer" / "config.json", {"_diffusers_version": version} | transformer_meta,
              drop=("dtype",) if variant == "fill" else ("dtype", "out_channels"))
    edit_json(folder / "vae" / "config.json", {"_diffusers_version": version} | vae_meta)
    bf16 = {"torch_dtype": "bfloat16", "transformers_version": "4.43.3"}
    edit_json(folder / "text_encoder" / "config.json", bf16 | {
        "_name_or_path": "openai/clip-vit-large-patch14", "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1})
    edit_json(folder / "text_encoder_2" / "config.json", bf16 | {
        "_name_or_path": "google/t5-v1_1-xxl", "decoder_start_token_id": 0, "dropout_rate": 0.1,
        "is_encoder_decoder": True, "output_past": True, "tie_word_embeddings": False, "use_cache": True},
        drop=("dtype", "scale_decoder_outputs"))
    clip_tokenizer_files(folder / "tokenizer", "<|endoftext|>", legacy=False)
    edit_json(folder / "tokenizer_2" / "tokenizer_config.json", {"legacy": True, "tokenizer_class": "T5Tokenizer"},
              drop=("backend", "extra_special_tokens"))
    write_json(folder / "tokenizer_2" / "special_tokens_map.json",
               {"additional_special_tokens": [], "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})
    nan_copy(load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors")),
             folder / HUB[pipeline].skip[0])
    nan_copy(load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors")), folder / "ae.safetensors")
    shard(folder / "transformer", "diffusion_pytorch_model.safetensors", 3)
    shard(folder / "text_encoder_2", "model.safetensors", 2)
    for extra in HUB[pipeline].files:
        if extra.endswith((".jpg", ".jpeg")):
            (folder / extra).write_bytes(b"")  # the sample grid image


LAYOUTS = {"objectclear": objectclear_layout, "sam3": sam3_layout, "flux": flux_layout}


def main(argv: list[str]) -> None:
    """python -m export.tiny_hub [PIPELINE ...]: the tiny checkpoints in their Hub layouts (default: all five)."""
    for pipeline in argv or HUB:
        print(f"tiny {pipeline} checkpoint, laid out as {HUB[pipeline].repo_id}: {build_tiny_hub_folder(pipeline)}")


if __name__ == "__main__":
    main(sys.argv[1:])
