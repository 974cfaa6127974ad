"""SAM 3 text-prompted segmentation as a plain Python class: image + prompt (+ box exemplars) -> instances.

Pre- and post-processing are transformers' own `Sam3Processor` (resize to the model's square input, [-1, 1]
normalisation, `post_process_instance_segmentation`) and its CLIP tokenizer (padded to the text encoder's 32
positions, longer prompts truncated as Meta's SAM 3 tokenizer does); the networks are
`Component`s: image encoder (once per image), text encoder (once per distinct prompt, cached), detector + mask
decoder (once per image and prompt; a second graph when box exemplars are given, because transformers runs the
geometry encoder only then). Features stay on `device` between the networks, and so does the post-processing.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers import Sam3Processor
from transformers.models.sam3.modeling_sam3 import Sam3ImageSegmentationOutput

from pipelines.components import Component, OnDevice
from pipelines.imaging import InputError, check_range

TEXT_TOKENS = 32  # the CLIP text encoder's positions: Sam3Processor pads every prompt to this
MAX_BOXES = 64  # box exemplars per request: the exported geometry encoder's (and its TensorRT profile's) bound
COMPONENT_MODELS = {"image_encoder": "sam3_image_encoder", "text_encoder": "sam3_text_encoder",
                    "detector": "sam3_detector", "detector_boxes": "sam3_detector_boxes"}
COMPONENT_OUTPUTS = {"image_encoder": ["fpn0", "fpn1", "fpn2", "pos2"], "text_encoder": ["text_features"],
                     "detector": ["pred_masks", "pred_boxes", "pred_logits", "presence_logits"],
                     "detector_boxes": ["pred_masks", "pred_boxes", "pred_logits", "presence_logits"]}


@dataclass
class Segmentation:
    masks: np.ndarray  # (K, H, W) uint8 0/1 at the image's resolution
    boxes: np.ndarray  # (K, 4) float32 xyxy pixels
    scores: np.ndarray  # (K,) float32

    def union(self) -> np.ndarray:
        """(H, W) uint8 0/255: every instance together."""
        return (self.masks.any(axis=0) * 255).astype(np.uint8)


class Sam3Segmenter:
    def __init__(self, components: dict[str, Component], processor: Sam3Processor, text_cache_size: int = 256,
                 device: str = "cpu"):
        self.device = torch.device(device)
        self.image_encoder, self.text_encoder, self.detector, self.detector_boxes = (
            OnDevice(components[role], self.device)
            for role in ("image_encoder", "text_encoder", "detector", "detector_boxes"))
        self.processor = processor
        self.text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.text_cache_size = text_cache_size

    def __call__(self, image: np.ndarray, prompt: str, boxes: np.ndarray | None = None,
                 score_threshold: float = 0.3, mask_threshold: float = 0.5) -> Segmentation:
        """image (H, W, 3) uint8 RGB; boxes (N, 4) xyxy pixels, positive exemplars, or None."""
        prompt = prompt.strip()
        if boxes is not None and len(boxes) == 0:
            boxes = None
        if not prompt and boxes is None:
            raise InputError("PROMPT", "empty; say what to segment (or give BOXES)")
        if boxes is not None:
            self.check_boxes(boxes, image.shape)
        check_range("SCORE_THRESHOLD", score_threshold, 0.0, 1.0)
        # boxes alone: the processor adds its own placeholder text ("visual"), as transformers runs them
        inputs = self.processor(images=Image.fromarray(image), input_boxes=None if boxes is None else [boxes.tolist()],
                                return_tensors="pt")
        if prompt:
            inputs.update(self.tokenize(prompt))
        inputs = inputs.to(self.device)
        features = self.image_encoder(pixel_values=inputs["pixel_values"])
        text_features = self.encode_text(prompt, inputs["input_ids"], inputs["attention_mask"])
        prompt_inputs = dict(features, text_features=text_features, text_mask=inputs["attention_mask"])
        if boxes is None:
            outputs = self.detector(**prompt_inputs)
        else:
            outputs = self.detector_boxes(**prompt_inputs, input_boxes=inputs["input_boxes"],
                                          input_boxes_labels=inputs["input_boxes_labels"])
        return self.postprocess(outputs, inputs["original_sizes"], score_threshold, mask_threshold)

    @staticmethod
    def check_boxes(boxes: np.ndarray, shape) -> None:
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise InputError("BOXES", f"expected shape [N, 4] (x0, y0, x1, y1 pixels), got {list(boxes.shape)}")
        if len(boxes) > MAX_BOXES:
            raise InputError("BOXES", f"{len(boxes)} boxes; at most {MAX_BOXES}")
        if not np.isfinite(boxes).all():
            raise InputError("BOXES", "contains NaN or infinity")
        if (boxes[:, 2] <= boxes[:, 0]).any() or (boxes[:, 3] <= boxes[:, 1]).any():
            raise InputError("BOXES", "each box needs x1 > x0 and y1 > y0")
        height, width = shape[:2]
        if (boxes < 0).any() or (boxes[:, [0, 2]] > width).any() or (boxes[:, [1, 3]] > height).any():
            raise InputError("BOXES", f"outside the {width}x{height} image; pixel coordinates 0..width, 0..height")

    def tokenize(self, prompt: str) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask (1, 32). A longer prompt keeps its first 30 tokens and the end token, as
        Meta's SAM 3 tokenizer truncates (Sam3Processor pads to 32 but would pass every token on, past the text
        encoder's position table)."""
        return self.processor.tokenizer(prompt, padding="max_length", max_length=TEXT_TOKENS, truncation=True,
                                        return_tensors="pt")

    def encode_text(self, prompt: str, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text features are a function of the prompt alone: computed once per distinct prompt (LRU)."""
        if prompt in self.text_cache:
            self.text_cache.move_to_end(prompt)
            return self.text_cache[prompt]
        features = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)["text_features"]
        self.text_cache[prompt] = features
        if len(self.text_cache) > self.text_cache_size:
            self.text_cache.popitem(last=False)
        return features

    def postprocess(self, outputs: dict[str, torch.Tensor], original_sizes: torch.Tensor, score_threshold: float,
                    mask_threshold: float) -> Segmentation:
        result = self.processor.post_process_instance_segmentation(
            Sam3ImageSegmentationOutput(**outputs), threshold=score_threshold, mask_threshold=mask_threshold,
            target_sizes=original_sizes.tolist())[0]
        masks = result["masks"].to(torch.uint8).cpu().numpy()
        if len(masks) == 0:  # the processor skips the resize when nothing passed the threshold
            masks = np.zeros((0, *original_sizes[0].tolist()), np.uint8)
        return Segmentation(masks, result["boxes"].float().cpu().numpy(), result["scores"].float().cpu().numpy())
