"""Where remove_object's time goes: segmentation (sam3_segment) vs inpainting (objectclear_inpaint) vs the
chained model, per preset, through a real tritonserver.

    python -m benchmarks.remove_object_split [--repeats 5]

One server per preset; on each, the same photo (scikit-image's coffee) and prompt go to sam3_segment, the union of
its masks to objectclear_inpaint, and the photo and prompt to remove_object; medians after one warm-up.
"""
from __future__ import annotations

import argparse

import numpy as np
import skimage.data
from PIL import Image

from client.api import Client
from benchmarks.timing import median_seconds
from client.demo import png
from server.launcher import PRESETS, TritonServer

PROMPT = "a cup"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    image = png(Image.fromarray(skimage.data.coffee()))
    rows = []
    for preset in PRESETS:
        with TritonServer(preset=preset) as server, Client(server.http_url) as client:
            union = png(Image.fromarray((client.segment(image, PROMPT).masks.any(axis=0) * 255).astype(np.uint8)))
            segment = median_seconds(lambda: client.segment(image, PROMPT), args.repeats)
            inpaint = median_seconds(lambda: client.inpaint(image, union, seed=0), args.repeats)
            chained = median_seconds(lambda: client.remove(image, PROMPT, seed=0), args.repeats)
        rows.append((preset, segment, inpaint, chained))
        print(f"{preset}: segment {segment:.3f} s, inpaint {inpaint:.3f} s, remove_object {chained:.3f} s", flush=True)
    print(f"\n| preset | sam3_segment (s) | objectclear_inpaint (s) | remove_object (s) | chained / (segment + inpaint) |"
          f"\n|---|---|---|---|---|")
    for preset, segment, inpaint, chained in rows:
        print(f"| {preset} | {segment:.3f} | {inpaint:.3f} | {chained:.3f} | {chained / (segment + inpaint):.2f} |")


if __name__ == "__main__":
    main()
