"""TensorRT engines from the exported ONNX graphs (TensorRT 10 Python API), for Triton's tensorrt backend.

    python -m export.tensorrt --repository REPO [--preset balanced ...] [--models objectclear_unet ...] [--fp32]

Builds, in each network's version directory of REPO (a repository written by `python -m server.repository --runtime
tensorrt`, or the exported one), `model.<preset>.plan` for every preset whose shapes differ from the others' and
`model.plan` for a network whose shapes no preset changes (SAM 3, the text encoders at one T5 length). One
optimisation profile per engine, from export/serving.py: every size the preset's pipelines can send, the batch up to
the network's max_batch_size, the preset's own processing size as the optimum; precision per network from the same
table. Plans are specific to the GPU (compute capability) and TensorRT version they were built with: build them on
the serving node's GPU, e.g. in the Kubernetes export Job or an init container.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from export.serving import Graph, PresetSizes, axis_ranges, precision, profiles
from server.launcher import DEFAULT_MODEL_REPOSITORY, PRESETS


def engine_plans(repository: Path, network: str) -> dict[str, tuple[str, dict]]:
    """{preset: (plan file name, its profile)} for one network. Presets whose profiles agree share one plan, named
    after the first of them; `model.plan` when every preset agrees."""
    graph = Graph.load(Path(repository) / network / "1" / "model.onnx")
    shapes = {preset: profiles(graph, axis_ranges(network, PresetSizes.read(preset, repository)))
              for preset in PRESETS}
    if all(profile == shapes[PRESETS[0]] for profile in shapes.values()):
        return {preset: ("model.plan", profile) for preset, profile in shapes.items()}
    owner = {preset: next(p for p in PRESETS if shapes[p] == shapes[preset]) for preset in PRESETS}
    return {preset: (f"model.{owner[preset]}.plan", shapes[preset]) for preset in PRESETS}


def build_engine(onnx_path: Path, plan_path: Path, profile: dict[str, tuple], precision: str = "fp16",
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
    optimisation = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.items():
        optimisation.set_shape(name, low, opt, high)
    config.add_optimization_profile(optimisation)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build {plan_path}")
    plan_path.write_bytes(bytes(engine))
    return plan_path


def is_current(plan: Path, graph: Path) -> bool:
    """A plan built from this very graph: one from before a re-export is stale."""
    return plan.exists() and plan.stat().st_mtime >= graph.stat().st_mtime


def build_engines(repository: Path, networks: list[str] | None = None, presets: list[str] = PRESETS,
                  fp32: bool = False, missing_only: bool = False) -> None:
    """Every plan the presets need, for every exported network (or those named), in its version folder."""
    repository = Path(repository)
    networks = networks or sorted(p.parent.parent.name for p in repository.glob("*/1/model.onnx"))
    for network in networks:
        folder = repository / network / "1"
        plans = {plan: profile for preset, (plan, profile) in engine_plans(repository, network).items()
                 if preset in presets}
        for plan, profile in plans.items():
            if missing_only and is_current(folder / plan, folder / "model.onnx"):
                continue
            print(f"building {network}/1/{plan} (minutes at full size)", flush=True)
            build_engine(folder / "model.onnx", folder / plan, profile, "fp32" if fp32 else precision(network))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m export.tensorrt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=DEFAULT_MODEL_REPOSITORY)
    parser.add_argument("--models", nargs="+", help="networks to build (default: every exported network)")
    parser.add_argument("--preset", nargs="+", choices=PRESETS, default=PRESETS,
                        help="build only these presets' plans (default: all)")
    parser.add_argument("--fp32", action="store_true", help="build without reduced-precision kernels")
    parser.add_argument("--missing", action="store_true", help="build only the plans missing or older than their graph")
    args = parser.parse_args()
    build_engines(args.repository, args.models, args.preset, args.fp32, missing_only=args.missing)

if __name__ == "__main__":
    main()
