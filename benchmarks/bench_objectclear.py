"""ObjectClear at benchmark size on CPU, all in one run:
  (a) objectclear_inpaint through Triton vs the same algorithm in-process in PyTorch (tests/reference), same weights;
  (b) throughput at concurrency 1, 2, 4, 8 (balanced) and how many UNet calls Triton's dynamic batcher merged;
  (c) each preset's latency relative to quality, against the seed's estimates.

    python -m benchmarks.bench_objectclear [--photo astronaut|coffee] [--repeats 3] [--concurrency 1 2 4 8]

The photo matters for (c): presets differ by short side (512/384/320/256), and a photo whose short side is below
512 is not upscaled, so quality then runs at the photo's own size. astronaut (512x512) shows the presets as
designed; coffee (600x400) is the demo photo.

The checkpoint is the tiny one with a larger UNet (export/tiny.py BENCH_UNET_CONFIG), so that the denoising loop
dominates a request as it does at full size; it is built and exported into artifacts/bench/ on first use.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import skimage.data
import tritonclient.http as httpclient
from PIL import Image, ImageDraw

from client.api import Client
from benchmarks.timing import median_seconds
from client.demo import demo_inputs, png
from export.objectclear import export_objectclear
from export.tiny import BENCH_UNET_CONFIG, build_tiny_objectclear
from pipelines.objectclear import COMPONENT_MODELS
from server.launcher import DEFAULT_MODEL_REPOSITORY, PRESETS, REPO_ROOT, TritonServer, preset_parameters

BENCH = REPO_ROOT / "artifacts" / "bench"
MODELS = ["objectclear_inpaint", *COMPONENT_MODELS.values()]  # the bench repository has no FLUX models
SEED_ESTIMATE = {"quality": "1.0x", "balanced": "2.5-3.0x", "ultra_fast": "4-5x", "low_memory": "2.0-2.5x"}


def prepare() -> tuple[Path, Path]:
    checkpoint, repository = BENCH / "objectclear", BENCH / "model_repository"
    if not (repository / "objectclear_unet" / "1" / "model.onnx").exists():
        build_tiny_objectclear(checkpoint, unet_config=BENCH_UNET_CONFIG)
        for model in MODELS + ["remove_object"]:  # configs and adapters; export fills in the rest
            shutil.copytree(DEFAULT_MODEL_REPOSITORY / model, repository / model, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.onnx", "*.onnx.data", "*.npz", "processor", "__pycache__"))
        export_objectclear(checkpoint, repository)
    return checkpoint, repository


def photo_and_mask(name: str) -> tuple[Image.Image, Image.Image]:
    if name == "coffee":
        return demo_inputs()
    photo = Image.fromarray(skimage.data.astronaut())
    mask = Image.new("L", photo.size, 0)
    ImageDraw.Draw(mask).ellipse((150, 20, 360, 240), fill=255)  # the helmeted head
    return photo, mask


def unet_counts(url: str) -> tuple[int, int]:
    with httpclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics("objectclear_unet")["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


def throughput(url: str, image: bytes, mask: bytes, concurrency: int, requests: int) -> float:
    def one(seed: int) -> None:
        with Client(url) as client:
            client.inpaint(image, mask, seed=seed)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up: every worker once
        start = time.perf_counter()
        list(pool.map(one, range(requests)))
    return requests / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", choices=["astronaut", "coffee"], default="astronaut")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 2, 4, 8], help="none: skip (b)")
    args = parser.parse_args()
    checkpoint, repository = prepare()
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from reference.objectclear_reference import objectclear_reference

    photo, mask = photo_and_mask(args.photo)
    image, mask_png = png(photo), png(mask)
    served, in_process = {}, {}
    for preset in PRESETS:
        params = preset_parameters(preset)
        steps, short_side, guidance = int(params["steps"]), int(params["short_side"]), float(params["guidance_scale"])
        with TritonServer(repository, preset=preset, models=MODELS) as server, Client(server.http_url) as client:
            served[preset] = median_seconds(lambda: client.inpaint(image, mask_png, seed=0), args.repeats)
        in_process[preset] = median_seconds(
            lambda: objectclear_reference(checkpoint, photo, mask, 0, steps, guidance, short_side), args.repeats)
        print(f"{preset}: Triton {served[preset]:.3f} s, PyTorch in-process {in_process[preset]:.3f} s", flush=True)

    rates, batching = {}, {}
    if args.concurrency:
        with TritonServer(repository, preset="balanced", models=MODELS) as server:
            for concurrency in args.concurrency:
                before = unet_counts(server.http_url)
                rates[concurrency] = throughput(server.http_url, image, mask_png, concurrency, max(4, 2 * concurrency))
                after = unet_counts(server.http_url)
                batching[concurrency] = (after[0] - before[0]) / max(1, after[1] - before[1])
                print(f"concurrency {concurrency}: {rates[concurrency]:.3f} req/s, "
                      f"{batching[concurrency]:.2f} UNet rows per execution", flush=True)

    print("\n(a, c) | preset | Triton (s) | PyTorch in-process (s) | Triton / PyTorch | speed-up over quality "
          "(Triton) | seed's estimate |\n|---|---|---|---|---|---|")
    for preset in PRESETS:
        print(f"| {preset} | {served[preset]:.3f} | {in_process[preset]:.3f} | "
              f"{served[preset] / in_process[preset]:.2f} | {served['quality'] / served[preset]:.2f}x | "
              f"{SEED_ESTIMATE[preset]} |")
    print(f"\n{args.photo}, median of {args.repeats}")
    if not rates:
        return
    print("\n(b) | concurrency | throughput (req/s) | vs concurrency 1 | UNet rows per execution (2 = one CFG pair) |"
          "\n|---|---|---|---|---|")
    for concurrency, rate in rates.items():
        print(f"| {concurrency} | {rate:.3f} | {rate / rates[args.concurrency[0]]:.2f}x | {batching[concurrency]:.2f} |")


if __name__ == "__main__":
    main()
