"""perf_analyzer over a public model, per preset and protocol over a concurrency range, on real photos.

    make perf-analyzer                                   # once: artifacts/perf_analyzer/perf_analyzer
    python -m benchmarks.perf --model objectclear_inpaint --presets ultra_fast balanced --concurrency 1:4

For each preset it starts a tritonserver (server.launcher.TritonServer, the preset is server-wide), writes the
--input-data JSON from scikit-image photos (BYTES as base64 of the 4-byte little-endian length + the bytes), runs
perf_analyzer over HTTP and gRPC (count_windows by default: one request takes seconds on CPU, so a fixed number of
requests per window measures better than a time window) and collects its CSV (-f). Writes, under --out
(outputs/perf/): <model>.csv (every row, with preset and protocol), <model>.md (a Markdown table) and <model>.png
(throughput against latency, one line per preset and protocol), plus the raw perf_analyzer CSVs and input JSON.
"""
from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import platform
import struct
import subprocess
import sys
from pathlib import Path

import skimage.data
from PIL import Image, ImageDraw

from client.demo import png
from pipelines.repository import NEEDS
from server.launcher import REPO_ROOT, PRESETS, TritonServer

DEFAULT_BINARY = REPO_ROOT / "artifacts" / "perf_analyzer" / "perf_analyzer"
PHOTOS = {"coffee": "the cup", "chelsea": "the cat", "astronaut": "the helmet", "rocket": "the rocket"}


def tensor_bytes(data: bytes) -> dict:
    """One BYTES element for perf_analyzer: base64 of the 4-byte little-endian length followed by the bytes."""
    return {"content": {"b64": base64.b64encode(struct.pack("<I", len(data)) + data).decode()}, "shape": [1]}


def photo(name: str, max_side: int | None) -> tuple[Image.Image, Image.Image]:
    """A scikit-image photo (optionally downscaled) and an ellipse mask over its middle."""
    image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    mask = Image.new("L", image.size, 0)
    w, h = image.size
    ImageDraw.Draw(mask).ellipse((w // 4, h // 5, w * 3 // 4, h * 4 // 5), fill=255)
    return image, mask


def input_data(model: str, max_side: int | None = None, seed: int = 0) -> dict:
    rows = []
    for name, prompt in PHOTOS.items():
        image, mask = photo(name, max_side)
        row = {"IMAGE": tensor_bytes(png(image)), "PROMPT": tensor_bytes(prompt.encode()), "SEED": [seed]}
        if model in ("objectclear_inpaint", "flux_fill_inpaint"):
            row = {"IMAGE": row["IMAGE"], "MASK": tensor_bytes(png(mask)), "SEED": [seed]}
        elif model == "sam3_segment":
            del row["SEED"]
        elif model.endswith("_generate"):  # flux_generate and each variant's own
            del row["IMAGE"]
        rows.append(row)
    return {"data": rows}


def warm_up(model: str, server: TritonServer, row: dict) -> None:
    """One request before measuring, so no window carries the stubs' first-call allocations."""
    import numpy as np
    import tritonclient.http as httpclient

    inputs = []
    for name, value in row.items():
        if isinstance(value, dict):  # BYTES: drop the 4-byte length prefix again
            array = np.array([base64.b64decode(value["content"]["b64"])[4:]], dtype=np.object_)
            tensor = httpclient.InferInput(name, [1], "BYTES")
        else:
            array = np.array(value, dtype=np.int64)
            tensor = httpclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    with httpclient.InferenceServerClient(server.http_url, network_timeout=600) as client:
        client.infer(model, inputs)


def concurrencies(spec: str) -> list[int]:
    """perf_analyzer's start:end[:step] as a list."""
    start, end, step = ([int(v) for v in spec.split(":")] + [0, 0])[:3]
    return list(range(start, (end or start) + 1, step or 1))


def run_perf_analyzer(binary: Path, model: str, server: TritonServer, protocol: str, concurrency: int, data: Path,
                      csv_path: Path, args: argparse.Namespace) -> list[dict]:
    """One perf_analyzer run at one concurrency (--request-count allows no more); its CSV rows."""
    csv_path.unlink(missing_ok=True)
    cmd = [str(binary), "-m", model, "-i", protocol,
           "-u", server.http_url if protocol == "http" else server.grpc_url,
           f"--input-data={data}", f"--concurrency-range={concurrency}",
           f"--measurement-mode={args.measurement_mode}", f"--max-trials={args.max_trials}",
           f"--stability-percentage={args.stability_percentage}", "-f", str(csv_path), "--verbose-csv"]
    if args.total_requests:  # a fixed number of requests per concurrency, no stability search (CI)
        cmd.append(f"--request-count={args.total_requests}")
    elif args.measurement_mode == "count_windows":
        cmd.append(f"--measurement-request-count={args.window_requests}")
    else:
        cmd.append(f"--measurement-interval={args.measurement_interval}")
    if args.collect_metrics:  # GPU columns stay empty on CPU, but the server's metrics endpoint is exercised
        cmd += ["--collect-metrics", f"--metrics-url={server.metrics_url}", "--metrics-interval=1000"]
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    log = csv_path.with_suffix(".log")
    log.write_text(done.stdout + done.stderr)
    if not csv_path.exists():  # e.g. no stable measurement within --max-trials on a busy machine
        tail = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()][-2:]
        print(f"warning: perf_analyzer exited with {done.returncode} and no CSV ({log}): {' '.join(tail)}",
              file=sys.stderr)
        return []
    with open(csv_path, newline="") as f:
        return [row for row in csv.DictReader(f) if row.get("Concurrency", "").strip().isdigit()]


def summarize(row: dict, preset: str, protocol: str) -> dict:
    ms = lambda key: float(row.get(key) or 0) / 1000  # noqa: E731 -- perf_analyzer reports microseconds
    compute = ms("Server Compute Input") + ms("Server Compute Infer") + ms("Server Compute Output")
    return {"preset": preset, "protocol": protocol, "concurrency": int(row["Concurrency"]),
            "throughput": float(row["Inferences/Second"]), "avg_ms": ms("Avg latency"), "p50_ms": ms("p50 latency"),
            "p95_ms": ms("p95 latency"), "queue_ms": ms("Server Queue"), "compute_ms": compute}


def markdown(model: str, results: list[dict], note: str) -> str:
    lines = [f"### perf_analyzer: `{model}`", "", note, "",
             "| preset | protocol | concurrency | throughput (infer/s) | avg latency (ms) | p50 (ms) | p95 (ms) "
             "| server queue (ms) | server compute (ms) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['preset']} | {r['protocol']} | {r['concurrency']} | {r['throughput']:.3f} "
                     f"| {r['avg_ms']:.0f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['queue_ms']:.0f} "
                     f"| {r['compute_ms']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(model: str, results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in dict.fromkeys((r["preset"], r["protocol"]) for r in results):
        series = [r for r in results if (r["preset"], r["protocol"]) == key]
        x, y = [r["avg_ms"] / 1000 for r in series], [r["throughput"] for r in series]
        ax.plot(x, y, marker="o", label=f"{key[0]} / {key[1]}")
        for r, xi, yi in zip(series, x, y):
            ax.annotate(f"c={r['concurrency']}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("average latency (s)")
    ax.set_ylabel("throughput (infer/s)")
    ax.set_title(f"{model}: throughput vs latency (perf_analyzer)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="objectclear_inpaint", choices=list(NEEDS))
    parser.add_argument("--presets", nargs="+", default=PRESETS, choices=PRESETS)
    parser.add_argument("--protocols", nargs="+", default=["http", "grpc"], choices=["http", "grpc"])
    parser.add_argument("--concurrency", default="1:4", help="perf_analyzer --concurrency-range start:end[:step]")
    parser.add_argument("--measurement-mode", default="count_windows", choices=["count_windows", "time_windows"])
    parser.add_argument("--window-requests", type=int, default=8, help="requests per window (count_windows)")
    parser.add_argument("--total-requests", type=int, default=0,
                        help="measure exactly this many requests per concurrency, without the stability search: "
                             "a quick pass on a busy machine (perf_analyzer --request-count)")
    parser.add_argument("--measurement-interval", type=int, default=30000, help="ms per window (time_windows)")
    parser.add_argument("--max-trials", type=int, default=6)
    parser.add_argument("--stability-percentage", type=int, default=15)
    parser.add_argument("--max-side", type=int, help="downscale the photos to this longest side (CI)")
    parser.add_argument("--no-collect-metrics", dest="collect_metrics", action="store_false")
    parser.add_argument("--perf-analyzer", type=Path, default=Path(os.environ.get("PERF_ANALYZER", DEFAULT_BINARY)))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "perf")
    args = parser.parse_args(argv)
    if not args.perf_analyzer.exists():
        print(f"error: no perf_analyzer at {args.perf_analyzer}: run `make perf-analyzer`", file=sys.stderr)
        return 2

    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / f"{args.model}.input.json"
    data.write_text(json.dumps(input_data(args.model, args.max_side)))
    results = []
    for preset in args.presets:
        print(f"starting tritonserver (preset {preset}) ...", flush=True)
        with TritonServer(preset=preset, models=NEEDS[args.model]) as server:
            warm_up(args.model, server, json.loads(data.read_text())["data"][0])
            for protocol in args.protocols:
                for concurrency in concurrencies(args.concurrency):
                    raw = args.out / f"{args.model}.{preset}.{protocol}.c{concurrency}.raw.csv"
                    rows = run_perf_analyzer(args.perf_analyzer, args.model, server, protocol, concurrency, data,
                                             raw, args)
                    for r in (summarize(row, preset, protocol) for row in rows):
                        results.append(r)
                        print(f"  {preset}/{protocol} c={r['concurrency']}: {r['throughput']:.3f} infer/s, "
                              f"avg {r['avg_ms']:.0f} ms", flush=True)

    photos = f"max side {args.max_side} px" if args.max_side else "native size"
    if args.total_requests:
        mode = f"{args.total_requests} requests per concurrency, no stability search"
    elif args.measurement_mode == "count_windows":
        mode = f"count_windows of {args.window_requests} requests, stable within {args.stability_percentage}%"
    else:
        mode = f"time_windows of {args.measurement_interval} ms, stable within {args.stability_percentage}%"
    command = " ".join(argv if argv is not None else sys.argv[1:])
    note = (f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}; scikit-image photos "
            f"({', '.join(PHOTOS)}; {photos}); {mode}. `python -m benchmarks.perf {command}`")
    with open(args.out / f"{args.model}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results[0]) if results else ["preset"])
        writer.writeheader()
        writer.writerows(results)
    (args.out / f"{args.model}.md").write_text(markdown(args.model, results, note))
    plot(args.model, results, args.out / f"{args.model}.png")
    print((args.out / f"{args.model}.md").read_text())
    print(f"wrote {args.out / (args.model + '.md')}, {args.out / (args.model + '.png')}")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
