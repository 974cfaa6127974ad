"""objectclear_inpaint served by a real tritonserver on a GPU, full-size networks: throughput at concurrency 1, 2, 4, 8
with and without the UNet's dynamic batching, with the pipeline's loop and fusion on the CPU or on the GPU (its
`device` parameter), against the same pipeline in-process.

    # on the GPU machine (BENCHMARKS.md has the set-up line: diffusers, numpy 1.26 for pytriton's python-backend
    # stub, which misreads tensors under numpy 2, and pytriton's tritonserver, installed into the image's venv):
    python3 -m benchmarks.gpu_served --out $OUT
    # smoke test on a CPU (tiny configs, fp32; the numbers mean nothing):
    .venv/bin/python -m benchmarks.gpu_served --small --out /tmp/gpu_served

Builds a model repository in a temporary folder: objectclear_inpaint exactly as in model_repository/ (its model.py
and balanced config; only the instance count raised to 8, so eight requests can be in their denoising loops at once,
and the `device` parameter set per variant),
and its four networks with their own configs (max_batch_size, dynamic batching), but run by `TorchNetwork`: the
export wrappers of export/objectclear.py built at full size with random weights, in fp16 on the GPU, instead of
ONNX Runtime on model.onnx (benchmarks/gpu_network_model.py). The same tritonserver (pytriton's build) and the same
BLS path as on CPU. Results: <out>/served.json, and a Markdown table printed at the end.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import struct
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from benchmarks.gpu_fullsize import OBJECTCLEAR_SCALING, TOKEN_INDEX, TorchComponent, building, configs, photo_and_mask
from benchmarks.timing import median_seconds
from export.tiny import SCHEDULER_CONFIG
from pipelines.imaging import encode_png
from pipelines.objectclear import COMPONENT_MODELS, Conditioning, ObjectClearInpainter, Settings
from server.launcher import DEFAULT_MODEL_REPOSITORY, TritonServer

PIPELINE = "objectclear_inpaint"
CONCURRENCY = (1, 2, 4, 8)
REQUESTS_PER_CLIENT = 4


def device_and_dtype(small: bool) -> tuple[torch.device, torch.dtype]:
    return (torch.device("cpu"), torch.float32) if small else (torch.device("cuda"), torch.float16)


def networks(small: bool) -> dict[str, tuple[object, torch.nn.Module]]:
    """Triton model name -> (its ComponentSpec, the export wrapper module), random weights, built on the device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPConfig, CLIPModel

    from export.objectclear import ObjectClearModels, component_specs
    from export.postfuse import PostfuseModule

    cfg = configs(small)
    torch.manual_seed(0)
    with building(*device_and_dtype(small)):
        models = ObjectClearModels(
            unet=UNet2DConditionModel(**cfg["unet"]).eval(), vae=AutoencoderKL(**cfg["vae"]).eval(),
            clip=CLIPModel(CLIPConfig(**cfg["clip"])).eval(), postfuse=PostfuseModule(*cfg["postfuse"]).eval(),
            text_encoders=None, tokenizers=None, scheduler_config=SCHEDULER_CONFIG)
        return {spec.name: (spec, module) for spec, module in component_specs(models)}


def variants(small: bool) -> list[tuple[bool, str]]:
    """(UNet dynamic batching, pipeline device) per server, the GPU pipeline last: it needs GPU tensors through BLS."""
    return [(True, "cpu"), (False, "cpu")] + ([] if small else [(True, "cuda")])


def write_repository(root: Path, batching: bool, small: bool, pipeline_device: str) -> Path:
    cfg = configs(small)
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / PIPELINE, root / PIPELINE,
                    ignore=shutil.ignore_patterns("configs", "__pycache__", "*.npz"))
    config = root / PIPELINE / "config.pbtxt"
    config.write_text(re.sub(r"count: \d+", "count: 8", config.read_text())
                      + f'parameters: {{ key: "device", value: {{ string_value: "{pipeline_device}" }} }}\n')
    generator = torch.Generator().manual_seed(0)
    np.savez(root / PIPELINE / "1" / "conditioning.npz",
             prompt_embeds=torch.randn(1, 77, cfg["unet"]["cross_attention_dim"], generator=generator).numpy(),
             pooled_prompt_embeds=torch.randn(1, cfg["pooled"], generator=generator).numpy(),
             scheduler_config=json.dumps(SCHEDULER_CONFIG),
             vae_scaling_factor=np.float32(OBJECTCLEAR_SCALING), object_token_index=np.int64(TOKEN_INDEX))
    for model in COMPONENT_MODELS.values():
        (root / model / "1").mkdir(parents=True)
        text = (DEFAULT_MODEL_REPOSITORY / model / "config.pbtxt").read_text()
        if not batching:
            text = re.sub(r"dynamic_batching \{[^}]*\}[^\n]*\n", "", text)
        (root / model / "config.pbtxt").write_text(text)
        (root / model / "1" / "model.py").write_text(
            "from benchmarks.gpu_network_model import TorchNetwork as TritonPythonModel  # noqa: F401\n")
        (root / model / "1" / "network.json").write_text(json.dumps({"small": small}))
    return root


def infer(url: str, image: bytes, mask: bytes, seed: int) -> None:
    """One objectclear_inpaint request over HTTP with Triton's binary tensor extension, by hand: tritonclient's
    transports need packages (geventhttpclient, python-rapidjson, a recent protobuf) that the GPU image lacks."""
    tensors = [("IMAGE", "BYTES", [1], struct.pack("<I", len(image)) + image),
               ("MASK", "BYTES", [1], struct.pack("<I", len(mask)) + mask),
               ("SEED", "INT64", [1], np.array([seed], dtype=np.int64).tobytes())]
    header = json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape,
                                     "parameters": {"binary_data_size": len(data)}}
                                    for name, datatype, shape, data in tensors],
                         "outputs": [{"name": "IMAGE", "parameters": {"binary_data": True}}]}).encode()
    request = urllib.request.Request(f"http://{url}/v2/models/{PIPELINE}/infer",
                                     data=header + b"".join(t[3] for t in tensors),
                                     headers={"Inference-Header-Content-Length": str(len(header)),
                                              "Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=600) as response:
        response.read()


def load_test(url: str, image: bytes, mask: bytes, concurrency: int, requests_per_client: int = REQUESTS_PER_CLIENT):
    """`concurrency` clients, each sending `requests_per_client` requests back to back -> throughput and latency."""
    latencies, errors = [], []

    def client(index: int) -> None:
        for k in range(requests_per_client):
            start = time.perf_counter()
            try:
                infer(url, image, mask, index * 100 + k)
            except Exception as error:  # noqa: BLE001 - reported, not raised, so the other clients finish
                body = error.read().decode(errors="replace") if hasattr(error, "read") else ""
                errors.append(f"{error} {body}"[:400])
            latencies.append(time.perf_counter() - start)

    before = unet_counts(url)
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    after = unet_counts(url)
    rows, runs = after[0] - before[0], after[1] - before[1]
    return dict(concurrency=concurrency, requests=len(latencies), seconds=round(seconds, 3),
                throughput=round(len(latencies) / seconds, 3), median_latency=round(statistics.median(latencies), 3),
                unet_rows_per_run=round(rows / max(runs, 1), 2), errors=errors[:3])


def unet_counts(url: str) -> tuple[int, int]:
    """(rows inferred, runs executed) of the UNet so far, from Triton's statistics endpoint."""
    with urllib.request.urlopen(f"http://{url}/v2/models/{COMPONENT_MODELS['unet']}/stats", timeout=30) as response:
        stats = json.loads(response.read())["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


def in_process_latency(repository: Path, image: np.ndarray, mask: np.ndarray, small: bool) -> dict[str, float]:
    """The same pipeline class, conditioning and networks without Triton (TorchComponent in this process), with the
    pipeline on each device the served variants use -> median seconds per device. No PNG coding: arrays in and out."""
    conditioning = Conditioning.load(repository / PIPELINE / "1" / "conditioning.npz")
    roles = {model: role for role, model in COMPONENT_MODELS.items()}
    components = {roles[name]: TorchComponent(module, spec.output_names, *device_and_dtype(small))
                  for name, (spec, module) in networks(small).items()}
    medians = {}
    for device in sorted({device for _, device in variants(small)}):
        inpainter = ObjectClearInpainter(components, conditioning, device)
        # returns numpy on the CPU, so each call's time includes the device finishing its work
        medians[device] = round(median_seconds(lambda: inpainter(image, mask, 0, Settings()), REQUESTS_PER_CLIENT), 3)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--small", action="store_true", help="tiny networks on the CPU (smoke test)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    photo, mask, description = photo_and_mask()
    image_bytes, mask_bytes = encode_png(photo), encode_png(mask)
    results = {"photo": description, "device": "CPU (--small)" if args.small else torch.cuda.get_device_name(0),
               "runs": []}
    for batching, pipeline_device in variants(args.small):
        root = write_repository(Path(tempfile.mkdtemp(prefix="gpu-served-")), batching, args.small, pipeline_device)
        started = time.perf_counter()
        try:
            with TritonServer(root, models=[PIPELINE, *COMPONENT_MODELS.values()],
                              log_path=args.out / f"server_{pipeline_device}_batching_{batching}.log") as server:
                print(f"server ready in {time.perf_counter() - started:.0f} s ({pipeline_device}, batching {batching})",
                      flush=True)
                # warm-up: 8 at once, so the pipeline instances and the UNet's larger batches have run once
                load_test(server.http_url, image_bytes, mask_bytes, max(CONCURRENCY), requests_per_client=1)
                for concurrency in CONCURRENCY:
                    row = dict(load_test(server.http_url, image_bytes, mask_bytes, concurrency), batching=batching,
                               pipeline_device=pipeline_device)
                    results["runs"].append(row)
                    print(json.dumps(row), flush=True)
                    (args.out / "served.json").write_text(json.dumps(results, indent=1))
        except Exception as error:  # noqa: BLE001 - recorded; the other variants still run
            results.setdefault("failed", []).append(f"{pipeline_device}, batching {batching}: {error}"[:2000])
            print(results["failed"][-1], flush=True)
    results["in_process_latency"] = in_process_latency(root, photo, mask, args.small)
    (args.out / "served.json").write_text(json.dumps(results, indent=1))
    print(markdown(results))


def markdown(results: dict) -> str:
    variant = lambda r: (r["pipeline_device"], r["batching"])  # noqa: E731
    base = {variant(r): r for r in results["runs"] if r["concurrency"] == 1}
    in_process = ", ".join(f"pipeline on {device} {seconds:.3f} s"
                           for device, seconds in results["in_process_latency"].items())
    lines = [f"{results['device']}; {results['photo']}; balanced preset (8 steps, 576x384); in-process median "
             f"latency (same pipeline and networks, no Triton): {in_process}", "",
             "| pipeline on | UNet dynamic batching | concurrency | requests | throughput (req/s) | vs concurrency 1 | "
             "median latency (s) | vs in-process | UNet rows per run | errors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        vs_one = r["throughput"] / base[variant(r)]["throughput"]
        vs_in_process = r["median_latency"] / results["in_process_latency"][r["pipeline_device"]]
        lines.append(f"| {r['pipeline_device']} | {'on' if r['batching'] else 'off'} | {r['concurrency']} | "
                     f"{r['requests']} | {r['throughput']:.2f} | {vs_one:.2f}x | {r['median_latency']:.3f} | "
                     f"{vs_in_process:.2f}x | {r['unet_rows_per_run']:.2f} | {len(r['errors'])} |")
    lines += [f"\nfailed: {failure}" for failure in results.get("failed", [])]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
