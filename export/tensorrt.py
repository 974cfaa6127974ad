"""TensorRT engines from the exported ONNX graphs (TensorRT 10 Python API), for GPU deployments.

    python -m export.tensorrt objectclear_unet --preset balanced [--fp32]
    python -m export.tensorrt flux_transformer --preset quality

Builds <model>/1/model.plan next to model.onnx with one optimisation profile covering the preset's processing
sizes: for ObjectClear the short side fixed by the preset and the long side up to MAX_ASPECT times it; for FLUX the
preset's image area (1024 or 4096 packed tokens) up to MAX_ASPECT times it, the checkpoint's T5 length; batch up
to MAX_BATCH rows. Plans are specific to the GPU they were built on (Triton's `cc_model_filenames` can map several).
Precision per network as in NVIDIA's own FLUX demo (reference/flux.md 3.1): fp16 by default, bf16 for T5 (fp16
overflows in it), tf32 for the FLUX VAE (never fp16); TensorRT keeps fp32 where a layer needs it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from server.launcher import DEFAULT_MODEL_REPOSITORY, PRESETS, preset_parameters

MAX_ASPECT = 2
MAX_BATCH = 8


def latent_range(short_side: int) -> tuple[int, int, int]:
    latent = short_side // 8
    return latent // 2, latent, latent * MAX_ASPECT  # smaller images are never upscaled


def objectclear_profiles(model: str, short_side: int, hidden: int, pooled: int) -> dict[str, tuple]:
    low, opt, high = latent_range(short_side)

    def image(channels, scale=1):
        return ((1, channels, low * scale, low * scale), (1, channels, opt * scale, opt * scale),
                (1, channels, high * scale, high * scale))

    if model == "objectclear_unet":
        rows = lambda *tail: ((1, *tail), (2, *tail), (MAX_BATCH, *tail))  # noqa: E731  CFG pairs
        return {"sample": ((1, 9, low, low), (2, 9, opt, opt), (MAX_BATCH, 9, high, high)),
                "timestep": rows(), "encoder_hidden_states": rows(77, hidden), "text_embeds": rows(pooled),
                "time_ids": rows(6)}
    if model == "objectclear_vae_encoder":
        return {"image": image(3, 8)}
    if model == "objectclear_vae_decoder":
        return {"latents": image(4)}
    if model == "objectclear_object_encoder":
        return {"pixels": ((1, 3, 224, 224), (1, 3, 224, 224), (MAX_BATCH, 3, 224, 224))}
    raise ValueError(f"no TensorRT profile for {model}")


FLUX_PRECISION = {"flux_t5_encoder": "bf16", "flux_vae_encoder": "tf32", "flux_vae_decoder": "tf32"}


def flux_profiles(model: str, side: int, folder: Path) -> dict[str, tuple]:
    """Profiles for the FLUX networks at a preset's image side; dims from the exported pipeline configs."""
    transformer = json.loads((folder / "transformer" / "config.json").read_text())
    text = json.loads((folder / "serving.json").read_text())["max_sequence_length"]
    opt = (side // 16) ** 2
    low, high = opt // 4, opt * MAX_ASPECT  # images down to half the side, up to MAX_ASPECT x the area
    rows = lambda *tail: ((1, *tail), (1, *tail), (MAX_BATCH, *tail))  # noqa: E731
    if model in ("flux_transformer", "flux_fill_transformer"):
        profiles = {"hidden_states": ((1, low, transformer["in_channels"]), (1, opt, transformer["in_channels"]),
                                      (MAX_BATCH, high, transformer["in_channels"])),
                    "encoder_hidden_states": rows(text, transformer["joint_attention_dim"]),
                    "pooled_projections": rows(transformer["pooled_projection_dim"]), "timestep": rows(),
                    "img_ids": ((1, low, 3), (1, opt, 3), (MAX_BATCH, high, 3)), "txt_ids": rows(text, 3)}
        if transformer.get("guidance_embeds"):
            profiles["guidance"] = rows()
        return profiles
    if model == "flux_t5_encoder":
        return {"input_ids": rows(text)}
    if model == "flux_clip_text_encoder":
        return {"input_ids": rows(77)}
    latent = side // 8
    shapes = lambda channels, scale: tuple((1, channels, s * scale, s * scale)  # noqa: E731
                                           for s in (latent // 2, latent, latent * MAX_ASPECT))
    if model == "flux_vae_decoder":
        return {"latents": shapes(16, 1)}
    if model == "flux_vae_encoder":
        return {"image": shapes(3, 8)}
    raise ValueError(f"no TensorRT profile for {model}")


def build_engine(onnx_path: Path, plan_path: Path, profiles: dict[str, tuple], precision: str = "fp16",
                 workspace_bytes: int = 8 << 30) -> Path:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # reads external data beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision in ("fp16", "bf16", "tf32"):
        config.set_flag(getattr(trt.BuilderFlag, precision.upper()))
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profiles.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build {plan_path}")
    plan_path.write_bytes(bytes(engine))
    return plan_path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m export.tensorrt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["objectclear_unet", "objectclear_vae_encoder", "objectclear_vae_decoder",
                                          "objectclear_object_encoder", "flux_clip_text_encoder", "flux_t5_encoder",
                                          "flux_transformer", "flux_fill_transformer", "flux_vae_encoder",
                                          "flux_vae_decoder"])
    parser.add_argument("--preset", choices=PRESETS, default="balanced")
    parser.add_argument("--fp32", action="store_true", help="build without reduced-precision kernels")
    parser.add_argument("--repository", type=Path, default=DEFAULT_MODEL_REPOSITORY)
    args = parser.parse_args()
    folder = args.repository / args.model / "1"
    if args.model.startswith("flux_"):
        fill = args.model in ("flux_fill_transformer", "flux_vae_encoder")
        serving = "flux_fill_inpaint" if fill else "flux_generate"
        side = int(preset_parameters(args.preset, "flux_generate")["width"])  # Fill's area is the same square
        profiles = flux_profiles(args.model, side, args.repository / serving / "1" / "pipeline")
        precision = FLUX_PRECISION.get(args.model, "fp16")
    else:
        import numpy as np
        with np.load(args.repository / "objectclear_inpaint" / "1" / "conditioning.npz") as conditioning:
            hidden, pooled = conditioning["prompt_embeds"].shape[-1], conditioning["pooled_prompt_embeds"].shape[-1]
        profiles = objectclear_profiles(args.model, int(preset_parameters(args.preset)["short_side"]), hidden, pooled)
        precision = "fp16"
    print(build_engine(folder / "model.onnx", folder / "model.plan", profiles, "fp32" if args.fp32 else precision))


if __name__ == "__main__":
    main()
