"""flux_fill_inpaint: IMAGE + MASK (+ SEED, STEPS, GUIDANCE_SCALE, PROMPT) -> IMAGE, MASK (the filled region).

objectclear_inpaint's interface on FLUX.1 Fill: adapts Triton tensors to pipelines.flux.FluxFillInpainter, whose
networks are the flux_* models (called through BLS). Preset values come from this config's parameters.
"""
from pipelines.flux import FILL_MODELS, FluxFillInpainter
from pipelines.triton_io import PublicModel
from pipelines.triton_observers import PipelineMetrics
from pipelines.triton_pipelines import build_flux, fill_preset, inpaint_response, parameters, request_fill_settings


class TritonPythonModel(PublicModel):
    def initialize(self, args):
        self.settings = fill_preset(parameters(args))
        self.inpainter = build_flux(args, FluxFillInpainter, FILL_MODELS)
        self.metrics = PipelineMetrics(args, engine="flux_fill")

    def infer(self, request, observer):
        return inpaint_response(request, self.inpainter, request_fill_settings(request, self.settings), observer)
