"""Every config in the model repository parses as a Triton ModelConfig, presets only change what they should,
and the public interface is the one PRODUCT.md pins."""
from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

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
    assert (folder / "1" / "model.py").exists()
    for preset_file in sorted((folder / "configs").glob("*.pbtxt")):
        assert preset_file.stem in PRESETS, f"{preset_file} is not a known preset"
        assert signature(parse(preset_file)) == signature(base), preset_file


def test_preset_values_match_the_product_table():
    folder = DEFAULT_MODEL_REPOSITORY / "objectclear_inpaint"
    for preset, (steps, short_side, guidance) in EXPECTED.items():
        params = {k: v.string_value for k, v in parse(folder / "configs" / f"{preset}.pbtxt").parameters.items()}
        assert (int(params["steps"]), int(params["short_side"]), float(params["guidance_scale"])) == \
            (steps, short_side, guidance), preset
    default = parse(folder / "config.pbtxt")
    assert default.parameters == parse(folder / "configs" / "balanced.pbtxt").parameters


def test_public_interface_is_pinned():
    config = parse(DEFAULT_MODEL_REPOSITORY / "objectclear_inpaint" / "config.pbtxt")
    types = model_config_pb2.DataType.Name
    inputs = {t.name: (types(t.data_type), list(t.dims)) for t in config.input}
    outputs = {t.name: (types(t.data_type), list(t.dims)) for t in config.output}
    assert {k: inputs[k] for k in ("IMAGE", "MASK", "SEED")} == {
        "IMAGE": ("TYPE_STRING", [1]), "MASK": ("TYPE_STRING", [1]), "SEED": ("TYPE_INT64", [1])}
    assert outputs == {"IMAGE": ("TYPE_STRING", [1]), "MASK": ("TYPE_STRING", [1])}
