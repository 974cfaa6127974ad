"""The real exporter: torch.export -> ONNX -> ONNX Runtime, compared with PyTorch here independently of the
exporter's own check, at shapes and batch sizes it was not traced with."""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.objectclear import component_specs, load_objectclear
from export.onnx_export import ExportParityError, export_component


@pytest.fixture(scope="module")
def exported(objectclear_checkpoint, tmp_path_factory):
    """Every ObjectClear component exported into a temporary folder: {name: (spec, module, path, report)}."""
    folder = tmp_path_factory.mktemp("onnx")
    result = {}
    for spec, module in component_specs(load_objectclear(objectclear_checkpoint)):
        path = folder / spec.name / "model.onnx"
        result[spec.name] = (spec, module, path, export_component(spec, module, path))
    return result


def run_both(module, path, names, inputs):
    with torch.no_grad():
        want = module(*inputs)
    want = want if isinstance(want, tuple) else (want,)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {n: t.numpy() for n, t in zip(names, inputs)})
    return [w.numpy() for w in want], got


def unet_inputs(spec_module, batch, h, w):
    unet = spec_module.unet
    g = torch.Generator().manual_seed(batch * 1000 + h + w)
    cross = unet.config.cross_attention_dim
    pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    return (torch.randn(batch, 9, h, w, generator=g), torch.full((batch,), 501.0),
            torch.randn(batch, 77, cross, generator=g), torch.randn(batch, pooled, generator=g),
            torch.tensor([[8.0 * h, 8.0 * w, 0, 0, 8.0 * h, 8.0 * w]] * batch))


@pytest.mark.parametrize("batch, latent", [(2, (50, 76)), (4, (64, 86)), (1, (26, 40))],
                         ids=["coffee-608x400", "688x512-batch4", "small"])
def test_unet_any_latent_size(exported, batch, latent):
    """Latent sides that are not multiples of 4 (50, 86, 26) only work because up-block sizes are explicit."""
    spec, module, path, _ = exported["objectclear_unet"]
    want, got = run_both(module, path, spec.input_names, unet_inputs(module, batch, *latent))
    assert got[0].shape == (batch, 4, *latent)
    assert got[1].shape == (batch, 1, latent[0] // 2, latent[1] // 2)
    np.testing.assert_allclose(got[0], want[0], atol=1e-4)  # measured ~2e-6
    np.testing.assert_allclose(got[1], want[1], atol=1e-5)  # measured ~1e-6
    assert got[1].max() > 2 / 77  # the attention map is not flat, so the comparison means something


@pytest.mark.parametrize("name, make_inputs", [
    ("objectclear_vae_encoder", lambda: (torch.rand(1, 3, 400, 608) * 2 - 1,)),
    ("objectclear_vae_decoder", lambda: (torch.randn(2, 4, 50, 76),)),
    ("objectclear_object_encoder", lambda: (torch.rand(4, 3, 224, 224) * 2 - 1,)),
])
def test_other_components_at_new_shapes(exported, name, make_inputs):
    spec, module, path, _ = exported[name]
    want, got = run_both(module, path, spec.input_names, make_inputs())
    for w, g in zip(want, got):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-3 * max(1.0, np.abs(w).max()))  # measured <= 1e-5 relative


def test_exporter_reports_within_tolerance(exported):
    for spec, _, _, report in exported.values():
        assert report.cases and report.max_error <= spec.tolerance


def test_graph_interface(exported):
    """Names and symbolic axes that Triton configs and TensorRT profiles refer to; UNet weights kept external."""
    spec, _, path, _ = exported["objectclear_unet"]
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["sample"] == ["batch", 9, "latent_h", "latent_w"]
    assert dims["timestep"] == ["batch"]
    assert [o.name for o in graph.output] == ["noise_pred", "obj_attn"]
    assert path.with_name("model.onnx.data").exists()
    assert path.stat().st_size < path.with_name("model.onnx.data").stat().st_size


def test_export_fails_loudly_past_tolerance(exported, tmp_path):
    spec, module, _, _ = exported["objectclear_object_encoder"]
    with pytest.raises(ExportParityError, match="objectclear_object_encoder.object_token"):
        export_component(dataclasses.replace(spec, tolerance=0.0), module, tmp_path / "model.onnx")
