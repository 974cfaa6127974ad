"""TensorRT engines from the exported ONNX graphs (TensorRT 10 Python API), for GPU deployments.

    python -m export.tensorrt objectclear_unet --preset balanced [--fp32]

Builds <model>/1/model.plan next to model.onnx with one optimisation profile covering the preset's processing
sizes: the short side fixed by the preset, the long side up to MAX_ASPECT times it, batch up to MAX_BATCH rows.
Plans are specific to the GPU they were built on (Triton's `cc_model_filenames` can map several). fp16 is the
default, as in every preset; TensorRT keeps fp32 where a layer needs it.
"""
from __future__ import annotations

import argparse
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


def build_engine(onnx_path: Path, plan_path: Path, profiles: dict[str, tuple], fp16: bool = True,
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
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
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
                                          "objectclear_object_encoder"])
    parser.add_argument("--preset", choices=PRESETS, default="balanced")
    parser.add_argument("--fp32", action="store_true", help="build without fp16 kernels")
    parser.add_argument("--repository", type=Path, default=DEFAULT_MODEL_REPOSITORY)
    args = parser.parse_args()
    import numpy as np
    with np.load(args.repository / "objectclear_inpaint" / "1" / "conditioning.npz") as conditioning:
        hidden, pooled = conditioning["prompt_embeds"].shape[-1], conditioning["pooled_prompt_embeds"].shape[-1]
    folder = args.repository / args.model / "1"
    profiles = objectclear_profiles(args.model, int(preset_parameters(args.preset)["short_side"]), hidden, pooled)
    print(build_engine(folder / "model.onnx", folder / "model.plan", profiles, fp16=not args.fp32))


if __name__ == "__main__":
    main()
