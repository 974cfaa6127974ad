"""The tiny SAM 3 reacts to every hand-off of the served path, so the parity tests (test_sam3_served.py) would catch
a plumbing bug: the image, each FPN level, the level-2 position encoding and the text features, dropped (zeros) or
swapped for another one, each move the served outputs far beyond the parity tolerances.

Runs sam3_segment's own code (pipelines/sam3.py: Sam3Segmenter, transformers' processor, the exported graphs in
ONNX Runtime) in this process, with the detector's inputs rewired; a running server could not be rewired. Measured
with the fan-in scaled tiny checkpoint (export/tiny.py), as multiples of the tolerances, the most-moved output of each
case: image 3700x (scores), fpn0 185x and fpn1 110x (masks: those levels only reach the mask decoder), fpn2 12600x
(boxes), pos2 750x (boxes), text 9900x (boxes). Before it, a noise photo moved scores by 0.7x the score tolerance and
fpn0 moved 61 mask pixels, within the mask tolerance.
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

MARGIN = 10  # "far beyond": at least ten times a parity tolerance, on the output that moves most
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


CASES = {
    "fpn0 dropped": lambda o, t: zero("fpn0"),
    "fpn1 dropped": lambda o, t: zero("fpn1"),
    "fpn2 dropped": lambda o, t: zero("fpn2"),
    "pos2 dropped": lambda o, t: zero("pos2"),
    "text features dropped": lambda o, t: zero("text_features"),
    "fpn0 of another photo": lambda o, t: lambda inputs: inputs | {"fpn0": o["fpn0"]},
    "fpn1 of another photo": lambda o, t: lambda inputs: inputs | {"fpn1": o["fpn1"]},
    "fpn2 of another photo": lambda o, t: lambda inputs: inputs | {"fpn2": o["fpn2"]},
    "fpn2 and pos2 swapped": lambda o, t: lambda inputs: inputs | {"fpn2": inputs["pos2"], "pos2": inputs["fpn2"]},
    "text features of another prompt": lambda o, t: lambda inputs: inputs | {
        "text_features": t[:, :inputs["text_features"].shape[1]]},
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
        changed = segment(image=np.random.default_rng(0).integers(0, 256, photo.shape, dtype=np.uint8))
    else:
        changed = segment(CASES[case](other_features, dog_text))
    moved = moves(reference, changed)
    print(f"{case}: " + ", ".join(f"{k} {v:.0f}x" for k, v in moved.items()))
    assert max(moved.values()) >= MARGIN, f"{case} moves the outputs by only {moved} x the parity tolerances"


def test_the_unchanged_path_is_reproducible(served):
    """The comparison baseline itself: the same call twice gives the same outputs exactly."""
    segment = served[0]
    assert max(moves(segment(), segment()).values()) == 0
