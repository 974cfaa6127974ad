"""Command line for the repository's public models on a running Triton server.

    python -m client inpaint photo.jpg mask.png [--seed 42] [--preset quality] [--engine flux_fill]
    python -m client inpaint photos/ masks/ --concurrency 2          # masks/<same stem>.png, or one mask for all
    python -m client fill photo.jpg mask.png --prompt "a vase"        # flux_fill_inpaint (FLUX.1 Fill); folders too
    python -m client remove photo.jpg --prompt "the cup" [--preset ultra_fast] [--engine flux_fill]  # or photos/
    python -m client segment photo.jpg --prompt "cup" [--box 130 40 470 330]
    python -m client generate --prompt "a red bicycle" --seed 7 [--width 768 --height 512 --steps 4] [--preset quality]
    python -m client generate --prompt "a red bicycle" --variant dev --guidance-scale 3.5   # flux_dev_generate

Every command takes --url (default 127.0.0.1:8000 for http, :8001 for grpc) and --protocol http|grpc. With
--progress (gRPC) inpaint, fill, remove and generate call the models' streaming twins and show each request's stage
and denoising steps as a progress bar; Ctrl-C cancels the requests on the server. Results go
next to the input (photo.removed.png, photo.inpainted.png, photo.filled.png, photo.segment.png + .json) or to --out
(a file for one image, a folder for a folder). --preset makes one request use that preset's values, read from
model_repository/<model>/configs/<preset>.pbtxt (explicit flags win); without it and without flags the server's own
preset decides. --no-composite (inpaint, fill, remove) asks for the whole result resized back instead of blended
into the untouched photo. A busy server (the model's queue full: UNAVAILABLE / HTTP 503) is retried --retries times
(default 4) with doubling, jittered waits from --backoff seconds (default 1). Exit codes: 0 done, 1 other failure, 2
server down, 3 model not loaded or not ready, 4 the server rejected the input (INVALID_ARG, its message is printed),
5 still busy after every retry.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from client.api import FLUX_VARIANTS, STREAM_SUFFIX, Client, ClientError, Progress, generate_model
from server.launcher import DEFAULT_MODEL_REPOSITORY, PRESETS, model_config, preset_parameters

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
OUTPUT_TAGS = (".inpainted", ".filled", ".removed", ".segment", ".mask")  # files we wrote: never folder-run inputs
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
ENGINES = ("objectclear", "flux_fill")  # ENGINE of objectclear_inpaint and remove_object
FILL_MODEL = "flux_fill_inpaint"  # what ENGINE flux_fill calls through BLS
# The preset parameters a request can override (config key = CLI dest = Client keyword), and their types. Others
# (short_side, pixels) are server-wide: --preset only makes one request behave like that preset's loop.
DENOISING = {"steps": int, "guidance_scale": float}
GENERATING = {"width": int, "height": int, **DENOISING}


def with_engine(model: str, engine: str | None) -> list[str]:
    """The models a request to `model` with this ENGINE needs loaded: checked up front for a clear exit code 3."""
    return [model, FILL_MODEL] if engine == "flux_fill" else [model]


class Cancelled(ClientError):
    exit_code = 130  # as a shell reports Ctrl-C


def called(args: argparse.Namespace, models: list[str]) -> list[str]:
    """The models to check before sending work: with --progress the first (the one called) is its streaming twin."""
    if not getattr(args, "progress", False):
        return models
    # an ensemble of one step (flux_generate) has no twin: its step's model has (read from the local configs)
    steps = model_config(DEFAULT_MODEL_REPOSITORY / models[0] / "config.pbtxt").ensemble_scheduling.step
    return [(steps[0].model_name if len(steps) == 1 else models[0]) + STREAM_SUFFIX, *models[1:]]


@contextmanager
def progress_bar(args: argparse.Namespace, label: str):
    """With --progress: the client keywords that stream one request, showing its stage and steps as a bar."""
    if not getattr(args, "progress", False):
        yield {}
        return
    from tqdm import tqdm

    with tqdm(desc=label, unit="step", file=sys.stderr, leave=False, disable=args.quiet) as bar:
        def update(progress: Progress) -> None:
            if args.cancelled.is_set():  # Ctrl-C: leaving the stream cancels the request on the server
                raise Cancelled(f"{label}: cancelled at {progress.stage}")
            bar.set_description(f"{label}: {progress.stage}", refresh=False)
            if progress.total_steps:
                bar.total, bar.n = progress.total_steps, progress.step
            bar.refresh()
        yield {"on_progress": update}


def request_settings(args: argparse.Namespace, model: str, names: dict[str, type]) -> dict:
    """Each setting: its flag if given, else the --preset's value in `model`'s config, else None (left out of the
    request, so the server's preset decides)."""
    preset = preset_parameters(args.preset, model) if args.preset else {}
    return {name: getattr(args, name) if getattr(args, name) is not None
            else cast(preset[name]) if name in preset else None for name, cast in names.items()}


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(tag in p.name for tag in OUTPUT_TAGS))


def output_path(source: Path, tag: str, out: Path | None, folder_run: bool) -> Path:
    name = f"{source.stem}.{tag}.png"
    if out is None:
        return source.with_name(name)
    if folder_run or out.is_dir():
        out.mkdir(parents=True, exist_ok=True)
        return out / name
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


class Runner:
    """Runs one job per image on a thread pool, each thread with its own client (tritonclient's HTTP client is not
    thread-safe), with a progress bar and per-image timing. Returns the exit code."""

    def __init__(self, args: argparse.Namespace, *models: str):
        self.args, self.models = args, models
        self.local = threading.local()
        self.clients: list[Client] = []
        self.lock = threading.Lock()

    def client(self) -> Client:
        if not hasattr(self.local, "client"):
            self.local.client = Client(self.args.url, self.args.protocol, self.args.timeout, self.args.retries,
                                       self.args.backoff, on_retry=None if self.args.quiet else self.report_retry)
            with self.lock:
                self.clients.append(self.local.client)
        return self.local.client

    @staticmethod
    def report_retry(error: ClientError, delay_s: float) -> None:
        print(f"busy, retrying in {delay_s:.1f} s: {error}", file=sys.stderr)

    def run(self, jobs: list[tuple[Path, callable]]) -> int:
        try:
            for model in self.models:  # server down / model missing: one message, before any work
                self.client().check(model)
            return self._run(jobs)
        except ClientError as error:
            print(f"error: {error}", file=sys.stderr)
            return error.exit_code
        except KeyboardInterrupt:
            print("cancelled", file=sys.stderr)
            return Cancelled.exit_code
        finally:
            for client in self.clients:
                client.close()

    def _run(self, jobs) -> int:
        from tqdm import tqdm

        def timed(job):
            source, work = job
            start = time.perf_counter()
            written = work(self.client())
            return source, written, time.perf_counter() - start

        failures: list[ClientError] = []
        started = time.perf_counter()
        show_bar = len(jobs) > 1 and not self.args.quiet
        with ThreadPoolExecutor(max(1, self.args.concurrency)) as pool, \
                tqdm(total=len(jobs), unit="img", disable=not show_bar, file=sys.stderr) as bar:
            futures = {pool.submit(timed, job): job[0] for job in jobs}
            try:
                for future in as_completed(futures):
                    try:
                        source, written, seconds = future.result()
                        if not self.args.quiet:
                            bar.write(f"{source}: {seconds:.2f} s -> {', '.join(map(str, written))}")
                    except Exception as error:  # noqa: BLE001 -- one bad file must not stop a folder run
                        failures.append(error if isinstance(error, ClientError) else ClientError(repr(error)))
                        bar.write(f"error: {futures[future]}: {error}", file=sys.stderr)
                    bar.update()
            except KeyboardInterrupt:
                self.args.cancelled.set()  # streamed requests stop at their next progress message
                pool.shutdown(cancel_futures=True)
                raise
        if len(jobs) > 1 and not self.args.quiet:
            seconds = time.perf_counter() - started
            print(f"{len(jobs) - len(failures)}/{len(jobs)} done in {seconds:.1f} s "
                  f"({len(jobs) / seconds:.2f} img/s at concurrency {self.args.concurrency})")
        return max((error.exit_code for error in failures), default=0)


def cmd_inpaint(args) -> int:
    """inpaint (objectclear_inpaint, either engine) and fill (flux_fill_inpaint): an image or folder, and masks."""
    if args.command == "fill":
        models, method, tag, extra = [FILL_MODEL], "fill", "filled", {"prompt": args.prompt}
    else:
        models, method, tag = with_engine("objectclear_inpaint", args.engine), "inpaint", "inpainted"
        extra = {"engine": args.engine}
    # --preset: the engine's own config
    settings = dict(request_settings(args, models[-1], DENOISING), composite=args.composite, **extra)
    folder_run = args.image.is_dir()
    sources = images_in(args.image) if folder_run else [args.image]

    def mask_for(source: Path) -> Path:
        if not args.mask.is_dir():
            return args.mask
        for stem in (f"{source.stem}.mask", source.stem):  # photos/x.jpg + photos/x.mask.png, or masks/x.png
            matches = sorted(p for p in args.mask.glob(f"{stem}.*") if p != source and p.stem == stem)
            if matches:
                return matches[0]
        raise ClientError(f"no mask for {source.name} in {args.mask}")

    def job(source: Path):
        def work(client: Client) -> list[Path]:
            with progress_bar(args, source.name) as watch:
                result = getattr(client, method)(source.read_bytes(), mask_for(source).read_bytes(), seed=args.seed,
                                                 **settings, **watch)
            return write_pair(result, output_path(source, tag, args.out, folder_run), args.save_mask)
        return source, work

    return Runner(args, *called(args, models)).run([job(s) for s in sources])


def cmd_remove(args) -> int:
    models = with_engine("remove_object", args.engine)
    # --preset: the inpainting engine's own config
    settings = dict(request_settings(args, models[-1], DENOISING), composite=args.composite)
    folder_run = args.image.is_dir()
    sources = images_in(args.image) if folder_run else [args.image]

    def job(source: Path):
        def work(client: Client) -> list[Path]:
            with progress_bar(args, source.name) as watch:
                result = client.remove(source.read_bytes(), args.prompt, seed=args.seed, engine=args.engine,
                                       **settings, **watch)
            return write_pair(result, output_path(source, "removed", args.out, folder_run), args.save_mask)
        return source, work

    return Runner(args, *called(args, models)).run([job(s) for s in sources])


def cmd_segment(args) -> int:
    from PIL import Image

    def work(client: Client) -> list[Path]:
        result = client.segment(args.image.read_bytes(), args.prompt, boxes=args.box)
        target = output_path(args.image, "segment", args.out, False)
        union = result.masks.reshape(-1, *result.masks.shape[-2:]).any(axis=0) if result.masks.size else None
        if union is None:
            with Image.open(args.image) as photo:
                union = np.zeros((photo.height, photo.width), bool)
        Image.fromarray(union.astype(np.uint8) * 255).save(target)
        report = [{"score": round(float(s), 4), "box": [round(float(v), 1) for v in b]}
                  for s, b in zip(result.scores, result.boxes)]
        target.with_suffix(".json").write_text(json.dumps({"prompt": args.prompt, "instances": report}, indent=1))
        if not args.quiet:
            print(f"{len(report)} instance(s) of {args.prompt!r}")
            for item in report:
                print(f"  score {item['score']:.3f}  box {item['box']}")
        return [target, target.with_suffix(".json")]

    return Runner(args, "sam3_segment").run([(args.image, work)])


def cmd_generate(args) -> int:
    slug = re.sub(r"[^a-z0-9]+", "-", args.prompt.lower()).strip("-")[:40] or "generated"
    target = args.out or Path(f"{slug}.{args.seed}.png")
    model = generate_model(args.variant)
    settings = request_settings(args, model, GENERATING)  # --preset: flux_generate's is its default variant's

    def work(client: Client) -> list[Path]:
        target.parent.mkdir(parents=True, exist_ok=True)
        with progress_bar(args, target.name) as watch:
            image = client.generate(args.prompt, seed=args.seed, variant=args.variant, **settings, **watch)
        target.write_bytes(image)
        return [target]

    return Runner(args, *called(args, [model])).run([(Path(f"prompt {args.prompt!r}"), work)])


def write_pair(result, target: Path, save_mask: bool) -> list[Path]:
    target.write_bytes(result.image)
    if not save_mask:
        return [target]
    mask = target.with_name(f"{target.stem}.mask.png")
    mask.write_bytes(result.mask)
    return [target, mask]


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="host:port of the server (default 127.0.0.1:8000 http, :8001 grpc)")
    common.add_argument("--protocol", choices=["http", "grpc"], default="http")
    common.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default 600)")
    common.add_argument("--retries", type=int, default=4, help="retries of a request the server is too busy for")
    common.add_argument("--backoff", type=float, default=1.0,
                        help="seconds before the first retry, doubling after each (default 1)")
    common.add_argument("--out", type=Path, help="output file (one image) or folder (a folder run)")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bar or per-image lines")
    seeded = argparse.ArgumentParser(add_help=False)
    seeded.add_argument("--seed", type=int, default=0)
    batch = argparse.ArgumentParser(add_help=False)
    batch.add_argument("--concurrency", "-j", type=int, default=1, help="requests in flight for a folder")
    batch.add_argument("--save-mask", action="store_true", help="also write the removed region, <out>.mask.png")
    batch.add_argument("--composite", action=argparse.BooleanOptionalAction,
                       help="blend the result into the untouched photo (default: the server preset's, on)")
    engine = argparse.ArgumentParser(add_help=False)
    engine.add_argument("--engine", choices=ENGINES, help="inpainting engine (default: the server preset's)")
    denoising = argparse.ArgumentParser(add_help=False)
    denoising.add_argument("--preset", choices=PRESETS, help="that preset's values for this request (from its config)")
    denoising.add_argument("--steps", type=int)
    denoising.add_argument("--guidance-scale", type=float)
    denoising.add_argument("--progress", action="store_true",
                           help="show each request's stage and steps (gRPC: the models' <model>_stream twins)")

    top = argparse.ArgumentParser(prog="python -m client", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)
    masked = [common, seeded, batch, denoising]
    p = sub.add_parser("inpaint", parents=[*masked, engine], help="objectclear_inpaint with a given mask")
    p.add_argument("image", type=Path, help="an image, or a folder of images")
    p.add_argument("mask", type=Path, help="a mask (white = remove), or a folder with a mask per image stem")
    p.set_defaults(func=cmd_inpaint)
    p = sub.add_parser("fill", parents=masked, help="flux_fill_inpaint (FLUX.1 Fill) with a given mask")
    p.add_argument("image", type=Path, help="an image, or a folder of images")
    p.add_argument("mask", type=Path, help="a mask (white = fill), or a folder with a mask per image stem")
    p.add_argument("--prompt", help="what to paint in (default: the server preset's, empty)")
    p.set_defaults(func=cmd_inpaint)
    p = sub.add_parser("remove", parents=[*masked, engine], help="remove_object: text prompt -> removed")
    p.add_argument("image", type=Path, help="an image, or a folder of images")
    p.add_argument("--prompt", required=True, help="what to remove")
    p.set_defaults(func=cmd_remove)
    p = sub.add_parser("segment", parents=[common], help="sam3_segment: masks, boxes and scores")
    p.add_argument("image", type=Path)
    p.add_argument("--prompt", required=True)
    p.add_argument("--box", type=float, nargs=4, action="append", metavar=("X0", "Y0", "X1", "Y1"),
                   help="a box prompt in pixels; repeat for more")
    p.set_defaults(func=cmd_segment, concurrency=1)
    p = sub.add_parser("generate", parents=[common, seeded, denoising], help="flux_generate: text -> image")
    p.add_argument("--prompt", required=True)
    p.add_argument("--variant", choices=FLUX_VARIANTS,
                   help="flux_<variant>_generate (default: flux_generate, the deployment's default variant)")
    p.add_argument("--width", type=int, help="pixels, rounded down to a multiple of 16 by the server")
    p.add_argument("--height", type=int)
    p.set_defaults(func=cmd_generate, concurrency=1)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.url = args.url or f"127.0.0.1:{DEFAULT_PORTS[args.protocol]}"
    args.cancelled = threading.Event()
    if getattr(args, "progress", False) and args.protocol != "grpc":
        print("error: --progress streams over gRPC: add --protocol grpc (and a gRPC --url)", file=sys.stderr)
        return 1
    image = getattr(args, "image", None)
    if image is not None and not image.exists():
        print(f"error: {image} does not exist", file=sys.stderr)
        return 1
    if image is not None and image.is_dir() and not images_in(image):
        print(f"error: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {image}", file=sys.stderr)
        return 1
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
