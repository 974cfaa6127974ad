"""Size of every tensor that crosses between Triton models in remove_object, at full model size.

    python -m benchmarks.tensor_sizes [--short-side 384] [--width 576]

SAM 3 shapes come from transformers' default `Sam3Config` (what facebook/sam3 uses), ObjectClear's from its
SDXL-inpainting configuration (reference/objectclear.md 2.3) at the given processing size; fp32 as served on CPU
(half that for fp16 engines). Prints a Markdown table.
"""
from __future__ import annotations

import argparse

from transformers import Sam3Config

FP32, INT64 = 4, 8


def sam3_tensors(config: Sam3Config) -> list[tuple[str, str, tuple, int]]:
    vit, vision = config.vision_config.backbone_config, config.vision_config
    size, width = vit.image_size, vision.fpn_hidden_size
    grid = vit.image_size // vit.patch_size
    queries = config.detr_decoder_config.num_queries
    tokens = config.text_config.max_position_embeddings
    return [
        ("sam3_segment -> sam3_image_encoder", "pixel_values", (1, 3, size, size), FP32),
        ("sam3_image_encoder -> sam3_segment", "fpn0", (1, width, 4 * grid, 4 * grid), FP32),
        ("sam3_image_encoder -> sam3_segment", "fpn1", (1, width, 2 * grid, 2 * grid), FP32),
        ("sam3_image_encoder -> sam3_segment", "fpn2", (1, width, grid, grid), FP32),
        ("sam3_image_encoder -> sam3_segment", "pos2", (1, width, grid, grid), FP32),
        ("sam3_segment -> sam3_text_encoder", "input_ids + attention_mask", (2, tokens), INT64),
        ("sam3_text_encoder -> sam3_segment", "text_features", (1, tokens, width), FP32),
        ("sam3_segment -> sam3_detector", "fpn0, fpn1, fpn2, pos2, text_features, text_mask", None, 0),
        ("sam3_detector -> sam3_segment", "pred_masks", (1, queries, 4 * grid, 4 * grid), FP32),
        ("sam3_detector -> sam3_segment", "pred_boxes", (1, queries, 4), FP32),
        ("sam3_detector -> sam3_segment", "pred_logits + presence_logits", (1, queries + 1), FP32),
    ]


def objectclear_tensors(height: int, width: int) -> list[tuple[str, str, tuple, int]]:
    h, w = height // 8, width // 8
    return [
        ("remove_object -> objectclear_object_encoder", "pixels", (1, 3, 224, 224), FP32),
        ("objectclear_object_encoder -> remove_object", "object_token", (1, 2048), FP32),
        ("remove_object -> objectclear_vae_encoder", "image", (1, 3, height, width), FP32),
        ("objectclear_vae_encoder -> remove_object", "latent_mean + latent_logvar", (2, 4, h, w), FP32),
        ("remove_object -> objectclear_unet (per step)", "sample", (2, 9, h, w), FP32),
        ("remove_object -> objectclear_unet (per step)", "encoder_hidden_states", (2, 77, 2048), FP32),
        ("remove_object -> objectclear_unet (per step)", "timestep + text_embeds + time_ids", (2, 1 + 1280 + 6), FP32),
        ("objectclear_unet -> remove_object (per step)", "noise_pred", (2, 4, h, w), FP32),
        ("objectclear_unet -> remove_object (per step)", "obj_attn", (2, 1, h // 2, w // 2), FP32),
        ("remove_object -> objectclear_vae_decoder", "latents", (1, 4, h, w), FP32),
        ("objectclear_vae_decoder -> remove_object", "image", (1, 3, height, width), FP32),
    ]


def human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size} B"
        size /= 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short-side", type=int, default=384, help="ObjectClear processing height (balanced: 384)")
    parser.add_argument("--width", type=int, default=576, help="ObjectClear processing width (a 3:2 photo: 576)")
    args = parser.parse_args()
    rows = sam3_tensors(Sam3Config()) + objectclear_tensors(args.short_side, args.width)
    print("| from -> to | tensor | shape | fp32 size |\n|---|---|---|---|")
    for path, name, shape, itemsize in rows:
        if shape is None:
            print(f"| {path} | {name} | (the tensors above, sent on) | |")
            continue
        count = 1
        for d in shape:
            count *= d
        print(f"| {path} | {name} | {list(shape)} | {human(count * itemsize)} |")


if __name__ == "__main__":
    main()
