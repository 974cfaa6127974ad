"""Every config in the model repository parses as a Triton ModelConfig, presets only change what they should,
and the public interface is the one PRODUCT.md pins."""
from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from pipelines.progress import STREAMED
from pipelines.flux import DEFAULT_VARIANT, GENERATORS
from server.launcher import DEFAULT_MODEL_REPOSITORY, PRESETS

# PRODUCT.md's preset table: steps, short side, guidance
EXPECTED = {"quality": (20, 512, 2.5), "balanced": (8, 384, 2.0), "ultra_fast": (4, 256, 1.5),
            "low_memory": (6, 320, 1.8)}
MODELS = sorted(p.parent.name for p in DEFAULT_MODEL_REPOSITORY.glob("*/config.pbtxt"))


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def signature(config) -> tuple:
    io = lambda tensors: [(t.name, t.data_type, list(t.dims), getattr(t, "optional", False)) for t in tensors]  # noqa: E731
    return config.name, config.max_batch_size, io(config.input), io(config.output)


@pytest.mark.parametrize("model", MODELS)
def test_configs_parse_and_presets_keep_the_interface(model):
    folder = DEFAULT_MODEL_REPOSITORY / model
    base = parse(folder / "config.pbtxt")
    assert base.name == model
    if base.platform == "ensemble":  # no code, but Triton loads only from a version folder (git keeps its README)
        assert (folder / "1" / "README.md").exists() and not (folder / "configs").exists()
    else:
        assert (folder / "1" / "model.py").exists()
    for preset_file in sorted((folder / "configs").glob("*.pbtxt")):
        assert preset_file.stem in PRESETS, f"{preset_file} is not a known preset"
        assert signature(parse(preset_file)) == signature(base), preset_file
    if (folder / "configs" / "balanced.pbtxt").exists():  # config.pbtxt is balanced, queue and instances included
        assert base == parse(folder / "configs" / "balanced.pbtxt")


@pytest.mark.parametrize("model", ["objectclear_inpaint", "remove_object"])
def test_preset_values_match_the_product_table(model):
    folder = DEFAULT_MODEL_REPOSITORY / model
    for preset, (steps, short_side, guidance) in EXPECTED.items():
        params = {k: v.string_value for k, v in parse(folder / "configs" / f"{preset}.pbtxt").parameters.items()}
        assert (int(params["steps"]), int(params["short_side"]), float(params["guidance_scale"])) == \
            (steps, short_side, guidance), preset
    default = parse(folder / "config.pbtxt")
    assert default.parameters == parse(folder / "configs" / "balanced.pbtxt").parameters


# PRODUCT.md's Flux column: quality renders 1024x1024, the others 512x512; schnell (timestep-distilled) with 4 steps,
# the guidance-distilled dev and Fill with the steps of README's preset table
FLUX_SIDE = {"quality": 1024, "balanced": 512, "ultra_fast": 512, "low_memory": 512}
GUIDANCE_DISTILLED_STEPS = {"quality": 28, "balanced": 12, "ultra_fast": 8, "low_memory": 10}


def test_flux_preset_values_match_the_product_table():
    parameters = lambda model, preset: {k: v.string_value for k, v in parse(  # noqa: E731
        DEFAULT_MODEL_REPOSITORY / model / "configs" / f"{preset}.pbtxt").parameters.items()}
    for preset, side in FLUX_SIDE.items():
        for variant, model in GENERATORS.items():
            generate = parameters(model, preset)
            assert (int(generate["width"]), int(generate["height"])) == (side, side), (model, preset)
            steps = 4 if variant == "schnell" else GUIDANCE_DISTILLED_STEPS[preset]
            assert int(generate["steps"]) == steps, (model, preset)
        fill = parameters("flux_fill_inpaint", preset)
        assert int(fill["pixels"]) == side * side, preset
        assert int(fill["steps"]) == GUIDANCE_DISTILLED_STEPS[preset], preset
    for model in (*GENERATORS.values(), "flux_fill_inpaint"):
        assert parse(DEFAULT_MODEL_REPOSITORY / model / "config.pbtxt").parameters == \
            parse(DEFAULT_MODEL_REPOSITORY / model / "configs" / "balanced.pbtxt").parameters


def test_flux_generate_forwards_to_the_default_variant_with_its_interface():
    config = parse(DEFAULT_MODEL_REPOSITORY / "flux_generate" / "config.pbtxt")
    (step,) = config.ensemble_scheduling.step
    assert config.platform == "ensemble" and step.model_name == GENERATORS[DEFAULT_VARIANT]
    target = parse(DEFAULT_MODEL_REPOSITORY / step.model_name / "config.pbtxt")
    assert signature(config)[1:] == signature(target)[1:]  # the same inputs (optional ones too) and outputs
    assert dict(step.input_map) == {t.name: t.name for t in config.input}
    assert dict(step.output_map) == {t.name: t.name for t in config.output}


@pytest.mark.parametrize("model", ["objectclear_inpaint", "remove_object", "flux_fill_inpaint"])
def test_compositing_is_on_in_every_preset_and_overridable(model):
    folder = DEFAULT_MODEL_REPOSITORY / model
    for path in [folder / "config.pbtxt", *folder.glob("configs/*.pbtxt")]:
        config = parse(path)
        assert config.parameters["composite"].string_value == "true", path
        (composite,) = [t for t in config.input if t.name == "COMPOSITE"]
        assert model_config_pb2.DataType.Name(composite.data_type) == "TYPE_BOOL" and composite.optional


STRING, INT64, FP32, UINT8 = "TYPE_STRING", "TYPE_INT64", "TYPE_FP32", "TYPE_UINT8"
PUBLIC = {  # PRODUCT.md: model -> (inputs, outputs); further inputs may exist but must be optional
    "objectclear_inpaint": ({"IMAGE": (STRING, [1]), "MASK": (STRING, [1]), "SEED": (INT64, [1])},
                            {"IMAGE": (STRING, [1]), "MASK": (STRING, [1])}),
    "remove_object": ({"IMAGE": (STRING, [1]), "PROMPT": (STRING, [1]), "SEED": (INT64, [1])},
                      {"IMAGE": (STRING, [1]), "MASK": (STRING, [1])}),
    "sam3_segment": ({"IMAGE": (STRING, [1]), "PROMPT": (STRING, [1]), "BOXES": (FP32, [-1, 4])},
                     {"MASKS": (UINT8, [-1, -1, -1]), "BOXES": (FP32, [-1, 4]), "SCORES": (FP32, [-1])}),
    "flux_generate": ({"PROMPT": (STRING, [1]), "SEED": (INT64, [1])}, {"IMAGE": (STRING, [1])}),
}
PUBLIC.update({model: PUBLIC["flux_generate"] for model in GENERATORS.values()})


@pytest.mark.parametrize("model", sorted(PUBLIC))
def test_public_interface_is_pinned(model):
    config = parse(DEFAULT_MODEL_REPOSITORY / model / "config.pbtxt")
    types = model_config_pb2.DataType.Name
    inputs = {t.name: (types(t.data_type), list(t.dims)) for t in config.input}
    outputs = {t.name: (types(t.data_type), list(t.dims)) for t in config.output}
    want_inputs, want_outputs = PUBLIC[model]
    assert {k: inputs[k] for k in want_inputs} == want_inputs
    assert outputs == want_outputs
    assert all(t.optional for t in config.input if t.name not in want_inputs or t.name in ("SEED", "BOXES"))


# flux_generate is an ensemble (no queue of its own): its requests wait in the queue of the variant it forwards to
QUEUED = sorted(set(PUBLIC) - {"flux_generate"}) + ["flux_fill_inpaint"] + [f"{m}_stream" for m in sorted(STREAMED)]


@pytest.mark.parametrize("model", QUEUED)
def test_public_models_admit_a_bounded_queue_and_refuse_the_rest(model):
    """Admission control (README, "Overload"): Triton's queue policy refuses a request at once (UNAVAILABLE) when as
    many wait as the preset runs at a time, so a burst cannot turn into minutes of latency for everyone; a request
    may ask for a shorter queue timeout than the default."""
    folder = DEFAULT_MODEL_REPOSITORY / model
    for path in [folder / "config.pbtxt", *sorted((folder / "configs").glob("*.pbtxt"))]:
        config = parse(path)
        policy = config.dynamic_batching.default_queue_policy
        assert config.HasField("dynamic_batching") and policy.max_queue_size > 0, f"{path}: unbounded queue"
        assert policy.max_queue_size == sum(group.count for group in config.instance_group), path
        assert policy.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT, path
        assert policy.default_timeout_microseconds > 0 and policy.allow_timeout_override, path
        assert not config.dynamic_batching.preferred_batch_size and config.max_batch_size == 0, path
