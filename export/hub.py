"""The five Hugging Face repositories the exporters read, as they are published, and how to fetch only what is read.

Facts, read from public copies (no machine of this project reaches the Hub; README "Hub layouts" has the sources):
the file list of each repository, the files the exporter does not need (duplicates and variants), and the licence a
user accepts by downloading it. `export/tiny_hub.py` lays the tiny checkpoints out the same way, so CI exports those
layouts through `python -m export <pipeline> --source <folder>`.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import sys
from dataclasses import dataclass
from pathlib import Path

CLIP_TOKENIZER = ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json")


@dataclass(frozen=True)
class HubRepo:
    repo_id: str
    licence: str
    gated: bool  # the account behind HF_TOKEN must have accepted the licence on the Hub
    files: tuple[str, ...]  # the repository's files as published (README/licence texts and images included)
    skip: tuple[str, ...]  # fnmatch patterns of files the exporter never reads: never downloaded
    note: str  # which weights are read, and why
    graphs: dict[str, float]  # parameters (billions) of each graph the export writes, full size (reference/*.md)
    loaded: float  # parameters (billions) the exporter holds at its peak: every part, or FLUX's largest part
    stored_bytes: int  # bytes per parameter in the files read: 4 (fp32 masters), 2 (FLUX's bf16)

    def needed(self, name: str) -> bool:
        return not any(fnmatch.fnmatch(name, pattern) for pattern in self.skip)


def _sub(folder: str, *names: str) -> tuple[str, ...]:
    return tuple(f"{folder}/{name}" for name in names)


def _flux(repo_id: str, single_file: str, extra: tuple[str, ...], licence: str, gated: bool) -> HubRepo:
    return HubRepo(
        repo_id=repo_id, licence=licence, gated=gated,
        files=(".gitattributes", "README.md", "model_index.json", single_file, "ae.safetensors", *extra,
               "scheduler/scheduler_config.json",
               *_sub("text_encoder", "config.json", "model.safetensors"),
               *_sub("text_encoder_2", "config.json", "model-00001-of-00002.safetensors",
                     "model-00002-of-00002.safetensors", "model.safetensors.index.json"),
               *_sub("tokenizer", *CLIP_TOKENIZER),
               *_sub("tokenizer_2", "special_tokens_map.json", "spiece.model", "tokenizer.json",
                     "tokenizer_config.json"),
               *_sub("transformer", "config.json", *(f"diffusion_pytorch_model-0000{i}-of-00003.safetensors"
                                                     for i in (1, 2, 3)),
                     "diffusion_pytorch_model.safetensors.index.json"),
               *_sub("vae", "config.json", "diffusion_pytorch_model.safetensors")),
        # BFL's single-file checkpoints repeat the diffusers folders' weights (transformer 23.8 GB, VAE 0.3 GB)
        skip=(single_file, "ae.safetensors", "*.jpg", "*.jpeg", "*.png"),
        note="the diffusers folders, stored in bf16 (sharded transformer and T5 with index files); the single-file "
             f"duplicates {single_file} and ae.safetensors are not downloaded",
        graphs={"flux_clip_text_encoder": 0.123, "flux_t5_encoder": 4.762, "flux_vae_decoder": 0.050,
                **({"flux_fill_transformer": 11.902, "flux_vae_encoder": 0.034} if "fill" in single_file
                   else {"flux_transformer": 11.901 if "dev" in single_file else 11.891})},
        loaded=11.9 + 0.123 + 0.084,  # one large part at a time (export/flux.py), with CLIP and the VAE
        stored_bytes=2,
    )


HUB = {
    "objectclear": HubRepo(
        repo_id="jixin0101/ObjectClear", licence="NTU S-Lab License 1.0 (non-commercial)", gated=False,
        files=(".gitattributes", "README.md", "model_index.json",
               *_sub("image_prompt_encoder", "config.json", "model.safetensors", "model.fp16.safetensors"),
               *_sub("postfuse_module", "config.json", "model.safetensors", "model.fp16.safetensors"),
               "scheduler/scheduler_config.json",
               *_sub("text_encoder", "config.json", "model.safetensors", "model.fp16.safetensors"),
               *_sub("text_encoder_2", "config.json", "model.safetensors", "model.fp16.safetensors"),
               *_sub("tokenizer", *CLIP_TOKENIZER), *_sub("tokenizer_2", *CLIP_TOKENIZER),
               *_sub("unet", "config.json", "diffusion_pytorch_model.safetensors",
                     "diffusion_pytorch_model.fp16.safetensors"),
               *_sub("vae", "config.json", "diffusion_pytorch_model.safetensors",
                     "diffusion_pytorch_model.fp16.safetensors")),
        skip=("*.fp16.safetensors",),
        note="the fp32 files (the masters: the parity reference is the fp32 model, and --dtype fp16/bf16 casts them "
             "once); the *.fp16.safetensors variants beside them are not downloaded, and a folder holding only "
             "those is read upcast, with a notice",
        graphs={"objectclear_unet": 2.567, "objectclear_vae_encoder": 0.034, "objectclear_vae_decoder": 0.050,
                "objectclear_object_encoder": 0.318},
        loaded=2.567 + 0.084 + 0.428 + 0.014 + 0.123 + 0.695,  # UNet, VAE, whole CLIP, postfuse, text encoders
        stored_bytes=4,
    ),
    "sam3": HubRepo(
        repo_id="facebook/sam3", licence="SAM License (Meta)", gated=True,
        files=(".gitattributes", "LICENSE", "README.md", "config.json", "model.safetensors", "sam3.pt",
               "processor_config.json", "tokenizer.json", "tokenizer_config.json"),
        skip=("*.pt",),
        note="model.safetensors (transformers layout: a Sam3VideoModel, detector weights under detector_model.); "
             "Meta's original sam3.pt (same weights, other key names) is not downloaded",
        graphs={"sam3_image_encoder": 0.454, "sam3_text_encoder": 0.354, "sam3_detector": 0.033,
                "sam3_detector_boxes": 0.033},
        loaded=0.840,
        stored_bytes=4,
    ),
    "flux-schnell": _flux("black-forest-labs/FLUX.1-schnell", "flux1-schnell.safetensors", ("schnell_grid.jpeg",),
                          "Apache-2.0", gated=False),
    "flux-dev": _flux("black-forest-labs/FLUX.1-dev", "flux1-dev.safetensors", (),
                      "FLUX.1 [dev] Non-Commercial License", gated=True),
    "flux-fill": _flux("black-forest-labs/FLUX.1-Fill-dev", "flux1-fill-dev.safetensors", (),
                       "FLUX.1 [dev] Non-Commercial License", gated=True),
}


# Memory of `python -m export` on the CPU (benchmarks/export_memory.py; README, "Memory, disk and time"). Weights read
# in their stored dtype stay memory-mapped from the checkpoint (page cache, which the kernel can drop), and so do the
# graph's weights during the ONNX Runtime check: the process's own (anonymous) memory is a baseline, activations
# (about 1 GiB measured on a full-width FLUX transformer; SAM 3's 5184-token global attention holds 1.7 GB a layer),
# and every weight converted to another dtype: FLUX's bf16 weights upcast for an fp32 export, or fp32 masters cast
# for a reduced one. Serving fp32 graphs on ONNX Runtime (CPU) holds their weights once more than they weigh
# (prepacked: 1.15x measured), plus the stub processes.
EXPORT_BASE_BYTES, EXPORT_ACTIVATION_BYTES = 1 * 2**30, 4 * 2**30
BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
SERVING_OVERHEAD, SERVING_STUB_BYTES = 1.15, 6 * 2**30


def export_peak_bytes(pipeline: str, dtype: str = "fp32") -> float:
    """Estimated peak anonymous memory of `python -m export <pipeline> --dtype <dtype>` at full size on the CPU."""
    repo = HUB[pipeline]
    stored = "bf16" if repo.stored_bytes == 2 else "fp32"
    loaded = "fp32" if dtype == "fp32" else stored  # export/flux.py loads a reduced export's bf16 weights as stored
    converted = repo.loaded * 1e9 * BYTES[loaded] if loaded != stored else 0
    cast = min(sum(repo.graphs.values()), repo.loaded) * 1e9 * BYTES[dtype] if dtype != loaded else 0
    return EXPORT_BASE_BYTES + EXPORT_ACTIVATION_BYTES + converted + cast


def download(pipeline: str, repo_id: str | None = None) -> Path:
    """The pipeline's repository (or `repo_id`, laid out the same way) in the local Hugging Face cache, without the
    files its exporter never reads."""
    from huggingface_hub import snapshot_download

    repo = HUB[pipeline]
    return Path(snapshot_download(repo_id or repo.repo_id, ignore_patterns=list(repo.skip)))


def check(pipelines: list[str], repository: Path) -> list[str]:
    """What would stop exporting these pipelines here and then serving them on ONNX Runtime (CPU): Hub access and
    licences, disk for the download and the graphs, memory for the largest export and for serving everything."""
    import shutil as _shutil

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    problems, download_bytes = [], 0
    for pipeline in pipelines:
        repo = HUB[pipeline]
        try:
            files = snapshot_download(repo.repo_id, ignore_patterns=list(repo.skip), dry_run=True)
            download_bytes += sum(f.file_size or 0 for f in files if f.will_download)
        except GatedRepoError:
            problems.append(f"{repo.repo_id} is gated: accept its licence ({repo.licence}) on its Hub page with the "
                            "account whose token is in HF_TOKEN (or `hf auth login`)")
        except (HfHubHTTPError, RepositoryNotFoundError, OSError) as error:
            problems.append(f"{repo.repo_id}: the Hugging Face Hub cannot be reached from here ({error})")
    graphs = {name: b for p in pipelines for name, b in HUB[p].graphs.items()}  # FLUX pipelines share networks
    graph_bytes = sum(graphs.values()) * 1e9 * BYTES["fp32"]
    repository.mkdir(parents=True, exist_ok=True)
    free = _shutil.disk_usage(repository).free
    if download_bytes + graph_bytes > free:
        problems.append(f"disk: {download_bytes / 1e9:.0f} GB to download and {graph_bytes / 1e9:.0f} GB of graphs, "
                        f"{free / 1e9:.0f} GB free under {repository}")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    needs = {"the largest export": max(export_peak_bytes(p) for p in pipelines),
             "serving every graph on the CPU": graph_bytes * SERVING_OVERHEAD + SERVING_STUB_BYTES}
    for what, needed in needs.items():
        if needed > memory:
            problems.append(f"memory: {what} needs about {needed / 2**30:.0f} GiB, this machine has "
                            f"{memory / 2**30:.0f} GiB")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.hub", description="check PIPELINE ...: can this machine "
                                     "download, export and serve them (Hub access, licences, disk, memory)?")
    parser.add_argument("command", choices=["check"])
    parser.add_argument("pipelines", nargs="+", choices=sorted(HUB))
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    args = parser.parse_args(argv)
    print("Exporting these downloads them from the Hugging Face Hub; by doing so you accept their licences:")
    for pipeline in args.pipelines:
        repo = HUB[pipeline]
        print(f"  {repo.repo_id}: {repo.licence}{' (gated: accept it on the Hub first)' if repo.gated else ''}")
    problems = check(args.pipelines, args.repository)
    for problem in problems:
        print(f"cannot export here: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
