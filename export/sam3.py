"""SAM 3 (transformers `Sam3Model`, concept prompts): the served networks and their export descriptions.

Source: a Hugging Face id or local folder in `facebook/sam3`'s layout, or the tiny checkpoint (export/tiny.py).
Writes into the model repository (S = config image size, 1008 real; g = S / 14, 72 real; C = 256 real; Q = 200 real):
  sam3_image_encoder/1/model.onnx   pixel_values [B,3,S,S] in [-1, 1]
                                    -> fpn0 [B,C,4g,4g], fpn1 [B,C,2g,2g], fpn2 [B,C,g,g], pos2 [B,C,g,g]
  sam3_text_encoder/1/model.onnx    input_ids, attention_mask [B,T] int64 (T <= 32) -> text_features [B,T,C]
  sam3_detector/1/model.onnx        fpn0, fpn1, fpn2, pos2, text_features, text_mask -> pred_masks [B,Q,4g,4g],
                                    pred_boxes [B,Q,4] (xyxy in [0, 1]), pred_logits [B,Q], presence_logits [B,1],
                                    semantic_seg [B,1,4g,4g]
  sam3_detector_boxes/1/model.onnx  the same plus input_boxes [B,N,4] (cxcywh in [0, 1]) and input_boxes_labels [B,N]
                                    (1 positive, 0 negative, -10 padding)
Two detector graphs because transformers skips the geometry encoder when no box is given: "text + only padding
boxes" differs from "text only" (reference/sam3.md section 3).

The split is transformers' own (`get_vision_features`, `get_text_features`, `forward(vision_embeds=, text_embeds=)`),
so the chained parts compute exactly the monolithic forward. Tokenisation (CLIP BPE, padded to 32) and
post-processing (score = sigmoid(pred_logits) * sigmoid(presence_logits), thresholds, mask resize) stay outside.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim
from transformers import Sam3Model, Sam3Processor
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

from export.onnx_export import MAX_BATCH, ComponentSpec, ExportReport, NetworkWrapper, export_networks, seeded
from pipelines.sam3 import MAX_BOXES, TEXT_TOKENS

SERVING_MODELS = ["sam3_segment", "remove_object"]  # python-backend models that run the processor
DETECTOR_OUTPUTS = ["pred_masks", "pred_boxes", "pred_logits", "presence_logits", "semantic_seg"]


def load_sam3(folder: Path) -> Sam3Model:
    return Sam3Model.from_pretrained(Path(folder), dtype=torch.float32).eval()


# --------------------------------------------------------------------------------------------------------------------
# Export wrappers: transformers' own split, only re-plumbed to plain tensors in and out
# --------------------------------------------------------------------------------------------------------------------
class ImageEncoder(NetworkWrapper):
    """ViT + FPN neck. Only levels 0-2 and the level-2 sine position encoding reach the detector: level 3 (x0.5)
    is computed by the neck but dropped by `Sam3Model.forward`, and so is left out of the graph."""

    def __init__(self, model: Sam3Model):
        super().__init__(model=model)
        self.vision_encoder = model.vision_encoder

    def forward(self, pixel_values):
        out = self.vision_encoder(pixel_values)
        fpn = out.fpn_hidden_states
        return fpn[0], fpn[1], fpn[2], out.fpn_position_encoding[2]


class TextEncoder(NetworkWrapper):
    """CLIP text last hidden state -> 1024->256 projection (`get_text_features(...).pooler_output`)."""

    def __init__(self, model: Sam3Model):
        super().__init__(model=model)
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask,
                                            return_dict=True).pooler_output


@contextlib.contextmanager
def static_rpb_grid(decoder: nn.Module, grid: tuple[int, int]):
    """The box relative-position bias with the image-token grid as Python ints (reference/sam3.md 4.2 #1).

    `Sam3DetrDecoder` reads the grid back out of a `spatial_shapes` tensor and feeds it to `torch.arange`; under
    torch.export those become data-dependent sizes and SDPA fails on `Eq(u0*u1, 64)`. The grid is fixed by the
    image size, so passing it as ints changes no number. Only for the duration of one forward, on the instance."""
    stock = type(decoder)._get_rpb_matrix
    decoder._get_rpb_matrix = lambda reference_boxes, spatial_shape: stock(decoder, reference_boxes, grid)
    try:
        yield
    finally:
        del decoder._get_rpb_matrix


class Detector(NetworkWrapper):
    """DETR encoder + decoder + mask decoder + scoring, prompted by text features (and box exemplars).

    Calls `Sam3Model.forward(vision_embeds=, text_embeds=)`, i.e. exactly transformers' code path. Inputs it ignores
    (FPN level 3, position encodings of levels 0 and 1) are filled with zeros of the right shape."""

    def __init__(self, model: Sam3Model):
        super().__init__(model=model)
        self.model = model
        vit = model.config.vision_config.backbone_config
        self.grid = (vit.image_size // vit.patch_size,) * 2

    def forward(self, fpn0, fpn1, fpn2, pos2, text_features, text_mask, input_boxes=None, input_boxes_labels=None):
        unused = torch.zeros_like(fpn2[:, :, ::2, ::2])
        vision = Sam3VisionEncoderOutput(fpn_hidden_states=(fpn0, fpn1, fpn2, unused),
                                         fpn_position_encoding=(torch.zeros_like(fpn0), torch.zeros_like(fpn1), pos2,
                                                                unused))
        with static_rpb_grid(self.model.detr_decoder, self.grid):
            out = self.model(vision_embeds=vision, text_embeds=BaseModelOutputWithPooling(pooler_output=text_features),
                             attention_mask=text_mask, input_boxes=input_boxes, input_boxes_labels=input_boxes_labels)
        return tuple(getattr(out, name) for name in DETECTOR_OUTPUTS)


# --------------------------------------------------------------------------------------------------------------------
# Declarative descriptions
# --------------------------------------------------------------------------------------------------------------------
def text_batch(batch: int, tokens: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and a padding mask as the processor makes them: prompt lengths 2..tokens, zeros after."""
    g = seeded(seed)
    ids = torch.randint(0, vocab, (batch, tokens), generator=g)
    lengths = torch.randint(2, tokens + 1, (batch,), generator=g)
    mask = (torch.arange(tokens)[None] < lengths[:, None]).long()
    return ids * mask, mask


def box_prompts(batch: int, boxes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised cxcywh boxes with positive and negative labels, the last one padding (-10) from 3 boxes on."""
    g = seeded(seed)
    centre = torch.rand(batch, boxes, 2, generator=g) * 0.6 + 0.2
    size = torch.rand(batch, boxes, 2, generator=g) * 0.3 + 0.05
    labels = torch.randint(0, 2, (batch, boxes), generator=g)
    labels[:, 0] = 1
    if boxes > 2:
        labels[:, -1] = -10
    return torch.cat([centre, size], dim=-1), labels


def component_specs(model: Sam3Model, boxes: bool = True) -> list[tuple[ComponentSpec, NetworkWrapper]]:
    config = model.config
    vit = config.vision_config.backbone_config
    size, grid, width = vit.image_size, vit.image_size // vit.patch_size, config.vision_config.fpn_hidden_size
    vocab = config.text_config.vocab_size
    batch = Dim("batch", min=1, max=MAX_BATCH)
    tokens = Dim("tokens", min=2, max=TEXT_TOKENS)
    num_boxes = Dim("num_boxes", min=1, max=MAX_BOXES)

    def pixels(b, seed):
        return (torch.rand(b, 3, size, size, generator=seeded(seed)) * 2 - 1,)

    image_encoder = ComponentSpec(
        name="sam3_image_encoder",
        input_names=["pixel_values"], output_names=["fpn0", "fpn1", "fpn2", "pos2"],
        dynamic_shapes={"pixel_values": {0: batch}},  # the side is fixed: RoPE tables are built for config.image_size
        axis_names={"pixel_values": {0: "batch"}},
        dummy_inputs=lambda: pixels(2, 0),
        check_inputs=lambda: [pixels(1, 1), pixels(3, 2)],
        tolerance=1e-4,  # measured 1.2e-7 relative on the tiny model; full size 2.6e-5 absolute (sam3.md 4.1)
        external_data=True,  # 1.82 GB at full size
    )
    text_encoder = ComponentSpec(
        name="sam3_text_encoder",
        input_names=["input_ids", "attention_mask"], output_names=["text_features"],
        dynamic_shapes={"input_ids": {0: batch, 1: tokens}, "attention_mask": {0: batch, 1: tokens}},
        axis_names={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}},
        dummy_inputs=lambda: text_batch(2, TEXT_TOKENS, vocab, 0),
        check_inputs=lambda: [text_batch(1, TEXT_TOKENS, vocab, 1), text_batch(3, 12, vocab, 2)],
        tolerance=1e-5,  # measured 1.3e-7 relative on the tiny model; full size 2.6e-6 absolute
        external_data=True,  # 1.41 GB at full size
    )

    def detector_inputs(b, t, seed, n=0):
        g = seeded(seed)
        features = tuple(torch.randn(b, width, s, s, generator=g) for s in (4 * grid, 2 * grid, grid))
        pos2 = torch.randn(b, width, grid, grid, generator=g)
        text = torch.randn(b, t, width, generator=g)
        mask = text_batch(b, t, vocab, seed)[1]
        return (*features, pos2, text, mask) + (box_prompts(b, n, seed) if n else ())

    detector_axes = {name: {0: "batch"} for name in ("fpn0", "fpn1", "fpn2", "pos2")}
    detector_axes |= {"text_features": {0: "batch", 1: "tokens"}, "text_mask": {0: "batch", 1: "tokens"}}
    detector_dims = {name: {0: batch} for name in ("fpn0", "fpn1", "fpn2", "pos2")}
    detector_dims |= {"text_features": {0: batch, 1: tokens}, "text_mask": {0: batch, 1: tokens}}
    detector_names = ["fpn0", "fpn1", "fpn2", "pos2", "text_features", "text_mask"]
    detector = ComponentSpec(
        name="sam3_detector",
        input_names=detector_names, output_names=DETECTOR_OUTPUTS,
        dynamic_shapes=detector_dims, axis_names=detector_axes,
        dummy_inputs=lambda: detector_inputs(2, TEXT_TOKENS, 0),
        check_inputs=lambda: [detector_inputs(1, TEXT_TOKENS, 1), detector_inputs(3, 7, 2)],
        tolerance=1e-4,  # measured 1.8e-7 relative on the tiny model; full size 3.4e-5 absolute
    )
    specs = [(image_encoder, ImageEncoder(model)), (text_encoder, TextEncoder(model)), (detector, Detector(model))]
    if boxes:
        # One image per request: the geometry encoder unbinds the boxes per image (roi_align takes a list), which
        # fixes the batch while tracing. Token count and number of boxes stay dynamic.
        single = {name: {} for name in ("fpn0", "fpn1", "fpn2", "pos2")}
        detector_boxes = ComponentSpec(
            name="sam3_detector_boxes",
            input_names=detector_names + ["input_boxes", "input_boxes_labels"], output_names=DETECTOR_OUTPUTS,
            dynamic_shapes=single | {"text_features": {1: tokens}, "text_mask": {1: tokens},
                                     "input_boxes": {1: num_boxes}, "input_boxes_labels": {1: num_boxes}},
            axis_names={"text_features": {1: "tokens"}, "text_mask": {1: "tokens"},
                        "input_boxes": {1: "num_boxes"}, "input_boxes_labels": {1: "num_boxes"}},
            dummy_inputs=lambda: detector_inputs(1, TEXT_TOKENS, 0, n=2),
            check_inputs=lambda: [detector_inputs(1, TEXT_TOKENS, 1, n=1), detector_inputs(1, 9, 2, n=5)],
            tolerance=1e-4,  # measured 1.5e-7 relative on the tiny model; full size 3.4e-5 absolute (text + 1 box)
        )
        specs.append((detector_boxes, Detector(model)))
    return specs


def export_sam3(source: Path, repository: Path, dtype: torch.dtype = torch.float32,
                device: str = "cpu") -> list[ExportReport]:
    model = load_sam3(source)
    reports = export_networks(component_specs(model), repository, dtype, device)
    # The serving models tokenise and pre/post-process with transformers' own processor; each keeps a copy so a
    # model directory can be deployed on its own.
    processor = Sam3Processor.from_pretrained(Path(source))
    for model_name in SERVING_MODELS:
        processor.save_pretrained(Path(repository) / model_name / "1" / "processor")
    return reports
