"""SAM 3 as transformers runs it: Sam3Model's monolithic forward + Sam3Processor's pre- and post-processing, no ONNX,
no Triton. What sam3_segment and remove_object are compared with."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import Sam3Model, Sam3Processor


def load_sam3(checkpoint) -> tuple[Sam3Model, Sam3Processor]:
    return Sam3Model.from_pretrained(checkpoint).eval(), Sam3Processor.from_pretrained(checkpoint)


TEXT_CONTEXT = 32  # the CLIP text encoder's positions (max_position_embeddings)


def meta_truncate(inputs) -> None:
    """A prompt longer than the text encoder's context, as Meta's SAM 3 tokenizer (sam3/model/tokenizer_ve.py) cuts
    it: the first 32 tokens with the last replaced by the end token. Sam3Processor itself passes every token on."""
    ids = inputs["input_ids"]
    if ids.shape[1] > TEXT_CONTEXT:
        inputs["input_ids"] = torch.cat([ids[:, :TEXT_CONTEXT - 1], ids[:, -1:]], dim=1)  # the end token is last
        inputs["attention_mask"] = inputs["attention_mask"][:, :TEXT_CONTEXT]


def sam3_reference(sam3: tuple[Sam3Model, Sam3Processor], image: np.ndarray, prompt: str, boxes=None,
                   threshold: float = 0.3, mask_threshold: float = 0.5) -> dict[str, np.ndarray]:
    """(H, W, 3) uint8 photo + text (and optional xyxy boxes) -> MASKS (N, H, W) 0/1, BOXES (N, 4), SCORES (N,)."""
    model, processor = sam3
    inputs = processor(images=Image.fromarray(image), text=prompt,
                       input_boxes=None if boxes is None else [boxes], return_tensors="pt")
    meta_truncate(inputs)
    with torch.no_grad():
        outputs = model(**inputs)
    result = processor.post_process_instance_segmentation(outputs, threshold=threshold, mask_threshold=mask_threshold,
                                                          target_sizes=inputs["original_sizes"].tolist())[0]
    return {"MASKS": result["masks"].numpy().astype(np.uint8), "BOXES": result["boxes"].numpy(),
            "SCORES": result["scores"].numpy()}
