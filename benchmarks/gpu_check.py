"""The GPU check: full-size networks with random weights, served by tritonserver on the `torch` runtime with
GPU-resident pipelines, against the same pipelines and networks in-process.

    # here (no GPU needed), after `make export`: the check's repository, configs only (no weights), a few MB
    .venv/bin/python -m benchmarks.gpu_check prepare
    # there, on the lent GPU (BENCHMARKS.md has the set-up line for pytriton's server and the carried wheels):
    python3 -m benchmarks.gpu_check run --out $OUT
    # smoke test of both halves on a CPU: the tiny architectures, fp32, eager (the numbers mean nothing)
    .venv/bin/python -m benchmarks.gpu_check prepare --small
    .venv/bin/python -m benchmarks.gpu_check run --small --out /tmp/gpu_check

`prepare` writes artifacts/gpu_check[-small]/: `python -m server.repository --runtime torch --weights random` over a
source repository whose networks are the export's own wrappers described at full size (network.json and each part's
config.json: the real checkpoints' architectures) and whose pipelines are the project's public models with
full-size conditioning. Every public model also appears once per preset as `<model>__<preset>` (that preset's
config under another name), so one server serves every preset; the balanced objectclear_inpaint has 8 instances for
the concurrency run. FLUX.1 schnell's presets differ only in the image size, which a request sets (WIDTH, HEIGHT): its
one model serves them all. FLUX Fill and dev are left out (not measured). The run side needs neither tritonclient nor
protobuf (the GPU image lacks a matching pair): requests use Triton's binary HTTP protocol directly, and preset values
come from check.json.

`run` measures, each step guarded so that a failure is recorded and the run goes on, within --budget seconds:
1. in-process: the pipeline classes on the same networks (pipelines/torch_network.py, each in its serving precision,
   with CUDA graphs), per preset: p50 latency and peak GPU memory of objectclear_inpaint, remove_object, sam3_segment
   and flux_schnell_generate on a 1200x800 photo; the UNet alone at batch 2, 4 and 8;
2. served: the same per preset through tritonserver (p50 of --repeats after a warm-up; device memory sampled with
   NVML), throughput of objectclear_inpaint (balanced) at concurrency 1, 4 and 8 with the UNet's rows per run, and
   the shutdown: seconds to exit, and whether every model unloaded.
Results: <out>/results.jsonl (one line per measurement, appended as taken) and <out>/results.md.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import platform
import re
import shutil
import statistics
import struct
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image, ImageDraw

from benchmarks.timing import median_seconds
from export.serving import MAX_BATCH, precision
from pipelines.imaging import encode_png
from server.launcher import DEFAULT_MODEL_REPOSITORY, PRESETS, REPO_ROOT, TritonServer, gpu_server_arguments

FLUX = "flux_schnell_generate"  # flux_generate, the pinned name, is an ensemble over it
PUBLIC = ["objectclear_inpaint", "remove_object", "sam3_segment", FLUX]
PER_PRESET = ["objectclear_inpaint", "remove_object"]  # served once per preset; sam3_segment has no presets
PHOTO_SIZE = (1200, 800)  # 3:2: quality's 512 short side -> 768x512
MASK_BOX = (260, 80, 940, 660)  # the cup in coffee, at PHOTO_SIZE
PROMPT = "a cup"
CONCURRENCY = (1, 4, 8)
UNET_BATCHES = (2, 4, 8)
GIB = 2 ** 30

# The real checkpoints' architectures (each Hugging Face part's config.json), beside export/tiny.py's SDXL ones
CLIP_VIT_L14 = dict(  # openai/clip-vit-large-patch14, ObjectClear's image_prompt_encoder
    text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     max_position_embeddings=77, hidden_act="quick_gelu"),
    vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=224, patch_size=14, hidden_act="quick_gelu"),
    projection_dim=768,
)
FLUX_SCHNELL = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                    axes_dims_rope=(16, 56, 56), guidance_embeds=False)
T5_XXL = dict(vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
              feed_forward_proj="gated-gelu")
CLIP_L_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")
FLUX_VAE = dict(in_channels=3, out_channels=3, latent_channels=16,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, sample_size=1024,
                use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159)
OBJECTCLEAR_POOLED = 1280


def folder_for(small: bool) -> Path:
    return REPO_ROOT / "artifacts" / ("gpu_check-small" if small else "gpu_check")


# ---------------------------------------------------------------------------------------------------------------------
# prepare (here): the check's repository, configs only
# ---------------------------------------------------------------------------------------------------------------------
def parts(small: bool) -> SimpleNamespace:
    """Every network's Hugging Face parts on the meta device (no memory): full size, or (small) the architectures of
    the exported tiny repository, read from its torch/ folders."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel, UNet2DConditionModel
    from transformers import (CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, Sam3Config, Sam3Model, T5Config,
                              T5EncoderModel)

    from export.postfuse import PostfuseModule
    from export.tiny import SDXL_INPAINT_UNET, SDXL_VAE

    exported = lambda network, part: json.loads(  # noqa: E731
        (DEFAULT_MODEL_REPOSITORY / network / "1" / "torch" / part / "config.json").read_text())
    if small:
        unet, vae = exported("objectclear_unet", "unet"), exported("objectclear_vae_decoder", "vae")
        clip, postfuse = exported("objectclear_object_encoder", "clip"), exported("objectclear_object_encoder",
                                                                                    "postfuse")
        sam3 = exported("sam3_image_encoder", "model")
        flux, t5 = exported("flux_schnell_transformer", "transformer"), exported("flux_t5_encoder", "text_encoder")
        clip_text, flux_vae = exported("flux_clip_text_encoder", "text_encoder"), exported("flux_vae_decoder", "vae")
    else:
        unet, vae, clip, postfuse = SDXL_INPAINT_UNET, SDXL_VAE, CLIP_VIT_L14, dict(embed_dim=2048, embed_dim_img=768)
        sam3, flux, t5, clip_text, flux_vae = {}, FLUX_SCHNELL, T5_XXL, CLIP_L_TEXT, FLUX_VAE
    with torch.device("meta"):  # from_config: diffusers ignores a checkpoint's bookkeeping keys (EMA, metadata)
        return SimpleNamespace(
            unet=UNet2DConditionModel.from_config(unet), vae=AutoencoderKL.from_config(vae),
            clip=CLIPModel(CLIPConfig(**clip)), postfuse=PostfuseModule.from_config(postfuse),
            sam3=Sam3Model(Sam3Config(**sam3)), flux=FluxTransformer2DModel.from_config(flux),
            t5=T5EncoderModel(T5Config(**t5)), clip_text=CLIPTextModel(CLIPTextConfig(**clip_text)),
            flux_vae=AutoencoderKL.from_config(flux_vae))


def networks(models: SimpleNamespace) -> list:
    """(spec, wrapper) of every network the measured public models call, from the exporters' own descriptions."""
    from export import flux, objectclear, sam3
    from export.vae import vae_specs

    objectclear_models = objectclear.ObjectClearModels(models.unet, models.vae, models.clip, models.postfuse, None,
                                                       None, {})
    pipeline = SimpleNamespace(tokenizer=SimpleNamespace(model_max_length=77), text_encoder=models.clip_text)
    return [*objectclear.component_specs(objectclear_models), *sam3.component_specs(models.sam3),
            flux.clip_spec(pipeline), flux.t5_spec(models.t5),
            flux.transformer_spec("flux_schnell_transformer", models.flux), vae_specs("flux", models.flux_vae)[1]]


def prepare(small: bool) -> Path:
    from export.onnx_export import save_torch_network
    from export.tiny import SCHEDULER_CONFIG
    from server.launcher import preset_parameters
    from server.repository import generate

    folder = folder_for(small)
    source = Path(tempfile.mkdtemp(prefix="gpu-check-source-"))
    models = parts(small)
    saved: dict = {}
    for spec, module in networks(models):
        shutil.copytree(DEFAULT_MODEL_REPOSITORY / spec.name, source / spec.name,
                        ignore=shutil.ignore_patterns("*.onnx", "*.onnx.data", "torch", "__pycache__"))
        save_torch_network(spec, module, source / spec.name / "1" / "torch", saved, weights=False)
    for model in PUBLIC:  # model.py, configs and the exported processor / tokenizers (their ids fit any size)
        shutil.copytree(DEFAULT_MODEL_REPOSITORY / model, source / model,
                        ignore=shutil.ignore_patterns("*.npz", "__pycache__"))
    write_conditioning(source, models.unet.config.cross_attention_dim,
                       OBJECTCLEAR_POOLED if not small else int(models.unet.config.projection_class_embeddings_input_dim
                                                                - 6 * models.unet.config.addition_time_embed_dim),
                       SCHEDULER_CONFIG)
    image_size = models.sam3.config.vision_config.backbone_config.image_size
    for model in ("sam3_segment", "remove_object"):
        write_processor_size(source / model / "1" / "processor", image_size)
    models.flux.save_config(source / FLUX / "1" / "pipeline" / "transformer")
    models.flux_vae.save_config(source / FLUX / "1" / "pipeline" / "vae")
    presets = {preset: {model: preset_parameters(preset, model) for model in [*PER_PRESET, FLUX]}
               for preset in PRESETS}
    for model in PER_PRESET:
        for preset in PRESETS:
            add_preset_copy(source, model, preset, instances=8 if (model, preset) == ("objectclear_inpaint",
                                                                                      "balanced") else 1)
    names = sorted(p.name for p in source.iterdir())
    shutil.rmtree(folder, ignore_errors=True)
    generate("torch", folder / "repository", source, names, device="cpu" if small else "cuda", weights="random",
             cuda_graphs=not small, copy=True)
    shutil.rmtree(source)
    (folder / "check.json").write_text(json.dumps({"small": small, "presets": presets, "models": names}, indent=1))
    return folder


def write_conditioning(source: Path, cross_dim: int, pooled_dim: int, scheduler: dict) -> None:
    generator = torch.Generator().manual_seed(0)
    for model in ("objectclear_inpaint", "remove_object"):
        np.savez(source / model / "1" / "conditioning.npz",
                 prompt_embeds=torch.randn(1, 77, cross_dim, generator=generator).numpy(),
                 pooled_prompt_embeds=torch.randn(1, pooled_dim, generator=generator).numpy(),
                 scheduler_config=json.dumps(scheduler), vae_scaling_factor=np.float32(0.13025),
                 object_token_index=np.int64(5))


def write_processor_size(folder: Path, size: int) -> None:
    """The processor at the SAM 3 architecture's input size (the exported tiny one resizes to 112 px)."""
    from transformers import Sam3Processor

    processor = Sam3Processor.from_pretrained(folder)
    processor.image_processor.size = {"height": size, "width": size}
    shutil.rmtree(folder)
    processor.save_pretrained(folder)


def add_preset_copy(source: Path, model: str, preset: str, instances: int) -> None:
    """<model>__<preset>: the preset's config under its own name, served beside the others by one server."""
    target = source / f"{model}__{preset}"
    shutil.copytree(source / model / "1", target / "1", symlinks=True)
    text = (source / model / "configs" / f"{preset}.pbtxt").read_text()
    text = re.sub(r'^name: "[^"]+"', f'name: "{target.name}"', text, flags=re.M)
    text = re.sub(r"count: \d+", f"count: {instances}", text)
    (target / "config.pbtxt").write_text(text)


# ---------------------------------------------------------------------------------------------------------------------
# run (there): measuring
# ---------------------------------------------------------------------------------------------------------------------
class Recorder:
    """Results appended to results.jsonl and re-rendered into results.md after every record; a step that fails is
    recorded and the next one runs; steps after the budget are skipped."""

    def __init__(self, out: Path, budget_s: float):
        self.out, self.budget_s, self.start, self.records = out, budget_s, time.perf_counter(), []
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.jsonl").write_text("")

    def record(self, kind: str, **fields) -> None:
        entry = dict(kind=kind, elapsed_s=round(time.perf_counter() - self.start, 1), **fields)
        self.records.append(entry)
        with open(self.out / "results.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
        (self.out / "results.md").write_text(render(self.records))
        print(f"[{entry['elapsed_s']:6.1f}s] {kind}: {json.dumps({k: v for k, v in fields.items() if k != 'trace'})}",
              flush=True)

    def attempt(self, where: str, step) -> None:
        if time.perf_counter() - self.start > self.budget_s:
            self.record("skipped", where=where, reason=f"budget of {self.budget_s:.0f} s spent")
            return
        print(f"-- {where}", flush=True)
        try:
            step()
        except Exception as error:  # noqa: BLE001 - recorded; the next step still runs
            self.record("error", where=where, error=f"{type(error).__name__}: {error}"[:1500],
                        trace=traceback.format_exc()[-3000:])


def photo_and_mask() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's coffee, upscaled to PHOTO_SIZE, read from its data folder: `import skimage.data` imports scipy,
    whose build on the GPU image needs numpy 2 while pytriton's python stub needs 1.26."""
    spec = importlib.util.find_spec("skimage")
    path = Path(spec.submodule_search_locations[0]) / "data" / "coffee.png" if spec else None
    if path is not None and path.exists():
        photo = Image.open(path).convert("RGB")
    else:
        gradient = np.linspace(0, 255, 600, dtype=np.float32)
        photo = Image.fromarray(np.stack([np.tile(gradient, (400, 1))] * 3, -1).astype(np.uint8))
    photo = photo.resize(PHOTO_SIZE, Image.BICUBIC)
    mask = Image.new("L", PHOTO_SIZE, 0)
    ImageDraw.Draw(mask).rectangle(MASK_BOX, fill=255)
    return np.array(photo), np.array(mask)


class GpuMemory:
    """The device's used memory (all processes: the server and its stubs), sampled every 50 ms while active."""

    def __init__(self, cuda: bool):
        self.handle = None
        if cuda:
            try:
                import pynvml
                pynvml.nvmlInit()
                self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
            except Exception:  # noqa: BLE001 - no NVML: memory is not reported
                self.handle = None

    def used_gib(self) -> float | None:
        return None if self.handle is None else self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / GIB

    def peak_during(self, call) -> tuple[object, float | None]:
        if self.handle is None:
            return call(), None
        peak, done = [self.used_gib()], threading.Event()

        def sample():
            while not done.wait(0.05):
                peak.append(self.used_gib())
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            result = call()
        finally:
            done.set()
            thread.join()
        return result, round(max(peak), 2)


def in_process(rec: Recorder, repository: Path, check: dict, device: torch.device, repeats: int) -> None:
    from pipelines import flux, objectclear, sam3
    from pipelines.torch_network import TorchNetwork
    from transformers import Sam3Processor

    cuda = device.type == "cuda"
    built = {}

    def network(model: str) -> TorchNetwork:
        if model not in built:
            built[model] = TorchNetwork(repository / model / "1" / "torch", device,
                                        precision(model) if cuda else "fp32", cuda_graphs=cuda, random_weights=True,
                                        max_batch=MAX_BATCH[model])
        return built[model]

    start = time.perf_counter()
    components = lambda models: {role: network(model) for role, model in models.items()}  # noqa: E731
    conditioning = objectclear.Conditioning.load(repository / "objectclear_inpaint" / "1" / "conditioning.npz")
    inpainter = objectclear.ObjectClearInpainter(components(objectclear.COMPONENT_MODELS), conditioning, device)
    segmenter = sam3.Sam3Segmenter(components(sam3.COMPONENT_MODELS), Sam3Processor.from_pretrained(
        repository / "sam3_segment" / "1" / "processor"), device=device)
    generator = flux.FluxGenerator(components(flux.generate_models("schnell")),
                                   flux.FluxConfig.load(repository / FLUX / "1" / "pipeline"), device)
    rec.record("in_process_build", seconds=round(time.perf_counter() - start, 1),
               allocated_gib=round(torch.cuda.memory_allocated() / GIB, 2) if cuda else None)
    image, mask = photo_and_mask()

    def measure(label: str, preset: str, call) -> None:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        seconds = median_seconds(call, repeats)  # every call returns numpy: the device has finished
        rec.record("in_process", model=label, preset=preset, p50_s=round(seconds, 4),
                   peak_gib=round(torch.cuda.max_memory_allocated() / GIB, 2) if cuda else None)

    def remove():
        found = segmenter(image, PROMPT, None, 0.0, 0.5)  # threshold 0: random weights find something to remove
        return inpainter(image, found.union(), 0, settings) if len(found.scores) else None

    for preset in PRESETS:
        values = check["presets"][preset]
        oc = values["objectclear_inpaint"]
        settings = objectclear.Settings(int(oc["steps"]), float(oc["guidance_scale"]), int(oc["short_side"]))
        fg = values[FLUX]
        generate = flux.GenerateSettings(int(fg["width"]), int(fg["height"]), int(fg["steps"]),
                                         float(fg["guidance_scale"]))
        rec.attempt(f"in-process objectclear {preset}", lambda: measure(
            "objectclear_inpaint", preset, lambda: inpainter(image, mask, 0, settings)))
        rec.attempt(f"in-process remove_object {preset}", lambda: measure("remove_object", preset, remove))
        rec.attempt(f"in-process flux {preset}", lambda: measure(
            FLUX, preset, lambda: generator("a photo of a dog", 0, generate)))
    rec.attempt("in-process sam3", lambda: measure("sam3_segment", "any", lambda: segmenter(image, PROMPT)))
    rec.attempt("in-process unet batches", lambda: unet_batches(rec, network("objectclear_unet"), conditioning,
                                                                 device, repeats))


def unet_batches(rec: Recorder, unet, conditioning, device: torch.device, repeats: int) -> None:
    """The UNet alone at balanced's 576x384 (latents 72x48): batch 2, 4, 8 = 1, 2, 4 CFG requests in one run."""
    height, width = 48, 72
    for batch in UNET_BATCHES:
        inputs = dict(sample=torch.randn(batch, 9, height, width, device=device),
                      timestep=torch.full((batch,), 500.0, device=device),
                      encoder_hidden_states=conditioning.prompt_embeds.to(device).expand(batch, -1, -1),
                      text_embeds=conditioning.pooled_prompt_embeds.to(device).expand(batch, -1),
                      time_ids=torch.tensor([[384.0, 576, 0, 0, 384, 576]], device=device).expand(batch, -1))
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        seconds = median_seconds(lambda: (unet(**inputs), sync()), repeats)
        rec.record("unet_batch", batch=batch, ms=round(1000 * seconds, 2), rows_per_s=round(batch / seconds, 1))


def infer(url: str, model: str, inputs: dict, outputs: list[str]) -> None:
    """One request over Triton's HTTP binary tensor protocol. inputs: name -> bytes (BYTES [1]) or an int32, int64 or
    float32 array."""
    tensors = []
    for name, value in inputs.items():
        if isinstance(value, bytes):
            tensors.append((name, "BYTES", [1], struct.pack("<I", len(value)) + value))
        else:
            datatype = {"int32": "INT32", "int64": "INT64", "float32": "FP32"}[value.dtype.name]
            tensors.append((name, datatype, list(value.shape), value.tobytes()))
    header = json.dumps({"inputs": [{"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(b)}}
                                    for n, d, s, b in tensors],
                         "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs]}).encode()
    request = urllib.request.Request(f"http://{url}/v2/models/{model}/infer",
                                     data=header + b"".join(t[3] for t in tensors),
                                     headers={"Inference-Header-Content-Length": str(len(header)),
                                              "Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=600) as response:
        response.read()


def model_stats(url: str, model: str) -> tuple[int, int]:
    """(rows inferred, runs executed) of a model so far, from Triton's statistics endpoint."""
    with urllib.request.urlopen(f"http://{url}/v2/models/{model}/stats", timeout=30) as response:
        stats = json.loads(response.read())["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


def served(rec: Recorder, repository: Path, check: dict, out: Path, cuda: bool, repeats: int) -> None:
    image, mask = photo_and_mask()
    photo, mask_png, seed = encode_png(image), encode_png(mask), np.array([0], np.int64)
    anything = np.array([0.0], np.float32)  # score threshold 0: random weights find something to remove, as in-process
    requests = {"objectclear_inpaint": (dict(IMAGE=photo, MASK=mask_png, SEED=seed), ["IMAGE", "MASK"]),
                "remove_object": (dict(IMAGE=photo, PROMPT=PROMPT.encode(), SEED=seed, SCORE_THRESHOLD=anything),
                                  ["IMAGE", "MASK"]),
                "sam3_segment": (dict(IMAGE=photo, PROMPT=PROMPT.encode()), ["MASKS", "BOXES", "SCORES"]),
                FLUX: (dict(PROMPT=b"a photo of a dog", SEED=seed), ["IMAGE"])}
    memory = GpuMemory(cuda)
    idle = memory.used_gib()
    start = time.perf_counter()
    server = TritonServer(repository, models=check["models"], log_path=out / "server.log",
                          extra_args=gpu_server_arguments() if cuda else [])
    server.start(timeout=900)
    rec.record("server_ready", seconds=round(time.perf_counter() - start, 1), used_gib_before=idle,
               used_gib_loaded=memory.used_gib())
    try:
        def p50(model: str, preset: str, name: str, **extra: np.ndarray) -> None:
            inputs, outputs = requests[model]
            call = lambda: infer(server.http_url, name, dict(inputs, **extra), outputs)  # noqa: E731
            seconds, peak = memory.peak_during(lambda: median_seconds(call, repeats))
            rec.record("served", model=model, preset=preset, p50_s=round(seconds, 4), peak_used_gib=peak)

        for preset in PRESETS:
            for model in PER_PRESET:
                rec.attempt(f"served {model} {preset}", lambda: p50(model, preset, f"{model}__{preset}"))
            size = {key.upper(): np.array([int(check["presets"][preset][FLUX][key])], np.int32)
                    for key in ("width", "height")}
            rec.attempt(f"served {FLUX} {preset}", lambda: p50(FLUX, preset, FLUX, **size))
        rec.attempt("served sam3_segment", lambda: p50("sam3_segment", "any", "sam3_segment"))
        name = "objectclear_inpaint__balanced"
        rec.attempt("served concurrency",
                    lambda: concurrency(rec, server.http_url, name, requests["objectclear_inpaint"]))
    finally:
        stopped = time.perf_counter()
        server.stop(timeout=120)
        log = (out / "server.log").read_text(errors="replace")
        rec.record("shutdown", seconds=round(time.perf_counter() - stopped, 1), exit_code=server.process.returncode,
                   unloaded=log.count("successfully unloaded"), models=len(check["models"]),
                   exit_timeout_expired="Exit timeout expired" in log)


def concurrency(rec: Recorder, url: str, model: str, request: tuple, per_client: int = 4) -> None:
    inputs, outputs = request

    def load(clients: int, each: int) -> dict:
        latencies, refused = [], []

        def client() -> None:  # a refused request (503: queue full) is retried, as the project's client does
            for _ in range(each):
                started = time.perf_counter()
                while True:
                    try:
                        infer(url, model, inputs, outputs)
                        break
                    except urllib.error.HTTPError as error:
                        if error.code != 503:
                            raise
                        refused.append(1)
                        time.sleep(0.1)
                latencies.append(time.perf_counter() - started)
        before = model_stats(url, "objectclear_unet")
        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        after = model_stats(url, "objectclear_unet")
        return dict(concurrency=clients, requests=len(latencies), throughput=round(len(latencies) / seconds, 3),
                    p50_s=round(statistics.median(latencies), 4), refused=len(refused),
                    unet_rows_per_run=round((after[0] - before[0]) / max(1, after[1] - before[1]), 2))

    load(max(CONCURRENCY), 1)  # warm-up: every instance, and the UNet's larger batches, have run once
    for clients in CONCURRENCY:
        rec.record("concurrency", model=model, **load(clients, per_client))


def environment(small: bool) -> dict:
    info = dict(torch=torch.__version__, cuda=torch.version.cuda, python=platform.python_version(), small=small,
                date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    if torch.cuda.is_available() and not small:
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, memory_gib=round(props.total_memory / GIB, 1))
    return info


def render(records: list[dict]) -> str:
    by = lambda kind: [r for r in records if r["kind"] == kind]  # noqa: E731
    lines = ["## GPU check", ""] + [f"- {k}: {v}" for r in by("env") for k, v in r.items() if k not in ("kind",)]
    inside = {(r["model"], r["preset"]): r for r in by("in_process")}
    outside = {(r["model"], r["preset"]): r for r in by("served")}
    if inside or outside:
        lines += ["", "| model | preset | in-process p50 (s) | served p50 (s) | served / in-process | "
                      "in-process peak allocated (GiB) | served peak device memory (GiB) |",
                  "|---|---|---|---|---|---|---|"]
        for key in sorted(set(inside) | set(outside)):
            a, b = inside.get(key, {}), outside.get(key, {})
            ratio = f"{b['p50_s'] / a['p50_s']:.2f}x" if a and b else ""
            lines.append(f"| {key[0]} | {key[1]} | {a.get('p50_s', '')} | {b.get('p50_s', '')} | {ratio} | "
                         f"{a.get('peak_gib', '')} | {b.get('peak_used_gib', '')} |")
    rows = by("concurrency")
    if rows:
        base = rows[0]["throughput"]
        lines += ["", "| concurrency | requests | req/s | vs concurrency 1 | p50 (s) | UNet rows per run "
                  "| refused, retried |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['concurrency']} | {r['requests']} | {r['throughput']} | {r['throughput'] / base:.2f}x | "
                  f"{r['p50_s']} | {r['unet_rows_per_run']} | {r['refused']} |" for r in rows]
    if by("unet_batch"):
        lines += ["", "| UNet batch | ms | rows/s |", "|---|---|---|"]
        lines += [f"| {r['batch']} | {r['ms']} | {r['rows_per_s']} |" for r in by("unet_batch")]
    lines += [""] + [f"- {r['kind']}: " + json.dumps({k: v for k, v in r.items() if k not in ("kind", "trace")})
                     for r in records if r["kind"] in ("in_process_build", "server_ready", "shutdown", "error",
                                                       "skipped")]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> None:
    folder = folder_for(args.small)
    check = json.loads((folder / "check.json").read_text())
    repository = folder / "repository"
    cuda = not args.small
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on the GPU machine, or pass --small")
    rec = Recorder(args.out, args.budget)
    rec.record("env", **environment(args.small))
    device = torch.device("cuda" if cuda else "cpu")
    rec.attempt("in-process", lambda: in_process(rec, repository, check, device, args.repeats))
    gc.collect()  # the in-process networks go with in_process's frame: their GPU memory back before the server starts
    if cuda:
        torch.cuda.empty_cache()
    rec.attempt("served", lambda: served(rec, repository, check, args.out, cuda, args.repeats))
    print((args.out / "results.md").read_text(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["prepare", "run"])
    parser.add_argument("--small", action="store_true", help="the tiny architectures on the CPU (a smoke test)")
    parser.add_argument("--out", type=Path, help="run: folder for results.jsonl, results.md and server.log")
    parser.add_argument("--repeats", type=int, default=5, help="run: timed requests per measurement after a warm-up")
    parser.add_argument("--budget", type=float, default=420.0, help="run: seconds after which steps are skipped")
    args = parser.parse_args()
    if args.step == "prepare":
        print(f"written: {prepare(args.small)}")
    else:
        if args.out is None:
            parser.error("run needs --out")
        run(args)


if __name__ == "__main__":
    main()
