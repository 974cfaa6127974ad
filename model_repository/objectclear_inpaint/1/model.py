"""objectclear_inpaint: IMAGE + MASK (+ SEED, STEPS, GUIDANCE_SCALE) -> IMAGE, MASK (attention-guided region).

Adapts Triton tensors to pipelines.objectclear.ObjectClearInpainter; the networks are the objectclear_* models,
called through BLS. Preset values (steps, guidance, short side) come from this config's parameters.
"""
import json
from dataclasses import replace
from pathlib import Path

import triton_python_backend_utils as pb_utils

from pipelines.imaging import decode_image, encode_png
from pipelines.objectclear import COMPONENT_MODELS, Conditioning, ObjectClearInpainter, Settings
from pipelines.triton_io import (BlsComponent, bytes_input, bytes_output, config_parameters, error_response,
                                 optional_scalar)

OUTPUTS = {"unet": ["noise_pred", "obj_attn"], "vae_encoder": ["latent_mean", "latent_logvar"],
           "vae_decoder": ["image"], "object_encoder": ["object_token"]}


class TritonPythonModel:
    def initialize(self, args):
        parameters = config_parameters(json.loads(args["model_config"]))
        self.settings = Settings(steps=int(parameters["steps"]), guidance_scale=float(parameters["guidance_scale"]),
                                 short_side=int(parameters["short_side"]))
        components = {role: BlsComponent(model, OUTPUTS[role]) for role, model in COMPONENT_MODELS.items()}
        conditioning = Conditioning.load(Path(args["model_repository"]) / args["model_version"] / "conditioning.npz")
        self.inpainter = ObjectClearInpainter(components, conditioning)

    def execute(self, requests):
        return [self.infer(request) for request in requests]

    def infer(self, request):
        try:
            image = decode_image(bytes_input(request, "IMAGE"), "IMAGE")
            mask = decode_image(bytes_input(request, "MASK"), "MASK", mode="L")
            seed = int(optional_scalar(request, "SEED", 0))
            settings = replace(self.settings,
                               steps=int(optional_scalar(request, "STEPS", self.settings.steps)),
                               guidance_scale=float(optional_scalar(request, "GUIDANCE_SCALE",
                                                                    self.settings.guidance_scale)))
            result, region = self.inpainter(image, mask, seed, settings, cancelled=request.is_cancelled)
            return pb_utils.InferenceResponse([bytes_output("IMAGE", encode_png(result)),
                                               bytes_output("MASK", encode_png(region))])
        except Exception as error:  # every failure becomes this request's error; the model keeps serving
            return error_response(error)
