"""The real exporter on the tiny FLUX.1 pipelines: ONNX Runtime agrees with PyTorch at shapes other than the traced
one, the graphs have the inputs the serving code feeds (guidance for dev and Fill only), named dynamic axes, no
float64 (TensorRT), and the serving configs beside them; schnell, dev and Fill each their own transformer and
pipeline folder, over text encoders and a VAE they share."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from diffusers import FluxTransformer2DModel

from export.flux import BatchedIdsTransformer, transformer_spec
from export.onnx_export import ExportParityError, export_component
from pipelines.flux import GENERATORS, SHARED_MODELS, TRANSFORMER_MODELS

TRANSFORMER_INPUTS = ["hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids"]


def graph(path):
    return onnx.load(str(path), load_external_data=False)


def input_axes(model) -> dict[str, list]:
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}


def double_tensors(model) -> list[str]:
    values = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    return ([v.name for v in values if v.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE]
            + [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.DOUBLE])


def test_dev_transformer_export_reports_parity_at_untraced_shapes(tmp_path, flux_checkpoints):
    transformer = FluxTransformer2DModel.from_pretrained(flux_checkpoints["dev"], subfolder="transformer")
    spec, module = transformer_spec(TRANSFORMER_MODELS["dev"], transformer)
    report = export_component(spec, module.eval(), tmp_path / "model.onnx")
    # traced at batch 2, 4x6 tokens, 16 text tokens; checked at a 512 px square with schnell's 256 text tokens
    # and at batch 3 with an odd 3x5 grid and dev's 512
    assert [case["shapes"][0] for case in report.cases] == [[1, 1024, 64], [3, 15, 64]]
    assert report.max_error <= 1e-4


def test_transformer_graphs_match_what_the_pipeline_feeds(model_repository):
    graphs = {variant: graph(model_repository / model / "1" / "model.onnx")
              for variant, model in TRANSFORMER_MODELS.items()}
    for variant, model in graphs.items():
        axes = input_axes(model)
        expected = TRANSFORMER_INPUTS + ([] if variant == "schnell" else ["guidance"])
        assert list(axes) == expected, variant
        assert axes["hidden_states"] == ["batch", "tokens", 384 if variant == "fill" else 64]
        assert axes["img_ids"] == ["batch", "tokens", 3] and axes["txt_ids"] == ["batch", "text", 3]
        assert double_tensors(model) == [], f"{variant}: float64 RoPE left in the graph"
    assert (model_repository / "flux_schnell_transformer" / "1" / "model.onnx.data").exists()  # external weights


def test_pipeline_configs_are_written_for_the_serving_models(model_repository):
    lengths = {"schnell": model_repository / GENERATORS["schnell"], "dev": model_repository / GENERATORS["dev"],
               "fill": model_repository / "flux_fill_inpaint"}
    for variant, model in lengths.items():
        folder = model / "1" / "pipeline"
        serving = json.loads((folder / "serving.json").read_text())
        assert serving["max_sequence_length"] == (256 if variant == "schnell" else 512), variant
        for part in ("tokenizer", "tokenizer_2", "scheduler", "vae", "transformer"):
            assert (folder / part).is_dir(), (variant, part)
        assert not list(folder.rglob("*.safetensors")), "configs only, no weights"


def test_exported_transformer_batches_rows_of_different_timesteps(model_repository, flux_checkpoints):
    """Two requests' rows in one run (what Triton's batcher makes) give each request's own single-row result."""
    session = ort.InferenceSession(str(model_repository / "flux_fill_transformer" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    spec, _ = transformer_spec("flux_fill_transformer", FluxTransformer2DModel.from_pretrained(
        flux_checkpoints["fill"], subfolder="transformer"))
    inputs = dict(zip(spec.input_names, (t.numpy() for t in spec.check_inputs()[1])))  # batch 3
    batched = session.run(None, inputs)[0]
    for row in range(3):
        single = session.run(None, {k: v[row:row + 1] for k, v in inputs.items()})[0]
        np.testing.assert_allclose(batched[row:row + 1], single, atol=1e-5)


def test_a_zero_tolerance_makes_the_exporter_raise(tmp_path, flux_checkpoints):
    transformer = FluxTransformer2DModel.from_pretrained(flux_checkpoints["schnell"], subfolder="transformer")
    spec, module = transformer_spec(TRANSFORMER_MODELS["schnell"], transformer)
    strict = type(spec)(**{**spec.__dict__, "tolerance": 0.0})
    with pytest.raises(ExportParityError):
        export_component(strict, module.eval(), tmp_path / "model.onnx")


def test_batched_ids_wrapper_is_the_transformer(flux_checkpoints):
    transformer = FluxTransformer2DModel.from_pretrained(flux_checkpoints["dev"], subfolder="transformer").eval()
    spec, wrapper = transformer_spec(TRANSFORMER_MODELS["dev"], transformer)
    hidden, text, pooled, timestep, img_ids, txt_ids, guidance = spec.check_inputs()[0]
    with torch.no_grad():
        direct = transformer(hidden_states=hidden, encoder_hidden_states=text, pooled_projections=pooled,
                             timestep=timestep, img_ids=img_ids[0], txt_ids=txt_ids[0], guidance=guidance).sample
        assert torch.equal(wrapper.eval()(hidden, text, pooled, timestep, img_ids, txt_ids, guidance), direct)
    assert isinstance(wrapper, BatchedIdsTransformer)


def test_the_variants_share_their_text_encoders_and_vae(flux_checkpoints):
    """What serving them side by side rests on: schnell, dev and Fill hold the same weights in the parts exported once
    (SHARED_MODELS; like the real FLUX.1 family, the tiny folders are built so) and different transformers."""
    def weights(variant, part):
        return (flux_checkpoints[variant] / part).glob("*.safetensors")

    for part in ("text_encoder", "text_encoder_2", "vae"):
        files = {variant: [p.read_bytes() for p in sorted(weights(variant, part))] for variant in flux_checkpoints}
        assert files["schnell"] and files["schnell"] == files["dev"] == files["fill"], part
    transformers = {variant: b"".join(p.read_bytes() for p in weights(variant, "transformer"))
                    for variant in flux_checkpoints}
    assert len(set(transformers.values())) == 3
    assert set(SHARED_MODELS) == {"clip", "t5", "vae_decoder"}
