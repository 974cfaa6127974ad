"""Latency of objectclear_inpaint per preset through a real tritonserver, and each preset's speed-up over quality.

    python -m benchmarks.preset_latency [--repeats 5] [--protocol http]

One server per preset (a preset is a server-wide --model-config-name), all in this one run, on the same photo
(scikit-image's coffee, 600x400) and seed; prints a Markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

from client.api import Client
from client.demo import demo_inputs, png
from server.launcher import PRESETS, TritonServer


def time_preset(preset: str, image: bytes, mask: bytes, repeats: int, protocol: str) -> list[float]:
    with TritonServer(preset=preset) as server, \
            Client(server.http_url if protocol == "http" else server.grpc_url, protocol) as client:
        client.inpaint(image, mask, seed=0)  # warm-up: first-call allocations in every stub
        seconds = []
        for seed in range(repeats):
            start = time.perf_counter()
            client.inpaint(image, mask, seed=seed)
            seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    args = parser.parse_args()
    photo, mask = demo_inputs()
    image, mask = png(photo), png(mask)
    medians = {}
    for preset in PRESETS:
        runs = time_preset(preset, image, mask, args.repeats, args.protocol)
        medians[preset] = statistics.median(runs)
        print(f"{preset}: {' '.join(f'{s:.3f}' for s in runs)} s", flush=True)
    print(f"\n{platform.node()}, {platform.processor() or platform.machine()}, {args.protocol}, "
          f"median of {args.repeats}\n")
    print("| preset | median latency (s) | speed-up over quality |\n|---|---|---|")
    for preset, seconds in medians.items():
        print(f"| {preset} | {seconds:.3f} | {medians['quality'] / seconds:.2f}x |")


if __name__ == "__main__":
    main()
