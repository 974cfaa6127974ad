"""The first request after the server reports ready against the tenth, per public model, with the warm-up (each
network's run while it loads, then the launcher's request per public model instance: server/warmup.py) and without
either (the networks' "warm_up" parameter "false" in a linked copy of the repository, the launcher's off).

    python -m benchmarks.first_request --preset balanced [--models sam3_segment flux_generate]

One server per run (loading what the chosen models need), the public models asked in turn (10 requests each, HTTP,
scikit-image's coffee photo); a model asked later may find networks it shares with an earlier one already warm, in
both runs alike.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


from client.api import Client
from client.demo import demo_inputs, png
from pipelines.repository import needed
from server.launcher import DEFAULT_MODEL_REPOSITORY, TritonServer

NO_WARM_UP = '\nparameters: { key: "warm_up", value: { string_value: "false" } }\n'
ORDER = ["sam3_segment", "objectclear_inpaint", "remove_object", "flux_generate", "flux_fill_inpaint"]


def without_warm_up() -> Path:
    """The repository as links, each network config (and preset variant) with warm_up "false"."""
    target = Path(tempfile.mkdtemp(prefix="no-warm-up-"))
    for source in DEFAULT_MODEL_REPOSITORY.rglob("*"):
        if source.is_file() and "__pycache__" not in source.parts:
            path = target / source.relative_to(DEFAULT_MODEL_REPOSITORY)
            path.parent.mkdir(parents=True, exist_ok=True)
            model = DEFAULT_MODEL_REPOSITORY / source.relative_to(DEFAULT_MODEL_REPOSITORY).parts[0]
            if source.suffix == ".pbtxt" and "pipelines.triton_network" in (model / "1" / "model.py").read_text():
                path.write_text(source.read_text() + NO_WARM_UP)
            else:
                path.symlink_to(source)
    return target


def requests() -> dict:
    photo, mask = demo_inputs()
    image, mask = png(photo), png(mask)
    return {"sam3_segment": lambda c: c.segment(image, "a cup"),
            "objectclear_inpaint": lambda c: c.inpaint(image, mask),
            "remove_object": lambda c: c.remove(image, "a cup"), "flux_generate": lambda c: c.generate("a red bicycle"),
            "flux_fill_inpaint": lambda c: c.fill(image, mask)}


def measure(repository: Path, preset: str, repeats: int, warm_up: bool, models: list[str]) -> dict:
    calls, out = requests(), {}
    server = TritonServer(repository, preset=preset, models=needed(*models), warm_up=warm_up)
    server.start(timeout=900)  # a loaded shared machine takes minutes
    with Client(server.http_url) as client:
        for model in models:
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                calls[model](client)
                seconds.append(time.perf_counter() - start)
            out[model] = dict(first_s=seconds[0], tenth_s=seconds[-1], median_rest_s=statistics.median(seconds[1:]))
    server.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.first_request", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", nargs="+", choices=ORDER, default=ORDER, help="public models, asked in this order")
    parser.add_argument("--out", type=Path, default=Path("outputs/first_request.json"))
    args = parser.parse_args(argv)
    report = {"warm-up": measure(DEFAULT_MODEL_REPOSITORY, args.preset, args.repeats, True, args.models),
              "no warm-up": measure(without_warm_up(), args.preset, args.repeats, False, args.models)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    for model in args.models:
        cells = [f"{r[model]['first_s']:.2f} / {r[model]['tenth_s']:.2f} / {r[model]['median_rest_s']:.2f} "
                 f"({r[model]['first_s'] / r[model]['median_rest_s']:.1f}x)" for r in report.values()]
        print(f"| {model} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
