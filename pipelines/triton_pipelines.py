"""Building the pipelines inside a Triton python-backend model: networks as BLS components, preset values from
the model config's parameters, exported artifacts from the model's version directory."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import triton_python_backend_utils as pb_utils
from transformers import Sam3Processor

from pipelines import flux, objectclear, sam3
from pipelines.components import pipeline_device
from pipelines.imaging import InputError, decode_image, encode_png
from pipelines.triton_io import BlsComponent, bytes_input, bytes_output, forward, optional_scalar, optional_text
from pipelines.triton_observers import RequestObserver
from pipelines.triton_network import config_parameters

OBJECTCLEAR_OUTPUTS = {"unet": ["noise_pred", "obj_attn"], "vae_encoder": ["latent_mean", "latent_logvar"],
                       "vae_decoder": ["image"], "object_encoder": ["object_token"]}


def version_dir(args) -> Path:
    return Path(args["model_repository"]) / args["model_version"]


def parameters(args) -> dict[str, str]:
    return config_parameters(json.loads(args["model_config"]))


def instance_device(args):
    """Where a pipeline instance keeps its tensors: its GPU for a KIND_GPU instance (the GPU runtimes of
    server/repository.py, beside networks that answer there), else the CPU. Refused at load when unusable."""
    if args.get("model_instance_kind") == "GPU":
        return pipeline_device(f"cuda:{args['model_instance_device_id']}")
    return pipeline_device("cpu")


def bls_components(args, models: dict[str, str], outputs: dict[str, list[str]]) -> dict[str, BlsComponent]:
    device = instance_device(args)
    return {role: BlsComponent(model, outputs[role], device) for role, model in models.items()}


def build_inpainter(args) -> objectclear.ObjectClearInpainter:
    components = bls_components(args, objectclear.COMPONENT_MODELS, OBJECTCLEAR_OUTPUTS)
    conditioning = objectclear.Conditioning.load(version_dir(args) / "conditioning.npz")
    return objectclear.ObjectClearInpainter(components, conditioning, instance_device(args))


def build_segmenter(args) -> sam3.Sam3Segmenter:
    components = bls_components(args, sam3.COMPONENT_MODELS, sam3.COMPONENT_OUTPUTS)
    return sam3.Sam3Segmenter(components, Sam3Processor.from_pretrained(version_dir(args) / "processor"),
                              device=instance_device(args))


def build_flux(args, pipeline_class: type[flux.FluxBase], models: dict[str, str]) -> flux.FluxBase:
    components = bls_components(args, models, flux.COMPONENT_OUTPUTS)
    return pipeline_class(components, flux.FluxConfig.load(version_dir(args) / "pipeline"), instance_device(args))


def preset_settings(params: dict[str, str]) -> objectclear.Settings:
    return objectclear.Settings(steps=int(params["steps"]), guidance_scale=float(params["guidance_scale"]),
                                short_side=int(params["short_side"]), composite=flag(params["composite"]))


def flag(value: str) -> bool:
    return value.strip().lower() == "true"


def request_composite(request, default: bool) -> bool:
    return bool(optional_scalar(request, "COMPOSITE", default))


def request_settings(request, preset: objectclear.Settings) -> objectclear.Settings:
    """The preset's values, overridden by the request's optional STEPS / GUIDANCE_SCALE / COMPOSITE inputs."""
    return replace(preset, steps=int(optional_scalar(request, "STEPS", preset.steps)),
                   guidance_scale=float(optional_scalar(request, "GUIDANCE_SCALE", preset.guidance_scale)),
                   composite=request_composite(request, preset.composite))


def generate_preset(params: dict[str, str]) -> flux.GenerateSettings:
    return flux.GenerateSettings(width=int(params["width"]), height=int(params["height"]), steps=int(params["steps"]),
                                 guidance_scale=float(params["guidance_scale"]))


def request_generate_settings(request, preset: flux.GenerateSettings) -> flux.GenerateSettings:
    """The preset's values, overridden by the request's optional WIDTH / HEIGHT / STEPS / GUIDANCE_SCALE."""
    return replace(preset, width=int(optional_scalar(request, "WIDTH", preset.width)),
                   height=int(optional_scalar(request, "HEIGHT", preset.height)),
                   steps=int(optional_scalar(request, "STEPS", preset.steps)),
                   guidance_scale=float(optional_scalar(request, "GUIDANCE_SCALE", preset.guidance_scale)))


def fill_preset(params: dict[str, str]) -> flux.FillSettings:
    return flux.FillSettings(pixels=int(params["pixels"]), steps=int(params["steps"]),
                             guidance_scale=float(params["guidance_scale"]), prompt=params["prompt"],
                             composite=flag(params["composite"]))


def request_fill_settings(request, preset: flux.FillSettings) -> flux.FillSettings:
    """The preset's values, overridden by the request's optional STEPS / GUIDANCE_SCALE / PROMPT / COMPOSITE."""
    return replace(preset, steps=int(optional_scalar(request, "STEPS", preset.steps)),
                   guidance_scale=float(optional_scalar(request, "GUIDANCE_SCALE", preset.guidance_scale)),
                   prompt=optional_text(request, "PROMPT", preset.prompt),
                   composite=request_composite(request, preset.composite))


# inpainting engines of objectclear_inpaint and remove_object: this process's ObjectClear, or the Fill model via BLS
ENGINES = {"objectclear": None, "flux_fill": "flux_fill_inpaint"}
FORWARDED_INPUTS = ["SEED", "STEPS", "GUIDANCE_SCALE", "COMPOSITE"]


def inpaint_response(request, inpainter, settings, observer: RequestObserver):
    """IMAGE + MASK (+ SEED) of an inpainting request through `inpainter` (ObjectClear or Fill) -> IMAGE, MASK."""
    observer.stage("decode_input")
    image = decode_image(bytes_input(request, "IMAGE"), "IMAGE")
    mask = decode_image(bytes_input(request, "MASK"), "MASK", mode="L")
    seed = int(optional_scalar(request, "SEED", 0))
    result, region = inpainter(image, mask, seed, settings, observer=observer)
    observer.stage("png")
    return pb_utils.InferenceResponse([bytes_output("IMAGE", encode_png(result)),
                                       bytes_output("MASK", encode_png(region))])


def request_engine(request, default: str) -> str:
    engine = optional_text(request, "ENGINE", default)
    if engine not in ENGINES:
        raise InputError("ENGINE", f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    return engine


def inpaint_elsewhere(engine: str, request, image, mask):
    """The response of the engine's own model for this image and mask (Triton tensors), with the request's seed
    and step/guidance overrides."""
    return forward(ENGINES[engine], request, [image, mask], FORWARDED_INPUTS, ["IMAGE", "MASK"])
