"""python -m export PIPELINE [--source ID_OR_FOLDER | --tiny] [--repository model_repository]
                   [--dtype fp32|fp16|bf16] [--device cpu|cuda]

PIPELINE: objectclear, sam3, flux-schnell, flux-dev (both serve flux_generate: the last exported wins), flux-fill.
--source: a Hugging Face id, downloaded into the Hugging Face cache without the files the exporter never reads
(export/hub.py), or a local folder laid out as that repository is; default: the pipeline's official id.
--tiny: the embedded tiny checkpoint, built and laid out as the Hub repository is (export/tiny_hub.py), then exported
exactly as --source exports a folder.
--dtype: the precision of the graphs' weights and arithmetic; their inputs and outputs stay fp32, and the VAEs stay
fp32 (export/onnx_export.py). ONNX Runtime on the CPU serves fp32 graphs; fp16/bf16 graphs are for GPU engines.
--device: where PyTorch holds the model while tracing and computing the parity reference (cuda: one GPU).
Ends with the run's peak memory, bytes written and duration (the README's export table is made of these lines).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

from export.flux import export_flux
from export.hub import download
from export.objectclear import export_objectclear
from export.onnx_export import DTYPES, ExportReport
from export.sam3 import export_sam3
from server.launcher import DEFAULT_MODEL_REPOSITORY

EXPORTERS = {"objectclear": export_objectclear, "sam3": export_sam3, "flux-schnell": export_flux,
             "flux-dev": export_flux, "flux-fill": export_flux}  # the pipelines: export/hub.py HUB has the same keys


def source_folder(pipeline: str, source: str | None) -> Path:
    if source and Path(source).is_dir():
        return Path(source)
    return download(pipeline, source)


def run(argv: list[str] | None = None) -> list[ExportReport]:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", choices=sorted(EXPORTERS))
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--source", help="Hugging Face id or local folder (default: the pipeline's official id)")
    source.add_argument("--tiny", action="store_true", help="the tiny checkpoint in its Hub layout")
    parser.add_argument("--repository", type=Path, default=DEFAULT_MODEL_REPOSITORY,
                        help="Triton model repository to write into (default: %(default)s)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device is visible")

    if args.tiny:
        from export.tiny_hub import build_tiny_hub_folder
        folder = build_tiny_hub_folder(args.pipeline)
    else:
        folder = source_folder(args.pipeline, args.source)
    start = time.perf_counter()
    reports = EXPORTERS[args.pipeline](folder, args.repository, DTYPES[args.dtype], args.device)
    gpu = (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
           if torch.device(args.device).type == "cuda" else "")
    print(f"{args.pipeline} exported from {folder} into {args.repository}: {len(reports)} graphs in {args.dtype}, "
          f"{sum(r.bytes for r in reports) / 1e9:.3f} GB written in {time.perf_counter() - start:.0f} s, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB{gpu}", flush=True)
    return reports


def main(argv: list[str] | None = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
