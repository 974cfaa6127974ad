"""Latency of a public model per preset through a real tritonserver, and each preset's speed-up over quality.

    python -m benchmarks.preset_latency [--model objectclear_inpaint|flux_generate|flux_fill_inpaint]
                                        [--repeats 5] [--protocol http]

One server per preset (a preset is a server-wide --model-config-name) loading the model and the networks it calls,
all in this one run, on the same inputs (scikit-image's coffee, 600x400, with the demo's cup mask; a fixed prompt
for generation) and seeds; prints a Markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

from client.api import Client
from client.demo import demo_inputs, png
from pipelines.repository import NEEDS
from server.launcher import PRESETS, TritonServer

PROMPT = "a photo of a cat holding a sign that says hello world"
MODELS = ["objectclear_inpaint", "flux_generate", "flux_fill_inpaint"]


def request(model: str, image: bytes, mask: bytes):
    """client, seed -> one request to `model` with the preset's defaults."""
    return {"objectclear_inpaint": lambda client, seed: client.inpaint(image, mask, seed=seed),
            "flux_generate": lambda client, seed: client.generate(PROMPT, seed=seed),
            "flux_fill_inpaint": lambda client, seed: client.fill(image, mask, seed=seed)}[model]


def time_preset(model: str, preset: str, send, repeats: int, protocol: str) -> list[float]:
    with TritonServer(preset=preset, models=NEEDS[model]) as server, \
            Client(server.http_url if protocol == "http" else server.grpc_url, protocol) as client:
        send(client, 0)  # warm-up: first-call allocations in every stub
        seconds = []
        for seed in range(repeats):
            start = time.perf_counter()
            send(client, seed)
            seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default="objectclear_inpaint")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    args = parser.parse_args()
    photo, mask = demo_inputs()
    send = request(args.model, png(photo), png(mask))
    medians = {}
    for preset in PRESETS:
        runs = time_preset(args.model, preset, send, args.repeats, args.protocol)
        medians[preset] = statistics.median(runs)
        print(f"{preset}: {' '.join(f'{s:.3f}' for s in runs)} s", flush=True)
    print(f"\n{args.model}; {platform.node()}, {platform.processor() or platform.machine()}, {args.protocol}, "
          f"median of {args.repeats}\n")
    print("| preset | median latency (s) | speed-up over quality |\n|---|---|---|")
    for preset, seconds in medians.items():
        print(f"| {preset} | {seconds:.3f} | {medians['quality'] / seconds:.2f}x |")


if __name__ == "__main__":
    main()
