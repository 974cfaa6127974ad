"""The TensorRT optimisation profiles fit the exported graphs they are built for: one entry per graph input, the
graph's rank, the graph's fixed sizes, min <= opt <= max, and the preset's serving shape inside the range.
Runs without TensorRT: a profile that does not fit is only found at engine build time on a GPU otherwise."""
from __future__ import annotations

import onnx
import pytest

from export.tensorrt import FLUX_PRECISION, flux_profiles, objectclear_profiles
from server.launcher import PRESETS, preset_parameters

FLUX = ["flux_clip_text_encoder", "flux_t5_encoder", "flux_transformer", "flux_fill_transformer", "flux_vae_encoder",
        "flux_vae_decoder"]
OBJECTCLEAR = ["objectclear_unet", "objectclear_vae_encoder", "objectclear_vae_decoder", "objectclear_object_encoder"]


def graph_inputs(model_repository, model) -> dict[str, list]:
    graph = onnx.load(str(model_repository / model / "1" / "model.onnx"), load_external_data=False).graph
    return {i.name: [d.dim_value or None for d in i.type.tensor_type.shape.dim] for i in graph.input}


def assert_fits(profiles: dict[str, tuple], inputs: dict[str, list]) -> None:
    assert set(profiles) == set(inputs)
    for name, shapes in profiles.items():
        for shape in shapes:
            assert len(shape) == len(inputs[name]), name
            assert all(fixed is None or fixed == size for fixed, size in zip(inputs[name], shape)), (name, shape)
        low, opt, high = shapes
        assert all(a <= b <= c for a, b, c in zip(low, opt, high)), (name, shapes)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("model", FLUX)
def test_flux_profiles_fit_the_graphs(model_repository, model, preset):
    serving = "flux_fill_inpaint" if model in ("flux_fill_transformer", "flux_vae_encoder") else "flux_generate"
    side = int(preset_parameters(preset, "flux_generate")["width"])
    profiles = flux_profiles(model, side, model_repository / serving / "1" / "pipeline")
    assert_fits(profiles, graph_inputs(model_repository, model))
    if "transformer" in model:
        assert profiles["hidden_states"][1][1] == (side // 16) ** 2  # the preset's image is the optimum
    assert FLUX_PRECISION.get(model, "fp16") != "fp16" or "vae" not in model  # the FLUX VAE is never fp16


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("model", OBJECTCLEAR)
def test_objectclear_profiles_fit_the_graphs(model_repository, model, preset):
    inputs = graph_inputs(model_repository, model)
    hidden = inputs["encoder_hidden_states"][2] if model == "objectclear_unet" else 0
    pooled = inputs["text_embeds"][1] if model == "objectclear_unet" else 0
    profiles = objectclear_profiles(model, int(preset_parameters(preset)["short_side"]), hidden, pooled)
    assert_fits(profiles, inputs)
