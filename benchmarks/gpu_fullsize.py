"""Full-size ObjectClear and FLUX.1 schnell on one GPU, random weights: per-preset latency and memory, UNet batching.

    # on the GPU machine, from the repository root, diffusers 0.42.1 unpacked from .whl/ into /tmp/site:
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD python3 -m benchmarks.gpu_fullsize --out $OUT [--cuda-graphs] [--pipeline-on-device]
    # smoke test on a CPU (tiny configs, fp32; the numbers mean nothing):
    .venv/bin/python -m benchmarks.gpu_fullsize --small --out /tmp/gpu_small

Every network is built straight from its full-size config on the GPU, in half precision (weights never exist in
fp32 or on the CPU): compute does not depend on weight values. Sections, each guarded so a failure is recorded and
the run goes on, and skipped once --budget seconds have passed:

1. ObjectClear per preset through the project's own `pipelines.objectclear.ObjectClearInpainter`, its four
   networks (export/objectclear.py's wrappers around the SDXL-inpainting UNet, the SDXL VAE, CLIP ViT-L/14 vision +
   postfuse) run in fp16 by `TorchComponent`; coffee upscaled to 1200x800 so every preset runs at its own short side
   (the pipeline never upscales); one warm-up + median of --repeats, each network's time per call, peak memory.
2. The UNet alone at balanced's 576x384 (latents 72x48) at batch 2, 4, 8, 16 = 1, 2, 4, 8 CFG requests merged.
3. FLUX.1 schnell: transformer (bf16) at 512² and 1024² and batch 1/2/4, T5 v1.1 XXL (bf16), CLIP-L text (fp16),
   VAE decoder (bf16), one model on the GPU at a time; per preset latency = CLIP + T5 + 4 x transformer + decode.

--cuda-graphs replays every network call as a CUDA graph captured per input shape: the launch overhead a TensorRT
engine with CUDA graphs also removes, which eager PyTorch pays once per kernel from Python.

Results go to <out>/results.jsonl (one line per measurement, appended as it is taken) and <out>/results.md
(rewritten after every measurement, tables for BENCHMARKS.md), so a run cut short keeps what it measured.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import platform
import re
import statistics
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from benchmarks.timing import median_seconds
from export.tiny import SDXL_INPAINT_UNET, SDXL_VAE
from server.launcher import DEFAULT_MODEL_REPOSITORY, PRESETS

GIB = 2 ** 30
PHOTO_SIZE = (1200, 800)  # 3:2; quality's 512 short side -> 768x512
MASK_BOX = (260, 80, 940, 660)  # the cup in coffee, at PHOTO_SIZE
OBJECTCLEAR_SCALING = SDXL_VAE["scaling_factor"]
TOKEN_INDEX = 5
BALANCED_LATENTS = (48, 72)  # 576x384 / 8, (h, w)
UNET_BATCHES = (2, 4, 8, 16)
FLUX_STEPS = 4
FLUX_TEXT_TOKENS = 256
FLUX_SIZES = (512, 1024)
FLUX_BATCHES = (1, 2, 4)  # at 512²
FLUX_PRESET_SIZE = {"quality": 1024, "balanced": 512, "ultra_fast": 512, "low_memory": 512}  # PRODUCT.md
FLUX_TFLOP_PER_STEP = {512: 17.7, 1024: 69.5}  # PRODUCT.md, batch 1

# ---------------------------------------------------------------------------------------------------------------------
# Configs: full size (the real checkpoints' architectures) and --small (tiny stand-ins for a CPU smoke test)
# ---------------------------------------------------------------------------------------------------------------------
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


def configs(small: bool) -> dict:
    if not small:
        return dict(unet=SDXL_INPAINT_UNET, vae=SDXL_VAE, clip=CLIP_VIT_L14, postfuse=(2048, 768), pooled=1280,
                    flux=FLUX_SCHNELL, t5=T5_XXL, clip_text=CLIP_L_TEXT, flux_vae=FLUX_VAE)
    from export.tiny import (CLIP_PROJECTION_DIM, CLIP_VISION, CROSS_DIM, POOLED_DIM, TEXT_ENCODER, UNET_CONFIG,
                             VAE_CONFIG)
    return dict(unet=UNET_CONFIG, vae=VAE_CONFIG,
                clip=dict(text_config=TEXT_ENCODER, vision_config=CLIP_VISION, projection_dim=CLIP_PROJECTION_DIM),
                postfuse=(CROSS_DIM, CLIP_PROJECTION_DIM), pooled=POOLED_DIM,
                flux=dict(FLUX_SCHNELL, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                          joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6)),
                t5=dict(T5_XXL, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2),
                clip_text=dict(CLIP_L_TEXT, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                               num_attention_heads=4),
                flux_vae=dict(FLUX_VAE, block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8))


# ---------------------------------------------------------------------------------------------------------------------
# Plumbing: building on the device, running a torch module as a pipeline Component, timing, recording
# ---------------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def building(device: torch.device, dtype: torch.dtype):
    """Modules constructed inside are created (and randomly initialised) directly on `device` in `dtype`."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def weight_gib(module: torch.nn.Module) -> float:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / GIB


def cuda_graph(call):
    """Capture `call` (on fixed input tensors) as a CUDA graph: returns (replay, the outputs each replay rewrites).
    What a TensorRT engine with CUDA graphs gets: one launch per call instead of one per kernel from Python."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up outside the graph (cuBLAS/cuDNN workspaces, lazy init)
            call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = call()
    return graph.replay, outputs


class TorchComponent:
    """A pipeline Component (pipelines/components.py) backed by a torch module on `device` in `dtype`: floating
    inputs are moved and cast, outputs come back as float32 on the CPU (which also waits for the device), named
    like the served model's outputs. Keeps each call's wall time."""

    def __init__(self, module: torch.nn.Module, output_names: list[str], device: torch.device, dtype: torch.dtype,
                 graphs: bool = False, outputs_on_device: bool = False):
        self.module, self.output_names, self.device, self.dtype = module, output_names, device, dtype
        self.outputs_on_device = outputs_on_device  # for a pipeline that runs on the device too
        self.seconds: list[float] = []
        self.graphs = {} if graphs else None  # input shapes -> (static inputs, replay, static outputs)

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        start = time.perf_counter()
        moved = {k: v.to(self.device, self.dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}
        with torch.inference_mode():
            if self.graphs is None:
                outputs = self.module(**moved)
            else:
                key = tuple((k, tuple(v.shape)) for k, v in moved.items())
                if key not in self.graphs:
                    static = {k: v.clone() for k, v in moved.items()}
                    self.graphs[key] = (static, *cuda_graph(lambda: self.module(**static)))
                static, replay, outputs = self.graphs[key]
                for k, v in moved.items():
                    static[k].copy_(v)
                replay()
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        result = {name: out.float() if self.outputs_on_device else out.float().cpu()
                  for name, out in zip(self.output_names, outputs)}
        if self.outputs_on_device and self.device.type == "cuda":
            torch.cuda.synchronize()  # so the per-call time is the network's, not the next host step's
        self.seconds.append(time.perf_counter() - start)
        return result


class Bench:
    """Device, repeats, time budget, and the results: appended to results.jsonl and re-rendered into results.md after
    every record."""

    def __init__(self, out: Path, small: bool, repeats: int, budget_s: float, graphs: bool = False,
                 pipeline_on_device: bool = False):
        self.out, self.small, self.repeats, self.budget_s, self.graphs = out, small, repeats, budget_s, graphs
        self.pipeline_on_device = pipeline_on_device
        self.device = torch.device("cpu" if small else "cuda")
        self.cuda = self.device.type == "cuda"
        self.half = torch.float32 if small else torch.float16
        self.bf16 = torch.float32 if small else torch.bfloat16
        self.start = time.perf_counter()
        self.records: list[dict] = []
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.jsonl").write_text("")

    def record(self, kind: str, **fields) -> dict:
        entry = dict(kind=kind, elapsed_s=round(time.perf_counter() - self.start, 1), **fields)
        self.records.append(entry)
        with open(self.out / "results.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
        (self.out / "results.md").write_text(render_markdown(self.records))
        shown = {k: v for k, v in entry.items() if k not in ("kind", "traceback")}
        print(f"[{entry['elapsed_s']:6.1f}s] {kind}: {json.dumps(shown)}", flush=True)
        return entry

    def attempt(self, where: str, step) -> None:
        """Run one measurement step unless the budget is spent; an exception is recorded and the run goes on."""
        if time.perf_counter() - self.start > self.budget_s:
            self.record("skipped", where=where, reason=f"time budget of {self.budget_s:.0f} s spent")
            return
        print(f"-- {where}", flush=True)
        try:
            step()
        except Exception as e:  # noqa: BLE001 - every failure is recorded, the next section still runs
            self.record("error", where=where, error=f"{type(e).__name__}: {e}"[:2000],
                        traceback=traceback.format_exc()[-4000:])

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def measure(self, call) -> tuple[float, float | None]:
        """Median seconds of `call` (one warm-up, device synchronised) and the peak device memory in GiB meanwhile."""
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds = median_seconds(lambda: (call(), self.sync()), self.repeats)
        return seconds, self.peak_gib()

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated() / GIB if self.cuda else None

    def resident_gib(self) -> float | None:
        return torch.cuda.memory_allocated() / GIB if self.cuda else None

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------------------------------------------------------------
# 1 + 2: ObjectClear
# ---------------------------------------------------------------------------------------------------------------------
def preset_settings(preset: str):
    """The preset's steps / guidance / short side from model_repository/objectclear_inpaint/configs/<preset>.pbtxt.
    server.launcher.preset_parameters parses the same file with tritonclient's protobuf classes, which the GPU
    machine does not have; its `parameters` lines are simple enough for a regular expression."""
    from pipelines.objectclear import Settings

    text = (DEFAULT_MODEL_REPOSITORY / "objectclear_inpaint" / "configs" / f"{preset}.pbtxt").read_text()
    params = dict(re.findall(r'key:\s*"(\w+)",\s*value:\s*\{\s*string_value:\s*"([^"]*)"', text))
    return Settings(steps=int(params["steps"]), guidance_scale=float(params["guidance_scale"]),
                    short_side=int(params["short_side"]))


def photo_and_mask() -> tuple[np.ndarray, np.ndarray, str]:
    # Read from scikit-image's data folder rather than through `import skimage.data`, which imports scipy: the GPU
    # image's scipy needs numpy 2, and the served run (gpu_served.py) carries numpy 1.26 for Triton's python stub.
    spec = importlib.util.find_spec("skimage")
    coffee = Path(spec.submodule_search_locations[0]) / "data" / "coffee.png" if spec else None
    if coffee is not None and coffee.exists():
        photo, name = Image.open(coffee).convert("RGB"), "scikit-image coffee"
    else:
        gradient = np.linspace(0, 255, 600, dtype=np.float32)
        photo = Image.fromarray(np.stack([np.tile(gradient, (400, 1))] * 3, -1).astype(np.uint8))
        name = "synthetic gradient"
    photo = photo.resize(PHOTO_SIZE, Image.BICUBIC)
    mask = Image.new("L", PHOTO_SIZE, 0)
    ImageDraw.Draw(mask).rectangle(MASK_BOX, fill=255)
    return np.array(photo), np.array(mask), f"{name}, upscaled to {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}"


def build_objectclear(bench: Bench, cfg: dict) -> dict[str, TorchComponent]:
    """The four served networks, wrapped exactly as export/objectclear.py exports them, as pipeline components."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPConfig, CLIPModel

    from export.objectclear import ObjectClearModels, component_specs
    from export.postfuse import PostfuseModule
    from export.tiny import SCHEDULER_CONFIG
    from pipelines.objectclear import COMPONENT_MODELS

    start = time.perf_counter()
    torch.manual_seed(0)
    with building(bench.device, bench.half):
        models = ObjectClearModels(
            unet=UNet2DConditionModel(**cfg["unet"]).eval(), vae=AutoencoderKL(**cfg["vae"]).eval(),
            clip=CLIPModel(CLIPConfig(**cfg["clip"])).eval(), postfuse=PostfuseModule(*cfg["postfuse"]).eval(),
            text_encoders=None, tokenizers=None, scheduler_config=SCHEDULER_CONFIG)
        specs = component_specs(models)  # export wrappers; CLIP's text tower is dropped with `models`
    bench.sync()
    roles = {model: role for role, model in COMPONENT_MODELS.items()}
    components = {roles[spec.name]: TorchComponent(module, spec.output_names, bench.device, bench.half, bench.graphs,
                                                   bench.pipeline_on_device)
                  for spec, module in specs}
    del models, specs
    bench.free()
    networks = {"unet": components["unet"].module, "vae": components["vae_encoder"].module.vae,  # one VAE for both
                "object_encoder": components["object_encoder"].module}
    bench.record("oc_build", seconds=round(time.perf_counter() - start, 2), dtype=dtype_name(bench.half),
                 params={name: parameter_count(m) for name, m in networks.items()},
                 weights_gib={name: round(weight_gib(m), 3) for name, m in networks.items()},
                 resident_gib=bench.resident_gib())
    return components


def objectclear_sections(bench: Bench, cfg: dict) -> None:
    from pipelines.objectclear import Conditioning, ObjectClearInpainter
    from export.tiny import SCHEDULER_CONFIG

    components = build_objectclear(bench, cfg)
    cross_dim = cfg["unet"]["cross_attention_dim"]
    generator = torch.Generator().manual_seed(0)
    conditioning = Conditioning(torch.randn(1, 77, cross_dim, generator=generator),
                                torch.randn(1, cfg["pooled"], generator=generator), SCHEDULER_CONFIG,
                                OBJECTCLEAR_SCALING, TOKEN_INDEX)
    inpainter = ObjectClearInpainter(components, conditioning, bench.device if bench.pipeline_on_device else "cpu")
    image, mask, photo = photo_and_mask()

    def run_preset(preset: str) -> None:
        from pipelines.imaging import short_side_size

        settings = preset_settings(preset)
        for component in components.values():
            component.seconds.clear()
        seconds, peak = bench.measure(lambda: inpainter(image, mask, seed=0, settings=settings))
        runs = 1 + bench.repeats
        calls = {role: dict(per_run=len(c.seconds) // runs, median_ms=round(1000 * statistics.median(c.seconds), 2))
                 for role, c in components.items()}
        networks = sum(c["per_run"] * c["median_ms"] for c in calls.values()) / 1000
        bench.record("oc_preset", preset=preset, steps=settings.steps, guidance=settings.guidance_scale,
                     short_side=settings.short_side,
                     size=list(short_side_size(image.shape[1], image.shape[0], settings.short_side)),
                     photo=photo, latency_s=round(seconds, 4), calls=calls,
                     unet_share=round(calls["unet"]["per_run"] * calls["unet"]["median_ms"] / 1000 / seconds, 3),
                     host_s=round(seconds - networks, 4), peak_gib=peak)

    for preset in PRESETS:
        bench.attempt(f"objectclear {preset}", lambda preset=preset: run_preset(preset))

    unet = components["unet"].module
    latent_h, latent_w = BALANCED_LATENTS

    def unet_batch(batch: int) -> None:
        kw = dict(device=bench.device, dtype=bench.half)
        sample = torch.randn(batch, cfg["unet"]["in_channels"], latent_h, latent_w, **kw)
        timestep = torch.full((batch,), 500.0, **kw)
        hidden = torch.randn(batch, 77, cross_dim, **kw)
        pooled = torch.randn(batch, cfg["pooled"], **kw)
        time_ids = torch.tensor([[8.0 * latent_h, 8.0 * latent_w, 0, 0, 8.0 * latent_h, 8.0 * latent_w]],
                                **kw).repeat(batch, 1)
        with torch.inference_mode():
            call = lambda: unet(sample, timestep, hidden, pooled, time_ids)  # noqa: E731
            seconds, peak = bench.measure(cuda_graph(call)[0] if bench.graphs else call)
        bench.record("unet_batch", batch=batch, requests=batch // 2, latents=[latent_h, latent_w],
                     ms=round(1000 * seconds, 2), samples_per_s=round(batch / seconds, 2), peak_gib=peak)

    for batch in UNET_BATCHES:
        bench.attempt(f"unet batch {batch}", lambda batch=batch: unet_batch(batch))
    components.clear()
    del inpainter, unet
    bench.free()


# ---------------------------------------------------------------------------------------------------------------------
# 3: FLUX.1 schnell
# ---------------------------------------------------------------------------------------------------------------------
def flux_network(bench: Bench, name: str, dtype: torch.dtype, build, calls: dict) -> None:
    """Build one network on the device, time each of `calls` ({label: (make_inputs, forward, meta)}), free it."""
    start = time.perf_counter()
    torch.manual_seed(0)
    with building(bench.device, dtype):
        model = build().eval()
    bench.sync()
    bench.record("flux_build", network=name, dtype=dtype_name(dtype), params=parameter_count(model),
                 weights_gib=round(weight_gib(model), 3), seconds=round(time.perf_counter() - start, 2))
    for label, (make_inputs, forward, meta) in calls.items():
        def one() -> None:
            inputs = make_inputs()
            resident = bench.resident_gib()
            with torch.inference_mode():
                call = lambda: forward(model, inputs)  # noqa: E731
                seconds, peak = bench.measure(cuda_graph(call)[0] if bench.graphs else call)
            bench.record("flux_call", network=name, label=label, dtype=dtype_name(dtype), ms=round(1000 * seconds, 2),
                         weights_gib=round(weight_gib(model), 3), resident_gib=resident, peak_gib=peak, **meta)
        bench.attempt(f"{name} {label}", one)
    del model
    bench.free()


def flux_sections(bench: Bench, cfg: dict) -> None:
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from pipelines.flux import image_ids

    device, bf16, half = bench.device, bench.bf16, bench.half
    flux = cfg["flux"]

    def transformer_inputs(size: int, batch: int):
        def make():
            side = size // 16
            return dict(hidden_states=torch.randn(batch, side * side, flux["in_channels"], device=device, dtype=bf16),
                        encoder_hidden_states=torch.randn(batch, FLUX_TEXT_TOKENS, flux["joint_attention_dim"],
                                                          device=device, dtype=bf16),
                        pooled_projections=torch.randn(batch, flux["pooled_projection_dim"], device=device, dtype=bf16),
                        timestep=torch.ones(batch, device=device, dtype=bf16),
                        img_ids=image_ids(2 * side, 2 * side).to(device),
                        txt_ids=torch.zeros(FLUX_TEXT_TOKENS, 3, device=device))
        return make

    shapes = [(size, 1) for size in FLUX_SIZES] + [(FLUX_SIZES[0], batch) for batch in FLUX_BATCHES[1:]]
    transformer_calls = {f"{size}² b{batch}": (transformer_inputs(size, batch),
                                               lambda m, x: m(**x, return_dict=False)[0],
                                               dict(size=size, batch=batch, tokens=(size // 16) ** 2))
                         for size, batch in shapes}
    bench.attempt("transformer", lambda: flux_network(bench, "transformer", bf16,
                                                      lambda: FluxTransformer2DModel(**flux), transformer_calls))

    def token_ids(vocab: int, length: int):
        return lambda: torch.randint(0, vocab, (1, length), device=device)

    t5_calls = {f"{FLUX_TEXT_TOKENS} tokens": (token_ids(cfg["t5"]["vocab_size"], FLUX_TEXT_TOKENS),
                                               lambda m, ids: m(input_ids=ids).last_hidden_state,
                                               dict(tokens=FLUX_TEXT_TOKENS))}
    bench.attempt("t5", lambda: flux_network(bench, "t5", bf16, lambda: T5EncoderModel(T5Config(**cfg["t5"])),
                                             t5_calls))
    clip_calls = {"77 tokens": (token_ids(cfg["clip_text"]["vocab_size"], 77),
                                lambda m, ids: m(input_ids=ids).pooler_output, dict(tokens=77))}
    bench.attempt("clip_text", lambda: flux_network(bench, "clip_text", half,
                                                    lambda: CLIPTextModel(CLIPTextConfig(**cfg["clip_text"])),
                                                    clip_calls))

    def latents(size: int):
        return lambda: torch.randn(1, cfg["flux_vae"]["latent_channels"], size // 8, size // 8, device=device,
                                   dtype=bf16)

    def vae_decoder():
        vae = AutoencoderKL(**cfg["flux_vae"])
        del vae.encoder  # only the decoder is served for schnell
        return vae

    vae_calls = {f"{size}²": (latents(size), lambda m, z: m.decode(z).sample, dict(size=size)) for size in FLUX_SIZES}
    bench.attempt("vae_decoder", lambda: flux_network(bench, "vae_decoder", bf16, vae_decoder, vae_calls))
    for preset in PRESETS:
        bench.attempt(f"flux {preset}", lambda preset=preset: compose_flux_preset(bench, preset))


def compose_flux_preset(bench: Bench, preset: str) -> None:
    """CLIP + T5 + 4 transformer steps + VAE decode at the preset's size, from the measured calls; memory with every
    network resident (weights summed, plus the largest activation peak) and with one network at a time."""
    calls = {(r["network"], r["label"]): r for r in bench.records if r["kind"] == "flux_call"}
    size = FLUX_PRESET_SIZE[preset]
    parts = [calls[("clip_text", "77 tokens")], calls[("t5", f"{FLUX_TEXT_TOKENS} tokens")],
             calls[("transformer", f"{size}² b1")], calls[("vae_decoder", f"{size}²")]]
    ms = dict(clip_text=parts[0]["ms"], t5=parts[1]["ms"], transformer=FLUX_STEPS * parts[2]["ms"],
              vae_decoder=parts[3]["ms"])
    all_resident = one_at_a_time = None
    if bench.cuda:
        all_resident = sum(p["weights_gib"] for p in parts) + max(p["peak_gib"] - p["resident_gib"] for p in parts)
        one_at_a_time = max(p["peak_gib"] for p in parts)
    bench.record("flux_preset", preset=preset, size=size, steps=FLUX_STEPS, ms=ms,
                 latency_s=round(sum(ms.values()) / 1000, 4), peak_all_resident_gib=all_resident,
                 peak_one_at_a_time_gib=one_at_a_time)


# ---------------------------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------------------------
def _gib(value) -> str:
    return "n/a (CPU)" if value is None else f"{value:.2f}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def render_markdown(records: list[dict]) -> str:
    by_kind: dict[str, list[dict]] = {}
    for r in records:
        by_kind.setdefault(r["kind"], []).append(r)
    env = by_kind.get("env", [{}])[0]
    lines = [f"## Full-size ObjectClear and FLUX.1 schnell on {env.get('device_name', '?')} (random weights"
             + (", CUDA graphs)" if env.get("cuda_graphs") else ")"), "",
             f"Command: `{env.get('command', '')}` (benchmarks/gpu_fullsize.py). "
             f"Machine: {env.get('device_name', '?')} ({env.get('device_memory_gib', '?')} GiB), "
             f"{env.get('date', '?')}; torch {env.get('torch', '?')} (CUDA {env.get('cuda', '?')}), "
             f"diffusers {env.get('diffusers', '?')}, transformers {env.get('transformers', '?')}, "
             f"Python {env.get('python', '?')}. Full-size configs, random weights (compute does not depend on the "
             f"values), built on the device in half precision; PyTorch eager with SDPA attention, no torch.compile, "
             + ("every network call replayed as a CUDA graph captured per input shape (--cuda-graphs). "
                if env.get("cuda_graphs") else "no CUDA graphs. ")
             + ("ObjectClear's loop, fusion and resizing on the GPU too, the networks handing tensors over there "
                "(--pipeline-on-device). " if env.get("pipeline_on_device") else "")
             + f"Precision: {env.get('dtypes', '?')}. Times are medians of {env.get('repeats', '?')} "
             f"after one warm-up, device synchronised; memory is torch.cuda.max_memory_allocated (weights included)."]
    if env.get("small"):
        lines += ["", "**--small: tiny configs on the CPU in fp32, a smoke test of the script; the numbers mean "
                      "nothing.**"]

    build = by_kind.get("oc_build", [])
    presets = by_kind.get("oc_preset", [])
    if build or presets:
        lines += ["", "### ObjectClear per preset", ""]
        if build:
            b = build[0]
            where = ("outputs stay on the GPU as fp32, where the Euler loop, CFG and fusion run too; only the resizes "
                     "of the input and output are on the CPU" if env.get("pipeline_on_device") else
                     "outputs back as fp32 on the CPU, as a BLS call would; the Euler loop, CFG, fusion and resizing "
                     "run on the CPU as served")
            lines += [f"`pipelines.objectclear.ObjectClearInpainter` with its four networks (export/objectclear.py's "
                      f"export wrappers) run in PyTorch {b['dtype']} on the GPU through `TorchComponent` (inputs "
                      f"moved to the device per call; {where}). Weights: "
                      + ", ".join(f"{role} {gib:.2f} GiB ({b['params'][role] / 1e6:.0f} M)"
                                  for role, gib in b["weights_gib"].items())
                      + f"; built in {b['seconds']:.1f} s"
                      + (f", {b['resident_gib']:.2f} GiB allocated after the build." if b["resident_gib"] else ".")]
        if presets:
            quality = next((p["latency_s"] for p in presets if p["preset"] == "quality"), None)
            lines += ["", f"Photo: {presets[0]['photo']}, rectangular mask over the cup, seed 0.", ""]
            rows = []
            for p in presets:
                c = p["calls"]
                speedup = f"{quality / p['latency_s']:.2f}x" if quality else "n/a"
                rows.append([p["preset"], p["steps"], p["guidance"], f"{p['size'][0]}x{p['size'][1]}",
                             f"{p['latency_s']:.3f}", speedup, f"{c['unet']['median_ms']:.1f}",
                             f"{100 * p['unet_share']:.0f}%", f"{c['vae_encoder']['median_ms']:.1f}",
                             f"{c['vae_decoder']['median_ms']:.1f}", f"{c['object_encoder']['median_ms']:.1f}",
                             f"{p['host_s']:.3f}", _gib(p["peak_gib"])])
            lines += _table(["preset", "steps", "guidance", "processing size", "latency (s)", "speed-up over quality",
                             "UNet per call (ms, CFG batch 2)", "UNet share", "VAE encode (ms)", "VAE decode (ms)",
                             "object encoder (ms)", "host: loop, fusion, resize (s)", "peak GPU memory (GiB)"], rows)
    batches = by_kind.get("unet_batch", [])
    if batches:
        base = next((b["samples_per_s"] for b in batches if b["batch"] == 2), None)
        lines += ["", f"### ObjectClear UNet batching (balanced size, latents {batches[0]['latents'][1]}x"
                      f"{batches[0]['latents'][0]})", "",
                  "One UNet call at batch B = B/2 concurrent CFG requests merged by Triton's dynamic batcher; "
                  f"{build[0]['dtype'] if build else ''}, inputs already on the device.", ""]
        lines += _table(["batch", "CFG requests", "ms per call", "samples/s", "throughput vs batch 2",
                         "peak GPU memory (GiB)"],
                        [[b["batch"], b["requests"], f"{b['ms']:.1f}", f"{b['samples_per_s']:.1f}",
                          f"{b['samples_per_s'] / base:.2f}x" if base else "n/a", _gib(b["peak_gib"])]
                         for b in batches])
    flux_builds = {b["network"]: b for b in by_kind.get("flux_build", [])}
    flux_calls = by_kind.get("flux_call", [])
    if flux_builds or flux_calls:
        lines += ["", "### FLUX.1 schnell networks", "",
                  f"One network on the GPU at a time; transformer with T={FLUX_TEXT_TOKENS} text tokens; TFLOP/s from "
                  "PRODUCT.md's counted FLOPs per transformer step. Weights: "
                  + ", ".join(f"{n} {b['params'] / 1e9:.3f} B params, {b['weights_gib']:.2f} GiB {b['dtype']} "
                              f"(built in {b['seconds']:.1f} s)" for n, b in flux_builds.items()) + ".", ""]
        rows = []
        base = next((c for c in flux_calls if c["network"] == "transformer" and c.get("batch") == 1
                     and c.get("size") == FLUX_SIZES[0]), None)
        for c in flux_calls:
            tflops = samples = ""
            if c["network"] == "transformer":
                tflops = f"{c['batch'] * FLUX_TFLOP_PER_STEP.get(c['size'], float('nan')) / (c['ms'] / 1000):.0f}"
                if c["size"] == FLUX_SIZES[0] and base:
                    samples = f"{c['batch'] / c['ms'] / (1 / base['ms']):.2f}x"
            rows.append([c["network"], c["label"], c["dtype"], f"{c['ms']:.1f}", tflops, samples,
                         _gib(c["peak_gib"])])
        lines += _table(["network", "input", "dtype", "ms per call", "TFLOP/s", "samples/s vs batch 1",
                         "peak GPU memory (GiB)"], rows)
    flux_presets = by_kind.get("flux_preset", [])
    if flux_presets:
        quality = next((p["latency_s"] for p in flux_presets if p["preset"] == "quality"), None)
        lines += ["", "### FLUX.1 schnell per preset (composed from the calls above)", "",
                  f"Latency = CLIP-L + T5 ({FLUX_TEXT_TOKENS} tokens) + {FLUX_STEPS} x transformer + VAE decode, "
                  "batch 1, a new prompt (no text-encoder cache). Memory: every network resident = their weights "
                  "summed plus the largest activation peak; one at a time = the largest single-network peak.", ""]
        lines += _table(["preset", "size", "CLIP (ms)", "T5 (ms)", f"{FLUX_STEPS} x transformer (ms)",
                         "VAE decode (ms)", "latency (s)", "speed-up over quality",
                         "peak GPU memory, all resident (GiB)", "peak, one at a time (GiB)"],
                        [[p["preset"], f"{p['size']}²", f"{p['ms']['clip_text']:.1f}", f"{p['ms']['t5']:.1f}",
                          f"{p['ms']['transformer']:.1f}", f"{p['ms']['vae_decoder']:.1f}", f"{p['latency_s']:.3f}",
                          f"{quality / p['latency_s']:.2f}x" if quality else "n/a",
                          _gib(p["peak_all_resident_gib"]), _gib(p["peak_one_at_a_time_gib"])]
                         for p in flux_presets])
    problems = by_kind.get("error", []) + by_kind.get("skipped", [])
    if problems:
        lines += ["", "### Errors and skipped steps", ""]
        lines += [f"- {p['where']}: {p.get('error') or p.get('reason')}" for p in problems]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
def environment(bench: Bench) -> dict:
    import diffusers
    import transformers

    info = dict(torch=torch.__version__, cuda=torch.version.cuda, diffusers=diffusers.__version__,
                transformers=transformers.__version__, python=platform.python_version(), small=bench.small,
                cuda_graphs=bench.graphs, pipeline_on_device=bench.pipeline_on_device,
                repeats=bench.repeats, date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                command=("python3 -m benchmarks.gpu_fullsize " + " ".join(sys.argv[1:])).strip(),
                dtypes=f"ObjectClear UNet, VAE, CLIP vision, postfuse {dtype_name(bench.half)}; FLUX transformer "
                       f"{dtype_name(bench.bf16)}, T5 {dtype_name(bench.bf16)}, CLIP-L text {dtype_name(bench.half)}, "
                       f"VAE decoder {dtype_name(bench.bf16)}")
    if bench.cuda:
        props = torch.cuda.get_device_properties(0)
        info.update(device_name=props.name, device_memory_gib=round(props.total_memory / GIB, 1),
                    capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count)
    else:
        info.update(device_name=f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)",
                    device_memory_gib="n/a")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for results.jsonl and results.md")
    parser.add_argument("--small", action="store_true", help="tiny configs on the CPU in fp32 (smoke test)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="replay every network call as a CUDA graph captured per input shape (GPU only)")
    parser.add_argument("--pipeline-on-device", action="store_true",
                        help="run ObjectClear's loop and fusion on the device too (networks hand tensors over there)")
    parser.add_argument("--sections", nargs="+", choices=["objectclear", "flux"], default=["objectclear", "flux"])
    parser.add_argument("--repeats", type=int, help="timed runs per measurement after one warm-up (3; 1 with --small)")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds after which remaining measurements are skipped (default 300)")
    args = parser.parse_args()
    if not args.small and not torch.cuda.is_available():
        parser.error("no CUDA device: run on the GPU machine, or pass --small")
    repeats = args.repeats or (1 if args.small else 3)
    bench = Bench(args.out, args.small, repeats, args.budget, args.cuda_graphs and not args.small,
                  args.pipeline_on_device)
    bench.attempt("environment", lambda: bench.record("env", **environment(bench)))
    cfg = configs(args.small)
    sections = {"objectclear": objectclear_sections, "flux": flux_sections}
    for name in args.sections:
        bench.attempt(name, lambda section=sections[name]: section(bench, cfg))
    print(f"done in {time.perf_counter() - bench.start:.0f} s; results in {args.out}/results.md", flush=True)
    print((args.out / "results.md").read_text(), flush=True)


if __name__ == "__main__":
    main()
