"""The repositories `python -m server.repository` writes for Triton's native GPU backends, which cannot run here, are
right by construction: every config parses as a Triton ModelConfig, each network's inputs and outputs are its exported
graph's, batch bounds agree with the TensorRT profiles, and every shape a preset's pipelines can send -- run here on
photos of every awkward size, with each network replaced by its graph's own shape arithmetic -- lies inside the
profile its preset's engine is built with."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from transformers import Sam3Processor
from tritonclient.grpc import model_config_pb2 as pb

from export.serving import MAX_BATCH, Graph, precision
from export.tensorrt import engine_plans
from pipelines import flux, objectclear, sam3
from pipelines.imaging import processing_size
from pipelines.ort import evaluate
from pipelines.repository import NEEDS
from server.launcher import PRESETS, preset_parameters
from server.repository import TRITON_TYPES, generate, is_network

NATIVE = ["tensorrt", "onnxruntime-gpu"]
# every photo shape class: tiny, small (200x150 is under half of every preset's short side), 3:2, a 12 MP phone
# photo, panoramas either way
PHOTOS = [(1, 1), (17, 23), (64, 64), (200, 150), (150, 200), (600, 400), (4032, 3024), (4096, 100), (100, 4096)]
# FLUX WIDTH x HEIGHT a request may ask for in any preset: the limits' corners, and a size rounded down to 16
FLUX_SIZES = [(256, 256), (2048, 2048), (256, 2048), (2048, 256), (300, 270)]


@pytest.fixture(scope="module", params=NATIVE)
def native(request, model_repository, tmp_path_factory) -> tuple[str, Path]:
    return request.param, generate(request.param, tmp_path_factory.mktemp(request.param) / "repository",
                                   model_repository, ort_tensorrt=True)


def parse(path: Path) -> pb.ModelConfig:
    return text_format.Parse(path.read_text(), pb.ModelConfig())


def networks(repository: Path) -> list[str]:
    return sorted(p.parent.parent.name for p in repository.glob("*/1/model.onnx"))


def test_every_config_parses_and_every_public_model_is_served(native, model_repository):
    runtime, repository = native
    assert sorted(p.name for p in repository.iterdir()) == sorted({m for needs in NEEDS.values() for m in needs})
    for path in repository.glob("*/**/*.pbtxt"):
        config = parse(path)
        assert config.name == path.parent.name if path.name == "config.pbtxt" else path.parent.parent.name
        assert all(group.kind == pb.ModelInstanceGroup.KIND_GPU for group in config.instance_group), path
    for model in NEEDS:  # the pipelines keep their interface and preset variants
        source = {p.name for p in (model_repository / model / "configs").glob("*.pbtxt")}
        assert {p.name for p in (repository / model / "configs").glob("*.pbtxt")} == source
        code = "README.md" if parse(model_repository / model / "config.pbtxt").platform == "ensemble" else "model.py"
        assert (repository / model / "1" / code).exists()  # an ensemble's version folder holds no code


def test_network_configs_are_the_graphs(native, model_repository):
    runtime, repository = native
    platform = {"tensorrt": "tensorrt_plan", "onnxruntime-gpu": "onnxruntime_onnx"}[runtime]
    for network in networks(model_repository):
        graph = Graph.load(model_repository / network / "1" / "model.onnx")
        for path in [repository / network / "config.pbtxt", *(repository / network / "configs").glob("*.pbtxt")]:
            config = parse(path)
            assert config.platform == platform and not config.backend
            batched = config.max_batch_size > 0
            assert config.max_batch_size == (MAX_BATCH[network] if graph.batched else 0)
            for tensors, signature in ((config.input, graph.inputs), (config.output, graph.outputs)):
                assert [t.name for t in tensors] == list(signature), path
                for tensor in tensors:
                    onnx_type, dims = signature[tensor.name]
                    dims = dims[1:] if batched else dims
                    assert pb.DataType.Name(tensor.data_type) == TRITON_TYPES[onnx_type]
                    assert list(tensor.dims) == ([d if isinstance(d, int) else -1 for d in dims] or [1]), tensor
                    assert tensor.HasField("reshape") == (not dims)


def test_tensorrt_plans_cover_the_batch_and_follow_the_presets(native, model_repository):
    runtime, repository = native
    for network in networks(model_repository):
        plans = engine_plans(model_repository, network)
        variants = {p.stem: parse(p) for p in (repository / network / "configs").glob("*.pbtxt")}
        base = parse(repository / network / "config.pbtxt")
        for preset in PRESETS:
            config = variants.get(preset, base)  # Triton falls back to config.pbtxt when a preset has no variant
            plan, profile = plans[preset]
            if config.max_batch_size:
                assert all(shapes[2][0] >= config.max_batch_size for shapes in profile.values()), (network, preset)
            if runtime == "tensorrt":
                assert config.default_model_filename == plan
            else:
                accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
                assert accelerator.name == "tensorrt"
                assert accelerator.parameters["trt_profile_max_shapes"] == ",".join(
                    f"{name}:{'x'.join(map(str, shapes[2]))}" for name, shapes in profile.items())
                assert accelerator.parameters["precision_mode"] == \
                    {"fp16": "FP16", "bf16": "BF16"}.get(precision(network), "FP32")
        if runtime == "onnxruntime-gpu":  # the onnxruntime backend finds external data only in a model directory
            assert (repository / network / "1" / "model.onnx" / "model.onnx").exists()


def test_every_runtime_batches_within_the_same_bounds(model_repository):
    """The exported (onnxruntime) network configs carry the batch bounds the engines are built for, so a batch
    the CPU deployment accepts is one a GPU deployment accepts too."""
    for network in networks(model_repository):
        for path in [model_repository / network / "config.pbtxt", *(model_repository / network / "configs").glob("*")]:
            assert parse(path).max_batch_size == MAX_BATCH[network], path


@pytest.mark.parametrize("preset", PRESETS)
def test_profiles_fit_the_graphs(model_repository, preset):
    """One profile entry per graph input, of its rank and fixed sizes, min <= opt <= max, and the preset's own
    processing size as the optimum (what the engine is tuned for)."""
    for network in networks(model_repository):
        graph, (_, profile) = Graph.load(model_repository / network / "1" / "model.onnx"), \
            engine_plans(model_repository, network)[preset]
        assert set(profile) == set(graph.inputs)
        for name, shapes in profile.items():
            dims = graph.inputs[name][1]
            for shape in shapes:
                assert len(shape) == len(dims) and all(isinstance(d, str) or d == s for d, s in zip(dims, shape))
            assert all(a <= b <= c for a, b, c in zip(*shapes)), (network, name, shapes)
    short_side = int(preset_parameters(preset)["short_side"])
    unet = engine_plans(model_repository, "objectclear_unet")[preset][1]["sample"]
    assert unet[1] == (2, 9, short_side // 8, processing_size(1200, 800, short_side)[0] // 8)  # a 3:2 photo's CFG pair
    side = int(preset_parameters(preset, "flux_generate")["width"])
    for variant in flux.GENERATORS:
        plan = engine_plans(model_repository, flux.TRANSFORMER_MODELS[variant])[preset][1]
        assert plan["hidden_states"][1][1] == (side // 16) ** 2
    # one T5 serves every variant: schnell's 256 tokens and dev's and Fill's 512
    (low, _, high) = engine_plans(model_repository, "flux_t5_encoder")[preset][1]["input_ids"]
    assert low[1] <= min(flux.T5_LENGTHS.values()) and high[1] >= max(flux.T5_LENGTHS.values())


def test_tensorrt_plans_are_shared_where_presets_agree(model_repository):
    plans = {network: {preset: plan for preset, (plan, _) in engine_plans(model_repository, network).items()}
             for network in networks(model_repository)}
    assert set(plans["sam3_image_encoder"].values()) == {"model.plan"}  # no preset changes SAM 3's shapes
    assert len(set(plans["objectclear_unet"].values())) == 4  # four short sides
    # FLUX renders 1024² in quality and 512² in the other three: two plans
    assert plans["flux_schnell_transformer"] == plans["flux_dev_transformer"] == {
        "quality": "model.quality.plan", "balanced": "model.balanced.plan", "ultra_fast": "model.balanced.plan",
        "low_memory": "model.balanced.plan"}


def test_a_rerun_builds_only_the_missing_and_stale_plans(model_repository, tmp_path, monkeypatch):
    """The export Job's `python -m export.tensorrt --missing`: a restarted Job does not rebuild hours of engines, and a
    re-export (a newer model.onnx) does not keep serving engines of the old graph. The builder (TensorRT, GPU only) is
    replaced by one that records what it is asked to build."""
    import os
    import shutil

    from export import tensorrt

    for model in model_repository.iterdir():  # the presets' plans follow from the pipelines' configs: link them
        (tmp_path / model.name).symlink_to(model)
    (tmp_path / "sam3_image_encoder").unlink()
    folder = tmp_path / "sam3_image_encoder" / "1"
    shutil.copytree(model_repository / "sam3_image_encoder", folder.parent)
    built = []
    monkeypatch.setattr(tensorrt, "build_engine", lambda graph, plan, profile, precision: built.append(plan.name)
                        or plan.write_bytes(b"plan"))
    tensorrt.build_engines(tmp_path, ["sam3_image_encoder"], missing_only=True)
    tensorrt.build_engines(tmp_path, ["sam3_image_encoder"], missing_only=True)
    assert built == ["model.plan"]
    os.utime(folder / "model.onnx", ((folder / "model.plan").stat().st_mtime + 10,) * 2)  # re-exported since
    tensorrt.build_engines(tmp_path, ["sam3_image_encoder"], missing_only=True)
    assert built == ["model.plan", "model.plan"]


# -- every shape a preset sends lies inside its profile ---------------------------------------------------------------
class ProfiledNetwork:
    """A network replaced by its exported graph's shape arithmetic: checks each call's names, dtypes and sizes against
    the graph and the preset's TensorRT profile, and answers zeros of the shapes the graph would produce."""

    TORCH_TYPES = {"FLOAT": torch.float32, "INT64": torch.int64}

    def __init__(self, repository: Path, network: str, preset: str):
        self.name, self.graph = network, Graph.load(repository / network / "1" / "model.onnx")
        self.profile = engine_plans(repository, network)[preset][1]
        self.calls = 0

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        assert set(inputs) == set(self.graph.inputs), self.name
        axes = {}
        for name, value in inputs.items():
            onnx_type, dims = self.graph.inputs[name]
            low, _, high = self.profile[name]
            assert value.dtype == self.TORCH_TYPES[onnx_type], (self.name, name)
            assert all(a <= size <= b for a, size, b in zip(low, value.shape, high)) and value.ndim == len(low), \
                f"{self.name}.{name}: shape {list(value.shape)} outside the profile {low}..{high}"
            for dim, size in zip(dims, value.shape):
                if isinstance(dim, int):
                    assert dim == size, (self.name, name)
                else:  # an axis name, or k*name
                    factor, axis = re.fullmatch(r"(?:(\d+)\*)?(\w+)", dim).groups()
                    assert size % int(factor or 1) == 0
                    axes[axis] = size // int(factor or 1)
        self.calls += 1
        return {name: torch.zeros([evaluate(d, axes) for d in dims]) for name, (_, dims) in self.graph.outputs.items()}


def profiled(repository: Path, models: dict[str, str], preset: str) -> dict[str, ProfiledNetwork]:
    return {role: ProfiledNetwork(repository, model, preset) for role, model in models.items()}


def photo(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4: height // 4 + max(1, height // 2), width // 4: width // 4 + max(1, width // 2)] = 255
    return image, mask


@pytest.mark.parametrize("preset", PRESETS)
def test_objectclear_sends_only_profiled_shapes(model_repository, preset):
    networks = profiled(model_repository, objectclear.COMPONENT_MODELS, preset)
    conditioning = objectclear.Conditioning.load(model_repository / "objectclear_inpaint" / "1" / "conditioning.npz")
    inpainter = objectclear.ObjectClearInpainter(networks, conditioning)
    settings = objectclear.Settings(steps=1, short_side=int(preset_parameters(preset)["short_side"]))
    for width, height in PHOTOS:
        result, region = inpainter(*photo(width, height), seed=0, settings=settings)
        assert result.shape == (height, width, 3) and region.shape == (height, width)
    assert networks["unet"].calls == len(PHOTOS)


@pytest.mark.parametrize("preset", PRESETS)
def test_sam3_sends_only_profiled_shapes(model_repository, preset):
    networks = profiled(model_repository, sam3.COMPONENT_MODELS, preset)
    segmenter = sam3.Sam3Segmenter(networks, Sam3Processor.from_pretrained(
        model_repository / "sam3_segment" / "1" / "processor"))
    for width, height in PHOTOS:
        image, _ = photo(width, height)
        segmenter(image, "a cat")
        boxes = np.array([[0, 0, width, height]] * sam3.MAX_BOXES, np.float32)
        segmenter(image, "a cat", boxes)  # the most exemplars a request may carry
    assert networks["detector_boxes"].calls == len(PHOTOS)


@pytest.mark.parametrize("preset", PRESETS)
def test_flux_sends_only_profiled_shapes(model_repository, preset):
    for variant, model in flux.GENERATORS.items():
        generate_params = preset_parameters(preset, model)
        generator = flux.FluxGenerator(profiled(model_repository, flux.generate_models(variant), preset),
                                       flux.FluxConfig.load(model_repository / model / "1" / "pipeline"))
        preset_size = (int(generate_params["width"]), int(generate_params["height"]))
        for width, height in [preset_size, *FLUX_SIZES]:
            generator("a cat", 0, flux.GenerateSettings(width=width, height=height, steps=1))
    filler = flux.FluxFillInpainter(profiled(model_repository, flux.FILL_MODELS, preset),
                                    flux.FluxConfig.load(model_repository / "flux_fill_inpaint" / "1" / "pipeline"))
    pixels = int(preset_parameters(preset, "flux_fill_inpaint")["pixels"])
    for width, height in PHOTOS:
        result, _ = filler(*photo(width, height), seed=0, settings=flux.FillSettings(pixels=pixels, steps=1))
        assert result.shape == (height, width, 3)


def test_torch_repository_runs_the_networks_on_the_gpu(model_repository, tmp_path):
    """The torch runtime's configs: same interface as the exported ones, the torch runtime's parameters, and every
    instance on a GPU, so a GPU deployment runs its networks there."""
    repository = generate("torch", tmp_path / "repository", model_repository, gpus=[0, 1])
    for network in networks(model_repository):
        config, source = parse(repository / network / "config.pbtxt"), parse(model_repository / network / "config.pbtxt")
        assert (config.input, config.output, config.max_batch_size) == (source.input, source.output,
                                                                         source.max_batch_size)
        params = {k: v.string_value for k, v in config.parameters.items()}
        assert params == {"runtime": "torch", "precision": precision(network), "cuda_graphs": "true",
                          "weights": "checkpoint", "FORCE_CPU_ONLY_INPUT_TENSORS": "no"}
        assert (repository / network / "1" / "torch" / "network.json").exists()
    for model in {m for needs in NEEDS.values() for m in needs}:
        for group in parse(repository / model / "config.pbtxt").instance_group:
            assert group.kind == pb.ModelInstanceGroup.KIND_GPU and list(group.gpus) == [0, 1]
    assert not any(is_network(model_repository / public) for public in NEEDS)
