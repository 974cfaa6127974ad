"""`python -m export --dtype fp16|bf16`: reduced-precision graphs of the tiny models pass the exporter's parity check
against the fp32 PyTorch model at REDUCED_TOLERANCE (measured on every tiny network: README, "Reduced precision"),
keep an fp32 interface, hold reduced weights, leave the VAEs in fp32; the fp32 reference of a bf16-stored model,
computed a block at a time, is the fp32 model's output exactly."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from diffusers import AutoencoderKL, DiffusionPipeline

from export.flux import clip_spec, t5_spec, transformer_spec
from export.objectclear import component_specs, load_objectclear
from export.onnx_export import (REDUCED_TOLERANCE, ExportParityError, export_component,
                                fp32_outputs, graph_dtype, reduce_precision, widened_copy)
from export.sam3 import component_specs as sam3_specs
from export.sam3 import load_sam3
from export.vae import vae_specs

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
ELEMENT = {torch.float16: onnx.TensorProto.FLOAT16, torch.bfloat16: onnx.TensorProto.BFLOAT16}


@pytest.fixture(scope="module")
def networks(objectclear_checkpoint, sam3_checkpoint, flux_checkpoints):
    """A network per exporter, the cheap ones (the tiny UNet alone takes minutes): name -> (spec, module factory).
    Factories, because reduce_precision casts a module in place."""
    flux = flux_checkpoints["schnell"]

    def objectclear(name):
        return {spec.name: (spec, module) for spec, module in component_specs(load_objectclear(objectclear_checkpoint))}[name]

    def sam3(name):
        return {spec.name: (spec, module) for spec, module in sam3_specs(load_sam3(sam3_checkpoint))}[name]

    def pipeline():
        return DiffusionPipeline.from_pretrained(flux, dtype=torch.float32)

    return {
        "objectclear_object_encoder": lambda: objectclear("objectclear_object_encoder"),
        "sam3_text_encoder": lambda: sam3("sam3_text_encoder"),
        "flux_clip_text_encoder": lambda: clip_spec(pipeline()),
        "flux_t5_encoder": lambda: t5_spec(pipeline().text_encoder_2),  # T5 keeps its `wo` layers in fp32
        "flux_transformer": lambda: transformer_spec("flux_transformer", pipeline().transformer),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["objectclear_object_encoder", "sam3_text_encoder", "flux_t5_encoder",
                                  "flux_transformer"])  # CLIP in bf16: test_bf16_graphs_are_checked_widened
def test_reduced_graph_passes_the_check_with_an_fp32_interface(networks, tmp_path, name, dtype):
    spec, module = networks[name]()
    report = export_component(spec, module, tmp_path / "model.onnx", dtype=DTYPES[dtype])
    print(f"{name} {dtype}: max error {report.max_error:.2e} (tolerance {REDUCED_TOLERANCE[DTYPES[dtype]]:.0e})")
    assert report.dtype == dtype and report.cases and report.max_error <= REDUCED_TOLERANCE[DTYPES[dtype]]
    assert report.max_error > spec.tolerance / 100, "no rounding at all: was the graph really reduced?"
    graph = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False).graph
    assert {v.type.tensor_type.elem_type for v in graph.output} == {onnx.TensorProto.FLOAT}
    floats = [i for i in graph.input if i.type.tensor_type.elem_type != onnx.TensorProto.INT64]
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in floats)
    weights = [t for t in graph.initializer if t.data_type in (ELEMENT[DTYPES[dtype]], onnx.TensorProto.FLOAT)]
    assert sum(t.data_type == ELEMENT[DTYPES[dtype]] for t in weights) > len(weights) / 2


def test_a_reduced_graph_fails_the_check_at_the_fp32_tolerance(networks, tmp_path, monkeypatch):
    """The check really compares with fp32: an fp16 graph is further from it than the fp32 tolerances allow."""
    spec, module = networks["sam3_text_encoder"]()
    monkeypatch.setitem(REDUCED_TOLERANCE, torch.float16, spec.tolerance)
    with pytest.raises(ExportParityError, match="sam3_text_encoder.text_features"):
        export_component(spec, module, tmp_path / "model.onnx", dtype=torch.float16)


def test_the_vaes_stay_fp32(flux_checkpoints):
    vae = AutoencoderKL.from_pretrained(flux_checkpoints["schnell"], subfolder="vae")
    for spec, _ in vae_specs("flux", vae) + vae_specs("objectclear", vae):
        assert graph_dtype(spec, torch.float16) == graph_dtype(spec, torch.bfloat16) == torch.float32, spec.name
    spec, _ = transformer_spec("flux_transformer", DiffusionPipeline.from_pretrained(
        flux_checkpoints["schnell"]).transformer)
    assert graph_dtype(spec, torch.bfloat16) == torch.bfloat16


def test_the_fp32_reference_of_a_bf16_stored_model_is_the_fp32_model(flux_checkpoints):
    """FLUX checkpoints are bf16: computed_in_fp32 upcasts one block at a time, and gives what the whole model
    upcast to fp32 gives, bit for bit, while the model stays in bf16."""
    spec, stored = transformer_spec("flux_transformer", DiffusionPipeline.from_pretrained(
        flux_checkpoints["dev"], dtype=torch.bfloat16).transformer)
    want = fp32_outputs(spec, transformer_spec("flux_transformer", DiffusionPipeline.from_pretrained(
        flux_checkpoints["dev"], dtype=torch.bfloat16).transformer.float())[1])
    got = fp32_outputs(spec, stored)
    assert all(np.array_equal(w, g) for case_w, case_g in zip(want, got) for w, g in zip(case_w, case_g))
    assert {p.dtype for p in stored.parameters()} == {torch.bfloat16}  # and back in bf16 afterwards


def test_t5_keeps_its_fp32_layers(flux_checkpoints):
    encoder = DiffusionPipeline.from_pretrained(flux_checkpoints["schnell"]).text_encoder_2
    reduce_precision(encoder, torch.float16)
    dtypes = {name: p.dtype for name, p in encoder.named_parameters()}
    assert {d for n, d in dtypes.items() if ".wo." in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if ".wo." not in n} == {torch.float16}


def test_bf16_graphs_are_checked_widened(networks, tmp_path):
    """ONNX Runtime's CPU provider has no bf16 kernels: the check runs a copy with every bf16 tensor widened to fp32,
    whose weights are the bf16 ones exactly, and removes it afterwards."""
    spec, module = networks["flux_clip_text_encoder"]()
    path = tmp_path / "model.onnx"
    export_component(spec, module, path, dtype=torch.bfloat16)
    stored = {t.name: onnx.numpy_helper.to_array(t).astype(np.float32)
              for t in onnx.load(str(path)).graph.initializer if t.data_type == onnx.TensorProto.BFLOAT16}
    with widened_copy(path) as widened:
        assert widened != path
        graph = onnx.load(str(widened)).graph
        assert not any(t.data_type == onnx.TensorProto.BFLOAT16 for t in graph.initializer)
        wide = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        assert stored and all(np.array_equal(wide[name], value) for name, value in stored.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.onnx"] + (
        ["model.onnx.data"] if (tmp_path / "model.onnx.data").exists() else []))
