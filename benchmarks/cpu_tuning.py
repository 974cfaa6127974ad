"""How to spend the CPU cores (issue 5: tune instance counts and ONNX Runtime sessions, show the effect).

balanced objectclear_inpaint at benchmark size (the bench checkpoint of bench_objectclear.py), throughput at
concurrency 1 and 4 for a few layouts of the same cores, side by side in one run:

    python -m benchmarks.cpu_tuning [--photo coffee] [--requests 8]

A layout is how many objectclear_inpaint instances run denoising loops at once (each a python-backend process
calling the networks through BLS), and how many UNet instances with how many ONNX Runtime intra-op threads each
serve their calls. Everything else is the shipped balanced config.
"""
from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

from benchmarks.bench_objectclear import MODELS, photo_and_mask, prepare, throughput, unet_counts
from client.demo import png
from server.launcher import TritonServer

# name -> (objectclear_inpaint instances, objectclear_unet instances, UNet intra-op threads; 0 = one per core)
LAYOUTS = {
    "shipped: 2 loops, 1 UNet on all cores": (2, 1, 0),
    "4 loops, 1 UNet on all cores": (4, 1, 0),
    "4 loops, 2 UNets on 1 thread each": (4, 2, 1),
    "2 loops, 1 UNet on 1 thread": (2, 1, 1),
}


def rewrite(path: Path, pattern: str, replacement: str) -> None:
    text = path.read_text()
    path.unlink()  # a symlink into the bench repository: write a file of its own instead
    path.write_text(re.sub(pattern, replacement, text))


def layout_repository(bench: Path, loops: int, unets: int, threads: int) -> Path:
    """A copy of the bench repository (files linked, configs rewritten) with this layout."""
    root = Path(tempfile.mkdtemp(prefix="cpu-tuning-"))
    for model in MODELS:
        shutil.copytree(bench / model, root / model, copy_function=lambda src, dst: Path(dst).symlink_to(src))
    rewrite(root / "objectclear_inpaint" / "config.pbtxt", r"count: \d+", f"count: {loops}")
    rewrite(root / "objectclear_unet" / "config.pbtxt", r"count: \d+", f"count: {unets}")
    rewrite(root / "objectclear_unet" / "config.pbtxt",
            r'(key: "intra_op_threads", value: \{ string_value: )"\d+"', rf'\g<1>"{threads}"')
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", choices=["astronaut", "coffee"], default="coffee")
    parser.add_argument("--requests", type=int, default=8, help="timed requests per concurrency level")
    args = parser.parse_args()
    _, bench = prepare()
    photo, mask = photo_and_mask(args.photo)
    image, mask_png = png(photo), png(mask)
    rows = {}
    for name, layout in LAYOUTS.items():
        rates = {}
        with TritonServer(layout_repository(bench, *layout), models=MODELS) as server:
            for concurrency in (1, 4):
                before = unet_counts(server.http_url)
                rates[concurrency] = throughput(server.http_url, image, mask_png, concurrency, args.requests)
                after = unet_counts(server.http_url)
        rows[name] = (rates, (after[0] - before[0]) / max(1, after[1] - before[1]))  # at 4, warm-up included
        print(f"{name}: {rates[1]:.3f} req/s at 1, {rates[4]:.3f} at 4", flush=True)

    shipped = rows[next(iter(LAYOUTS))][0]
    print(f"\n{args.photo}, balanced, {args.requests} timed requests per level after one per worker\n"
          "| layout | req/s at 1 | req/s at 4 | 4 vs 1 | at 1 vs shipped | at 4 vs shipped | UNet rows per run at 4 |"
          "\n|---|---|---|---|---|---|---|")
    for name, (rates, unet_rows) in rows.items():
        print(f"| {name} | {rates[1]:.3f} | {rates[4]:.3f} | {rates[4] / rates[1]:.2f}x | "
              f"{rates[1] / shipped[1]:.2f}x | {rates[4] / shipped[4]:.2f}x | {unet_rows:.2f} |")


if __name__ == "__main__":
    main()
