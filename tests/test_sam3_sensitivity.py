"""The tiny SAM 3 reacts to every hand-off of the served path, so the parity tests (test_sam3_served.py) would catch
a plumbing bug: the image, each FPN level, the level-2 position encoding and the text features, dropped (zeros) or
swapped for another one, each move the served outputs far beyond the parity tolerances.

Runs sam3_segment's own code (pipelines/sam3.py: Sam3Segmenter, transformers' processor, the exported graphs in
ONNX Runtime) in this process, with the detector's inputs rewired; a running server could not be rewired. Every
output the hand-off reaches must move by at least MARGIN times its parity tolerance (FPN levels 0 and 1 reach only
the masks). Measured with the fan-in scaled tiny checkpoint (export/tiny.py), the least-moved output of each case:
noise photo 375x (scores), fpn0 dropped 185x and fpn1 dropped 113x (masks), fpn2 dropped 321x (masks), pos2 dropped
24x (masks), text dropped 914x (scores), another prompt's text 66x (masks). With the checkpoint before it, boxes
moved 0x in every case, a noise photo moved scores 1x, and dropping fpn0 or pos2 moved the masks 1x and 2x.
"""
from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from transformers import Sam3Processor

from pipelines.components import local_components
from pipelines.sam3 import COMPONENT_MODELS, Sam3Segmenter
from test_sam3_served import BOX_TOLERANCE_PX, MASK_PIXEL_TOLERANCE, SCORE_TOLERANCE

MARGIN = 10  # "far beyond": at least ten times each parity tolerance
PROMPT = "a cat"


class Rewired:
    """The detector component with its inputs changed on the way in: the plumbing bug under test."""

    def __init__(self, detector, change):
        self.detector, self.change = detector, change

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.detector(**self.change(dict(inputs)))


@pytest.fixture(scope="module")
def served(model_repository):
    components = local_components(model_repository, COMPONENT_MODELS, threads=2)
    processor = Sam3Processor.from_pretrained(model_repository / "sam3_segment" / "1" / "processor")
    photo = skimage.data.chelsea()
    other = np.asarray(Image.fromarray(skimage.data.astronaut()).resize(photo.shape[1::-1]))
    other_pixels = processor(images=Image.fromarray(other), return_tensors="pt")["pixel_values"]
    other_features = components["image_encoder"](pixel_values=other_pixels)
    dog = processor(text="a dog", return_tensors="pt")
    dog_text = components["text_encoder"](input_ids=dog["input_ids"], attention_mask=dog["attention_mask"])

    def segment(change=None, image=photo):
        rewired = dict(components, detector=Rewired(components["detector"], change or (lambda x: x)))
        # every query, unfiltered, so outputs compare one to one
        return Sam3Segmenter(rewired, processor)(image, PROMPT, score_threshold=0.0)

    return segment, photo, other_features, dog_text["text_features"]


def zero(name):
    return lambda inputs: inputs | {name: torch.zeros_like(inputs[name])}


EVERYTHING, MASKS = ("scores", "boxes", "masks"), ("masks",)  # FPN levels 0 and 1 feed only the mask decoder
CASES = {  # case: (the detector's inputs rewired, given another photo's features and another prompt's; what moves)
    "fpn0 dropped": (lambda o, t: zero("fpn0"), MASKS),
    "fpn1 dropped": (lambda o, t: zero("fpn1"), MASKS),
    "fpn2 dropped": (lambda o, t: zero("fpn2"), EVERYTHING),
    "pos2 dropped": (lambda o, t: zero("pos2"), EVERYTHING),
    "text features dropped": (lambda o, t: zero("text_features"), EVERYTHING),
    "fpn0 of another photo": (lambda o, t: lambda inputs: inputs | {"fpn0": o["fpn0"]}, MASKS),
    "fpn1 of another photo": (lambda o, t: lambda inputs: inputs | {"fpn1": o["fpn1"]}, MASKS),
    "fpn2 of another photo": (lambda o, t: lambda inputs: inputs | {"fpn2": o["fpn2"]}, EVERYTHING),
    "fpn2 and pos2 swapped": (lambda o, t: lambda inputs: inputs | {"fpn2": inputs["pos2"], "pos2": inputs["fpn2"]},
                              EVERYTHING),
    "text features of another prompt": (lambda o, t: lambda inputs: inputs | {
        "text_features": t[:, :inputs["text_features"].shape[1]]}, EVERYTHING),
}


def moves(a, b) -> dict[str, float]:
    """How far b is from a, in multiples of each parity tolerance of test_sam3_served.py."""
    assert a.scores.shape == b.scores.shape == (8,)  # every query of the tiny model
    return {"scores": float(np.abs(a.scores - b.scores).max()) / SCORE_TOLERANCE,
            "boxes": float(np.abs(a.boxes - b.boxes).max()) / BOX_TOLERANCE_PX,
            "masks": int((a.masks != b.masks).sum()) / (MASK_PIXEL_TOLERANCE * a.masks.size)}


@pytest.mark.parametrize("case", list(CASES) + ["image replaced by noise"])
def test_each_hand_off_moves_the_served_outputs(served, case):
    segment, photo, other_features, dog_text = served
    reference = segment()
    if case == "image replaced by noise":
        changed, reached = segment(image=np.random.default_rng(0).integers(0, 256, photo.shape, dtype=np.uint8)), \
            EVERYTHING
    else:
        rewire, reached = CASES[case]
        changed = segment(rewire(other_features, dog_text))
    moved = moves(reference, changed)
    print(f"{case}: " + ", ".join(f"{k} {v:.0f}x" for k, v in moved.items()))
    unmoved = {output: f"{moved[output]:.1f}x" for output in reached if moved[output] < MARGIN}
    assert not unmoved, f"{case} moves these outputs by less than {MARGIN}x their parity tolerance: {unmoved}"


def test_the_unchanged_path_is_reproducible(served):
    """The comparison baseline itself: the same call twice gives the same outputs exactly."""
    segment = served[0]
    assert max(moves(segment(), segment()).values()) == 0
