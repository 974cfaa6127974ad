"""ObjectClear at benchmark size on CPU, all in one run:
  (a) objectclear_inpaint and remove_object through Triton vs the same algorithms in-process in PyTorch
      (tests/reference: the ObjectClear reference, and transformers' Sam3Model for remove_object's mask), same weights;
  (b) throughput at concurrency 1, 2, 4, 8 (balanced) and how many UNet calls Triton's dynamic batcher merged;
  (c) each preset's latency relative to quality, against the seed's estimates.

    python -m benchmarks.bench_objectclear [--photo astronaut|coffee] [--repeats 3] [--concurrency 1 2 4 8]

The photo matters for (c): presets differ by short side (512/384/320/256), and a photo whose short side is below
512 is not upscaled, so quality then runs at the photo's own size. astronaut (512x512) shows the presets as
designed; coffee (600x400) is the demo photo.

The checkpoint is the tiny one with a larger UNet (export/tiny.py BENCH_UNET_CONFIG), so that the denoising loop
dominates a request as it does at full size; it is built and exported into artifacts/bench/ on first use. SAM 3 is
the tiny one `make export` put in model_repository/.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import skimage.data
import tritonclient.http as httpclient
from PIL import Image, ImageDraw

from client.api import Client
from benchmarks.timing import median_seconds
from client.demo import demo_inputs, png
from export.objectclear import export_objectclear
from export.tiny import BENCH_UNET_CONFIG, build_tiny_objectclear
from pipelines import sam3
from pipelines.objectclear import COMPONENT_MODELS
from server.launcher import DEFAULT_MODEL_REPOSITORY, PRESETS, REPO_ROOT, TritonServer, preset_parameters

BENCH = REPO_ROOT / "artifacts" / "bench"
MODELS = ["objectclear_inpaint", *COMPONENT_MODELS.values()]  # the bench repository has no FLUX models
REMOVE_MODELS = ["remove_object", *sam3.COMPONENT_MODELS.values()]  # with MODELS' networks
PROMPTS = {"astronaut": "the astronaut", "coffee": "a cup"}  # for remove_object
SEED_ESTIMATE = {"quality": "1.0x", "balanced": "2.5-3.0x", "ultra_fast": "4-5x", "low_memory": "2.0-2.5x"}


def prepare() -> tuple[Path, Path]:
    checkpoint, repository = BENCH / "objectclear", BENCH / "model_repository"
    for model in MODELS + ["remove_object"]:  # configs and adapters, refreshed every run; the export adds the rest once
        shutil.copytree(DEFAULT_MODEL_REPOSITORY / model, repository / model, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.onnx", "*.onnx.data", "*.npz", "processor", "__pycache__"))
    if not (repository / "objectclear_unet" / "1" / "model.onnx").exists():
        build_tiny_objectclear(checkpoint, unet_config=BENCH_UNET_CONFIG)
        export_objectclear(checkpoint, repository)
    if not (DEFAULT_MODEL_REPOSITORY / "remove_object" / "1" / "processor").exists():
        raise SystemExit("no SAM 3 in model_repository/: run `make export` first")
    for model in sam3.COMPONENT_MODELS.values():
        shutil.copytree(DEFAULT_MODEL_REPOSITORY / model, repository / model, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "remove_object" / "1" / "processor",
                    repository / "remove_object" / "1" / "processor", dirs_exist_ok=True)
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


def remove_in_process(sam3_model, checkpoint: Path, photo: Image.Image, prompt: str, params: dict[str, str]):
    """remove_object's algorithm in PyTorch: transformers' SAM 3, the union of what it finds, the ObjectClear
    reference on that mask."""
    from reference.objectclear_reference import objectclear_reference
    from reference.sam3_reference import sam3_reference

    found = sam3_reference(sam3_model, np.array(photo), prompt, threshold=float(params["score_threshold"]),
                           mask_threshold=float(params["mask_threshold"]))
    if not len(found["SCORES"]):
        raise SystemExit(f"SAM 3 finds nothing for {prompt!r}: remove_object would skip the diffusion loop")
    union = Image.fromarray((found["MASKS"].any(axis=0) * 255).astype(np.uint8))
    return objectclear_reference(checkpoint, photo, union, 0, int(params["steps"]), float(params["guidance_scale"]),
                                 int(params["short_side"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", choices=["astronaut", "coffee"], default="astronaut")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 2, 4, 8], help="none: skip (b)")
    args = parser.parse_args()
    checkpoint, repository = prepare()
    sys.path.insert(0, str(REPO_ROOT / "tests"))  # the PyTorch references live with the tests
    from reference.objectclear_reference import objectclear_reference
    from reference.sam3_reference import load_sam3

    sam3_model = load_sam3(REPO_ROOT / "artifacts" / "tiny" / "sam3")
    photo, mask = photo_and_mask(args.photo)
    image, mask_png, prompt = png(photo), png(mask), PROMPTS[args.photo]
    served, in_process, removed, removed_in_process = {}, {}, {}, {}
    for preset in PRESETS:
        params, remove_params = preset_parameters(preset), preset_parameters(preset, "remove_object")
        steps, short_side, guidance = int(params["steps"]), int(params["short_side"]), float(params["guidance_scale"])
        with TritonServer(repository, preset=preset, models=MODELS + REMOVE_MODELS) as server, \
                Client(server.http_url) as client:
            served[preset] = median_seconds(lambda: client.inpaint(image, mask_png, seed=0), args.repeats)
            removed[preset] = median_seconds(lambda: client.remove(image, prompt, seed=0), args.repeats)
        in_process[preset] = median_seconds(
            lambda: objectclear_reference(checkpoint, photo, mask, 0, steps, guidance, short_side), args.repeats)
        removed_in_process[preset] = median_seconds(
            lambda: remove_in_process(sam3_model, checkpoint, photo, prompt, remove_params), args.repeats)
        print(f"{preset}: objectclear_inpaint Triton {served[preset]:.3f} s, PyTorch in-process "
              f"{in_process[preset]:.3f} s; remove_object Triton {removed[preset]:.3f} s, PyTorch in-process "
              f"{removed_in_process[preset]:.3f} s", flush=True)

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

    print("\n(a, c) | preset | objectclear_inpaint Triton (s) | PyTorch in-process (s) | Triton / PyTorch | "
          "remove_object Triton (s) | PyTorch in-process (s) | Triton / PyTorch | speed-up over quality "
          "(objectclear_inpaint, Triton) | seed's estimate |\n|---|---|---|---|---|---|---|---|---|")
    for preset in PRESETS:
        print(f"| {preset} | {served[preset]:.3f} | {in_process[preset]:.3f} | "
              f"{served[preset] / in_process[preset]:.2f} | {removed[preset]:.3f} | {removed_in_process[preset]:.3f} | "
              f"{removed[preset] / removed_in_process[preset]:.2f} | {served['quality'] / served[preset]:.2f}x | "
              f"{SEED_ESTIMATE[preset]} |")
    print(f"\n{args.photo}, remove_object prompt {prompt!r}, median of {args.repeats}")
    if not rates:
        return
    print("\n(b) | concurrency | throughput (req/s) | vs concurrency 1 | UNet rows per execution (2 = one CFG pair) |"
          "\n|---|---|---|---|---|")
    for concurrency, rate in rates.items():
        print(f"| {concurrency} | {rate:.3f} | {rate / rates[args.concurrency[0]]:.2f}x | {batching[concurrency]:.2f} |")


if __name__ == "__main__":
    main()
