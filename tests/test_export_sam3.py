"""SAM 3's exporter on the tiny checkpoint: ONNX Runtime against PyTorch, checked here independently of the
exporter's own check, at shapes it was neither traced nor checked with, and the three parts chained in ONNX Runtime
against transformers' own monolithic `Sam3Model` forward on a real photo."""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skimage.data
import torch
from PIL import Image

from export.onnx_export import ExportParityError, export_component
from export.sam3 import DETECTOR_OUTPUTS, box_prompts, component_specs, export_sam3, load_sam3, text_batch
from export.tiny import build_tiny_sam3
from transformers import Sam3Model, Sam3Processor

PARTS = ["sam3_image_encoder", "sam3_text_encoder", "sam3_detector", "sam3_detector_boxes"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_tiny_sam3(tmp_path_factory.mktemp("sam3_tiny"))


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_sam3(checkpoint)


@pytest.fixture(scope="module")
def exported(checkpoint, model, tmp_path_factory):
    """The real exporter into a temporary repository: {name: (spec, module, path, report)}, with wrappers of a
    separately loaded model as the PyTorch side."""
    repository = tmp_path_factory.mktemp("repository")
    reports = {report.name: report for report in export_sam3(checkpoint, repository)}
    return {spec.name: (spec, module, repository / spec.name / "1" / "model.onnx", reports[spec.name])
            for spec, module in component_specs(model)}


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_both(module, path, names, inputs):
    with torch.no_grad():
        want = module(*inputs)
    want = want if isinstance(want, tuple) else (want,)
    got = session(path).run(None, {n: t.numpy() for n, t in zip(names, inputs)})
    return [w.numpy() for w in want], got


def new_inputs(name, model):
    """Shapes that are neither the export example nor among the spec's check inputs."""
    config = model.config
    vit = config.vision_config.backbone_config
    grid, width, vocab = vit.image_size // vit.patch_size, config.vision_config.fpn_hidden_size, \
        config.text_config.vocab_size
    g = torch.Generator().manual_seed(7)
    if name == "sam3_image_encoder":
        return (torch.rand(4, 3, vit.image_size, vit.image_size, generator=g) * 2 - 1,)
    if name == "sam3_text_encoder":
        return text_batch(2, 20, vocab, 7)
    batch, tokens = (1, 16) if name == "sam3_detector_boxes" else (2, 5)
    features = tuple(torch.randn(batch, width, s, s, generator=g) for s in (4 * grid, 2 * grid, grid, grid))
    text = (torch.randn(batch, tokens, width, generator=g), text_batch(batch, tokens, vocab, 7)[1])
    return features + text + (box_prompts(batch, 3, 7) if name == "sam3_detector_boxes" else ())


@pytest.mark.parametrize("name", PARTS)
def test_part_at_new_shape(exported, model, name):
    spec, module, path, _ = exported[name]
    inputs = new_inputs(name, model)
    traced = {tuple(t.shape) for t in spec.dummy_inputs()}
    checked = {tuple(t.shape) for case in spec.check_inputs() for t in case}
    assert {tuple(t.shape) for t in inputs} - traced - checked  # really a shape the exporter never saw
    want, got = run_both(module, path, spec.input_names, inputs)
    assert len(got) == len(spec.output_names)
    for w, g in zip(want, got):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * max(1.0, np.abs(w).max()))  # measured <= 2e-7
        assert np.abs(w).max() > 0


# ------------------------------------------------------------------------------------------------------------------
# The three parts chained in ONNX Runtime vs transformers' monolithic forward on a real photo
# ------------------------------------------------------------------------------------------------------------------
def chained(exported, inputs, boxes=False):
    fpn = session(exported["sam3_image_encoder"][2]).run(None, {"pixel_values": inputs["pixel_values"].numpy()})
    text, mask = inputs["input_ids"].numpy(), inputs["attention_mask"].numpy()
    (text_features,) = session(exported["sam3_text_encoder"][2]).run(None, {"input_ids": text,
                                                                           "attention_mask": mask})
    feed = dict(zip(["fpn0", "fpn1", "fpn2", "pos2"], fpn), text_features=text_features, text_mask=mask)
    name = "sam3_detector"
    if boxes:
        name = "sam3_detector_boxes"
        feed |= {"input_boxes": inputs["input_boxes"].numpy().astype(np.float32),
                 "input_boxes_labels": inputs["input_boxes_labels"].numpy()}
    return dict(zip(DETECTOR_OUTPUTS, session(exported[name][2]).run(DETECTOR_OUTPUTS, feed)))


@pytest.fixture(scope="module")
def photo_case(checkpoint):
    processor = Sam3Processor.from_pretrained(checkpoint)
    model = Sam3Model.from_pretrained(checkpoint, dtype=torch.float32).eval()  # stock: no wrapper, no patch
    return processor, model, Image.fromarray(skimage.data.chelsea())


@pytest.mark.parametrize("boxes", [False, True], ids=["text", "text+boxes"])
def test_chained_parts_match_transformers_forward(exported, photo_case, boxes):
    processor, model, photo = photo_case
    extra = dict(input_boxes=[[[60, 30, 260, 250], [300, 40, 440, 200]]], input_boxes_labels=[[1, 0]]) if boxes \
        else {}
    inputs = processor(images=photo, text="a cat", return_tensors="pt", **extra)
    assert inputs["pixel_values"].shape[-2:] == (112, 112) and inputs["attention_mask"].sum() == 4  # bos a cat eos
    with torch.no_grad():
        want = model(**{k: v for k, v in inputs.items() if k != "original_sizes"})
    got = chained(exported, inputs, boxes)
    for name in DETECTOR_OUTPUTS:
        w = getattr(want, name).numpy()
        assert got[name].shape == w.shape
        # relative to each output's own scale (random-init mask logits are ~1e-3): measured <= 1.3e-6
        np.testing.assert_allclose(got[name], w, rtol=0, atol=2e-5 * np.abs(w).max(), err_msg=name)
    masks = got["pred_masks"]
    assert masks.std() > 0.1 * np.abs(masks).max()  # masks vary across the photo, so the comparison means something
    # The prompt reaches the detector: another prompt moves the scores far more than the tolerance.
    other = chained(exported, processor(images=photo, text="a dog", return_tensors="pt", **extra), boxes)
    assert np.abs(other["pred_logits"] - got["pred_logits"]).max() > 1e-2 * np.abs(got["pred_logits"]).max()


# ------------------------------------------------------------------------------------------------------------------
# The exporter's own check, and the graphs' interface
# ------------------------------------------------------------------------------------------------------------------
def test_exporter_reports_within_tolerance(exported):
    for spec, _, _, report in exported.values():
        assert len(report.cases) == len(spec.check_inputs()) and report.max_error <= spec.tolerance


def test_exporter_fails_loudly_at_zero_tolerance(exported, tmp_path):
    spec, module, _, _ = exported["sam3_text_encoder"]
    with pytest.raises(ExportParityError, match="sam3_text_encoder.text_features"):
        export_component(dataclasses.replace(spec, tolerance=0.0), module, tmp_path / "model.onnx")


def axes(values):
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def test_graph_interface(exported):
    graphs = {name: onnx.load(str(exported[name][2]), load_external_data=False) for name in PARTS}
    image = graphs["sam3_image_encoder"]
    assert axes(image.graph.input) == {"pixel_values": ["batch", 3, 112, 112]}
    assert axes(image.graph.output) == {"fpn0": ["batch", 32, 32, 32], "fpn1": ["batch", 32, 16, 16],
                                        "fpn2": ["batch", 32, 8, 8], "pos2": ["batch", 32, 8, 8]}
    text = graphs["sam3_text_encoder"]
    assert axes(text.graph.input) == {"input_ids": ["batch", "tokens"], "attention_mask": ["batch", "tokens"]}
    assert axes(text.graph.output) == {"text_features": ["batch", "tokens", 32]}
    detector = axes(graphs["sam3_detector"].graph.output)
    assert detector == {"pred_masks": ["batch", 8, 32, 32], "pred_boxes": ["batch", 8, 4], "pred_logits": ["batch", 8],
                        "presence_logits": ["batch", 1], "semantic_seg": ["batch", 1, 32, 32]}
    boxes = graphs["sam3_detector_boxes"]
    assert axes(boxes.graph.input)["input_boxes"] == [1, "num_boxes", 4]
    assert axes(boxes.graph.input)["text_mask"] == [1, "tokens"]
    ops = {name: {node.op_type for node in graph.graph.node} for name, graph in graphs.items()}
    assert "RoiAlign" in ops["sam3_detector_boxes"] and "RoiAlign" not in ops["sam3_detector"]
    for name in ("sam3_image_encoder", "sam3_text_encoder"):  # external weights, as at full size (1.8 / 1.4 GB)
        assert exported[name][2].with_name("model.onnx.data").exists()
