"""Building the pipelines inside a Triton python-backend model: networks as BLS components, preset values from
the model config's parameters, exported artifacts from the model's version directory."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from transformers import Sam3Processor

from pipelines import objectclear, sam3
from pipelines.triton_io import BlsComponent, config_parameters, optional_scalar

OBJECTCLEAR_OUTPUTS = {"unet": ["noise_pred", "obj_attn"], "vae_encoder": ["latent_mean", "latent_logvar"],
                       "vae_decoder": ["image"], "object_encoder": ["object_token"]}


def version_dir(args) -> Path:
    return Path(args["model_repository"]) / args["model_version"]


def parameters(args) -> dict[str, str]:
    return config_parameters(json.loads(args["model_config"]))


def build_inpainter(args) -> objectclear.ObjectClearInpainter:
    components = {role: BlsComponent(model, OBJECTCLEAR_OUTPUTS[role])
                  for role, model in objectclear.COMPONENT_MODELS.items()}
    conditioning = objectclear.Conditioning.load(version_dir(args) / "conditioning.npz")
    return objectclear.ObjectClearInpainter(components, conditioning)


def build_segmenter(args) -> sam3.Sam3Segmenter:
    components = {role: BlsComponent(model, sam3.COMPONENT_OUTPUTS[role])
                  for role, model in sam3.COMPONENT_MODELS.items()}
    return sam3.Sam3Segmenter(components, Sam3Processor.from_pretrained(version_dir(args) / "processor"))


def preset_settings(params: dict[str, str]) -> objectclear.Settings:
    return objectclear.Settings(steps=int(params["steps"]), guidance_scale=float(params["guidance_scale"]),
                                short_side=int(params["short_side"]))


def request_settings(request, preset: objectclear.Settings) -> objectclear.Settings:
    """The preset's values, overridden by the request's optional STEPS / GUIDANCE_SCALE inputs."""
    return replace(preset, steps=int(optional_scalar(request, "STEPS", preset.steps)),
                   guidance_scale=float(optional_scalar(request, "GUIDANCE_SCALE", preset.guidance_scale)))
