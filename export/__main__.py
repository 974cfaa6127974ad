"""python -m export {objectclear,sam3,flux-schnell,flux-dev,flux-fill} (--tiny | --source ID_OR_FOLDER)
[--repository model_repository]"""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

from export.flux import export_flux
from export.objectclear import export_objectclear
from export.sam3 import export_sam3
from export.tiny import TINY_ROOT, build_tiny_flux, build_tiny_objectclear, build_tiny_sam3
from server.launcher import DEFAULT_MODEL_REPOSITORY

PIPELINES = {
    # name: (exporter, tiny-checkpoint builder, Hugging Face id)
    "objectclear": (export_objectclear, build_tiny_objectclear, "jixin0101/ObjectClear"),
    "sam3": (export_sam3, build_tiny_sam3, "facebook/sam3"),
    # flux_schnell_generate and flux_dev_generate (flux_generate: the default of the two); Fill: flux_fill_inpaint
    "flux-schnell": (export_flux, partial(build_tiny_flux, variant="schnell"), "black-forest-labs/FLUX.1-schnell"),
    "flux-dev": (export_flux, partial(build_tiny_flux, variant="dev"), "black-forest-labs/FLUX.1-dev"),
    "flux-fill": (export_flux, partial(build_tiny_flux, variant="fill"), "black-forest-labs/FLUX.1-Fill-dev"),
}


def resolve_source(source: str) -> Path:
    """A local folder as is; anything else is a Hugging Face repo id, fetched into the local HF cache."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download
    # skips fp16 duplicates and FLUX's single-file checkpoints (the diffusers subfolders hold the same weights)
    return Path(snapshot_download(source, allow_patterns=["*.json", "*.txt", "*.safetensors"],
                                  ignore_patterns=["*.fp16.safetensors", "flux1-*.safetensors", "ae.safetensors"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("pipeline", choices=sorted(PIPELINES))
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--tiny", action="store_true",
                        help=f"build and export the tiny random checkpoint in {TINY_ROOT}/<pipeline>")
    source.add_argument("--source", help="Hugging Face id or local folder (default: the pipeline's official id)")
    parser.add_argument("--repository", type=Path, default=DEFAULT_MODEL_REPOSITORY,
                        help="Triton model repository to write into (default: %(default)s)")
    args = parser.parse_args(argv)

    exporter, build_tiny, hub_id = PIPELINES[args.pipeline]
    if args.tiny:
        folder = TINY_ROOT / args.pipeline
        build_tiny(folder)  # seconds; rebuilt every time so it always matches export/tiny.py
        print(f"tiny {args.pipeline} checkpoint written to {folder}")
    else:
        folder = resolve_source(args.source or hub_id)
    exporter(folder, args.repository)
    print(f"{args.pipeline} exported from {folder} into {args.repository}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
