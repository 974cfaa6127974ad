"""Admission control under overload: a public model at twice the throughput the server sustains.

    python -m benchmarks.overload --model objectclear_inpaint --preset ultra_fast --seconds 120

Starts the server (loopback) with the preset, then measures, over HTTP with the real tritonclient:
1. unloaded: --unloaded requests one at a time -> latency p50 / p99;
2. sustainable throughput: as many clients as the model runs requests at once (its instance count), back to back;
3. overload: requests arriving at twice that rate (Poisson, each on its own connection) for --seconds -> the admitted
   requests' latency p50 / p99 against the unloaded p99, and how fast the refused ones (UNAVAILABLE / 503) came back.
With --without-admission the same on a copy of the repository whose public models have no queue policy (as before
issue 12), side by side. Prints a JSON report and a markdown table row for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from client.demo import demo_inputs, png
from pipelines.repository import NEEDS
from server.launcher import DEFAULT_MODEL_REPOSITORY, TritonServer


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def photo_request() -> dict[str, bytes]:
    photo, mask = demo_inputs()
    return {"IMAGE": png(photo), "MASK": png(mask), "PROMPT": b"a cup"}


def inputs_for(model: str, data: dict[str, bytes]) -> list:
    names = {"objectclear_inpaint": ["IMAGE", "MASK"], "flux_fill_inpaint": ["IMAGE", "MASK"],
             "remove_object": ["IMAGE", "PROMPT"], "sam3_segment": ["IMAGE", "PROMPT"], "flux_generate": ["PROMPT"]}
    tensors = []
    for name in names[model]:
        tensor = httpclient.InferInput(name, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([data[name]], dtype=np.object_))
        tensors.append(tensor)
    return tensors


def send(url: str, model: str, inputs: list) -> tuple[str, float]:
    """("ok" | "refused" | "error: ...", seconds), on a fresh connection."""
    start = time.perf_counter()
    try:
        with httpclient.InferenceServerClient(url, network_timeout=3600) as client:
            client.infer(model, inputs)
        outcome = "ok"
    except InferenceServerException as error:
        outcome = "refused" if error.status() == "503" else f"error: {error.status()} {error.message()[:100]}"
    return outcome, time.perf_counter() - start


def instances(repository: Path, model: str, preset: str) -> int:
    path = repository / model / "configs" / f"{preset}.pbtxt"
    text = (path if path.exists() else repository / model / "config.pbtxt").read_text()
    return sum(int(n) for n in re.findall(r"count: (\d+)", text.split("instance_group", 1)[1].split("]", 1)[0]))


def measure(server: TritonServer, model: str, preset: str, repository: Path, seconds: float, unloaded_n: int) -> dict:
    inputs = inputs_for(model, photo_request())
    url = server.http_url
    send(url, model, inputs)  # first-call allocations
    unloaded = [send(url, model, inputs)[1] for _ in range(unloaded_n)]

    running = instances(repository, model, preset)
    done, stop = [], time.monotonic() + seconds / 2

    def closed_loop():
        while time.monotonic() < stop:
            outcome, _ = send(url, model, inputs)
            done.append(outcome)
    started = time.monotonic()
    workers = [threading.Thread(target=closed_loop) for _ in range(running)]
    [w.start() for w in workers]
    [w.join() for w in workers]
    throughput = done.count("ok") / (time.monotonic() - started)

    rate = 2 * throughput
    results: list[tuple[str, float]] = []
    threads, rng, deadline = [], random.Random(0), time.monotonic() + seconds
    next_arrival = time.monotonic()
    while next_arrival < deadline:
        time.sleep(max(0.0, next_arrival - time.monotonic()))
        thread = threading.Thread(target=lambda: results.append(send(url, model, inputs)))
        thread.start()
        threads.append(thread)
        next_arrival += rng.expovariate(rate)
    [t.join() for t in threads]
    admitted = [s for outcome, s in results if outcome == "ok"]
    refused = [s for outcome, s in results if outcome == "refused"]
    errors = [outcome for outcome, _ in results if outcome not in ("ok", "refused")]
    return dict(model=model, preset=preset, instances=running, unloaded_p50_s=percentile(unloaded, 50),
                unloaded_p99_s=percentile(unloaded, 99), sustainable_per_s=throughput, offered_per_s=rate,
                seconds=seconds, sent=len(results), admitted=len(admitted), refused=len(refused), errors=errors[:5],
                error_count=len(errors), admitted_p50_s=percentile(admitted, 50),
                admitted_p99_s=percentile(admitted, 99),
                admitted_p99_vs_unloaded_p99=(percentile(admitted, 99) or 0) / percentile(unloaded, 99),
                refusal_p50_ms=1000 * (percentile(refused, 50) or 0),
                refusal_p99_ms=1000 * (percentile(refused, 99) or 0),
                refusal_max_ms=1000 * max(refused, default=0))


def without_admission(model: str) -> Path:
    """A repository like the exported one whose public models have no queue policy: links to every file, the
    configs rewritten."""
    target = Path(tempfile.mkdtemp(prefix="no-admission-"))
    for name in NEEDS[model]:
        for source in (DEFAULT_MODEL_REPOSITORY / name).rglob("*"):
            if source.is_file() and "__pycache__" not in source.parts:
                path = target / source.relative_to(DEFAULT_MODEL_REPOSITORY)
                path.parent.mkdir(parents=True, exist_ok=True)
                if source.suffix == ".pbtxt":
                    path.write_text(re.sub(r"dynamic_batching \{ default_queue_policy \{.*?\} \}\n", "",
                                           source.read_text(), flags=re.S))
                else:
                    path.symlink_to(source)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="objectclear_inpaint", choices=sorted(NEEDS))
    parser.add_argument("--preset", default="ultra_fast")
    parser.add_argument("--seconds", type=float, default=120.0, help="overload duration (default 120)")
    parser.add_argument("--unloaded", type=int, default=50,
                        help="requests one at a time for the unloaded p99 (the bar's reference: few samples make it "
                             "little more than their maximum)")
    parser.add_argument("--without-admission", action="store_true", help="also run without the queue policy")
    parser.add_argument("--out", type=Path, default=Path("outputs/overload.json"))
    args = parser.parse_args(argv)
    runs = [("admission", DEFAULT_MODEL_REPOSITORY)]
    if args.without_admission:
        runs.append(("no admission", without_admission(args.model)))
    report = []
    for label, repository in runs:
        with TritonServer(repository, preset=args.preset, models=NEEDS[args.model]) as server:
            measured = measure(server, args.model, args.preset, repository, args.seconds, args.unloaded)
            report.append(dict(measured, run=label))
        print(json.dumps(report[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    for r in report:
        print(f"| {r['run']} | {r['model']} {r['preset']} | {r['unloaded_p50_s']:.2f} / {r['unloaded_p99_s']:.2f} | "
              f"{r['sustainable_per_s']:.2f} | {r['offered_per_s']:.2f} | {r['sent']} | {r['admitted']} | "
              f"{r['refused']} | {r['admitted_p50_s']:.2f} / {r['admitted_p99_s']:.2f} "
              f"({r['admitted_p99_vs_unloaded_p99']:.2f}x) | {r['refusal_p50_ms']:.0f} / {r['refusal_p99_ms']:.0f} / "
              f"{r['refusal_max_ms']:.0f} | {r['error_count']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
