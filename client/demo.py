"""The main job on the embedded default: tiny exported models, a real tritonserver, a real photo and a text
prompt into remove_object, PNGs out; then a text prompt into flux_generate.

    python -m client.demo [--prompt "a cup"] [--generate "a photo of a cat"] [--preset balanced]
                          [--protocol http|grpc] [--out outputs/demo] [--repository model_repository]
"""
from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageDraw

from client.api import Client
from pipelines.repository import needed
from server.launcher import DEFAULT_MODEL_REPOSITORY, PRESETS, TritonServer


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def demo_inputs() -> tuple[Image.Image, Image.Image]:
    """scikit-image's coffee photo (600x400) and a mask over the cup, for objectclear_inpaint."""
    photo = Image.fromarray(skimage.data.coffee())
    mask = Image.new("L", photo.size, 0)
    ImageDraw.Draw(mask).ellipse((130, 40, 470, 330), fill=255)
    return photo, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", default="a cup", help="what to remove")
    parser.add_argument("--generate", default="a photo of a cat", help="what flux_generate draws")
    parser.add_argument("--preset", choices=PRESETS, default="balanced")
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--repository", type=Path, default=DEFAULT_MODEL_REPOSITORY,
                        help="model repository to serve (make demo SOURCE=hub: the real weights' one)")
    args = parser.parse_args()

    photo, _ = demo_inputs()
    args.out.mkdir(parents=True, exist_ok=True)
    photo.save(args.out / "input.png")
    print(f"starting tritonserver (preset {args.preset}) ...", flush=True)
    # what the demo calls: a repository exported from the Hub (make demo SOURCE=hub) need not hold FLUX.1-dev
    with TritonServer(args.repository, preset=args.preset, models=needed("remove_object", "flux_generate")) as server:
        url = server.http_url if args.protocol == "http" else server.grpc_url
        print(f"ready: HTTP {server.http_url}, gRPC {server.grpc_url}", flush=True)
        with Client(url, args.protocol) as client:
            start = time.perf_counter()
            result = client.remove(png(photo), args.prompt, seed=args.seed)
            seconds = time.perf_counter() - start
            start = time.perf_counter()
            generated = client.generate(args.generate, seed=args.seed)
            generate_seconds = time.perf_counter() - start
    (args.out / "result.png").write_bytes(result.image)
    (args.out / "removed_region.png").write_bytes(result.mask)
    (args.out / "generated.png").write_bytes(generated)
    removed = np.asarray(Image.open(io.BytesIO(result.mask))).mean() / 255
    print(f"remove_object({args.prompt!r}) over {args.protocol}: {seconds:.2f} s, {removed:.1%} of the image replaced")
    print(f"flux_generate({args.generate!r}): {generate_seconds:.2f} s")
    for name in ("input.png", "result.png", "removed_region.png", "generated.png"):
        print(f"  {(args.out / name).resolve()}")


if __name__ == "__main__":
    main()
