"""The Triton python-backend model of flux_schnell_generate and flux_dev_generate: PROMPT (+ SEED, WIDTH, HEIGHT,
STEPS, GUIDANCE_SCALE) -> IMAGE (PNG).

Adapts Triton tensors to pipelines.flux.FluxGenerator for the variant the model is named after. Its networks are
flux_* models called through BLS: the text encoders and VAE that every variant shares (loaded once, whichever
variants are served) and the variant's own transformer. Preset values come from the model config's parameters, the
tokenizers and scheduler config from its 1/pipeline/.
"""
from pathlib import Path

import triton_python_backend_utils as pb_utils

from pipelines.flux import FluxGenerator, generate_models, variant_of
from pipelines.imaging import encode_png
from pipelines.triton_io import PublicModel, bytes_output, optional_scalar, text_input
from pipelines.triton_observers import PipelineMetrics
from pipelines.triton_pipelines import build_flux, generate_preset, parameters, request_generate_settings


class TritonPythonModel(PublicModel):
    def initialize(self, args):
        self.settings = generate_preset(parameters(args))
        # the variant of the public model whose folder this is (a streaming twin runs this adapter on that folder)
        variant = variant_of(Path(args["model_repository"]).name)
        self.generator = build_flux(args, FluxGenerator, generate_models(variant))
        self.metrics = PipelineMetrics(args, engine=f"flux_{variant}")  # the engine label of its metrics

    def infer(self, request, observer):
        prompt = text_input(request, "PROMPT")
        seed = int(optional_scalar(request, "SEED", 0))
        image = self.generator(prompt, seed, request_generate_settings(request, self.settings), observer=observer)
        observer.stage("png")
        return pb_utils.InferenceResponse([bytes_output("IMAGE", encode_png(image))])
