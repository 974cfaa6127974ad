"""flux_generate: PROMPT (+ SEED, WIDTH, HEIGHT, STEPS, GUIDANCE_SCALE) -> IMAGE (PNG).

Adapts Triton tensors to pipelines.flux.FluxGenerator; the networks are the flux_* models, called through BLS.
Preset values come from this config's parameters; the tokenizers and scheduler config from 1/pipeline/.
"""
import triton_python_backend_utils as pb_utils

from pipelines.flux import GENERATE_MODELS, FluxGenerator
from pipelines.imaging import encode_png
from pipelines.triton_io import PublicModel, bytes_output, optional_scalar, text_input
from pipelines.triton_observers import PipelineMetrics
from pipelines.triton_pipelines import build_flux, generate_preset, parameters, request_generate_settings


class TritonPythonModel(PublicModel):
    def initialize(self, args):
        self.settings = generate_preset(parameters(args))
        self.generator = build_flux(args, FluxGenerator, GENERATE_MODELS)
        variant = "dev" if self.generator.config.guidance_embeds else "schnell"  # the engine label of its metrics
        self.metrics = PipelineMetrics(args, engine=f"flux_{variant}")

    def infer(self, request, observer):
        prompt = text_input(request, "PROMPT")
        seed = int(optional_scalar(request, "SEED", 0))
        image = self.generator(prompt, seed, request_generate_settings(request, self.settings), observer=observer)
        observer.stage("png")
        return pb_utils.InferenceResponse([bytes_output("IMAGE", encode_png(image))])
