"""Memory, disk and time of `python -m export`: the README's export table.

    python -m benchmarks.export_memory [--dtypes fp32 bf16] [--pipelines objectclear sam3 flux-schnell flux-fill]
                                       [--wide]

Runs the exporter as a user does (`python -m export <pipeline> --source <tiny Hub layout>`) in a subprocess and
samples its /proc status every 20 ms: peak RSS (what `ru_maxrss` and Kubernetes' working set count) and peak anonymous
memory (RssAnon: what must fit in RAM; the rest is the page cache of memory-mapped weights, which the kernel can drop),
plus bytes written and duration. --wide adds a FLUX.1 transformer at full width (3072, 24 heads; one double and one
single block: 0.56 B parameters) to see how memory grows with the weights: the full-size estimates scale that growth
(bytes of peak anonymous memory per byte of weights) by each pipeline's parameter count (export/hub.py).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from export.hub import HUB
from export.tiny import FLUX_TRANSFORMER, build_tiny_flux
from export.tiny_hub import build_tiny_hub, hub_folder

WIDE_TRANSFORMER = dict(FLUX_TRANSFORMER, attention_head_dim=128, num_attention_heads=24, axes_dims_rope=[16, 56, 56])


def status(pid: int) -> dict[str, int]:
    """VmRSS and RssAnon of a process, in bytes (0 once it has exited)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return {key: int(value) * 1024 for key, value in re.findall(r"^(VmRSS|RssAnon):\s+(\d+) kB", text, re.M)}


def measure(pipeline: str, source: Path, dtype: str) -> dict:
    with tempfile.TemporaryDirectory() as repository, tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "export", pipeline, "--source", str(source),
                                    "--repository", repository, "--dtype", dtype], stdout=log, stderr=subprocess.STDOUT)
        peak = {"VmRSS": 0, "RssAnon": 0}
        while process.poll() is None:
            for key, value in status(process.pid).items():
                peak[key] = max(peak[key], value)
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        if process.returncode:
            log.seek(0)
            raise RuntimeError(f"{pipeline} {dtype} failed ({process.returncode}):\n{log.read()[-3000:]}")
        written = sum(p.stat().st_size for p in Path(repository).rglob("model.onnx*"))
    return {"pipeline": pipeline, "dtype": dtype, "rss": peak["VmRSS"], "anon": peak["RssAnon"], "bytes": written,
            "seconds": seconds}


def wide_layout(root: Path) -> Path:
    plain = build_tiny_flux(root / "plain", "schnell", transformer_config=WIDE_TRANSFORMER)
    return build_tiny_hub("flux-schnell", plain, root / "FLUX.1-schnell-wide")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--pipelines", nargs="+", default=["objectclear", "sam3", "flux-schnell", "flux-fill"])
    parser.add_argument("--wide", action="store_true")
    args = parser.parse_args()
    rows = []
    print("| pipeline | dtype | peak RSS | peak anonymous | written | duration |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        cases = [(p, hub_folder(p)) for p in args.pipelines]
        if args.wide:
            cases.append(("flux-schnell", wide_layout(Path(scratch))))
        for (pipeline, source) in cases:
            for dtype in args.dtypes:
                row = measure(pipeline, source, dtype)
                row["source"] = source.name
                rows.append(row)
                print(f"| {pipeline} ({source.name}) | {dtype} | {row['rss'] / 2**30:.2f} GiB | "
                      f"{row['anon'] / 2**30:.2f} GiB | {row['bytes'] / 1e6:.1f} MB | {row['seconds']:.0f} s |",
                      flush=True)
    print("\nparameters per pipeline (full size, billions):",
          {p: round(sum(HUB[p].graphs.values()), 3) for p in args.pipelines})


if __name__ == "__main__":
    main()
