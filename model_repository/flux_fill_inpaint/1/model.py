"""flux_fill_inpaint: IMAGE + MASK (+ SEED, STEPS, GUIDANCE_SCALE, PROMPT) -> IMAGE, MASK (the filled region).

objectclear_inpaint's interface on FLUX.1 Fill: adapts Triton tensors to pipelines.flux.FluxFillInpainter, whose
networks are the flux_* models (called through BLS). Preset values come from this config's parameters.
"""
import triton_python_backend_utils as pb_utils

from pipelines.flux import FILL_MODELS, FluxFillInpainter
from pipelines.imaging import decode_image, encode_png
from pipelines.triton_io import PublicModel, bytes_input, bytes_output, optional_scalar
from pipelines.triton_pipelines import build_flux, fill_preset, parameters, request_fill_settings


class TritonPythonModel(PublicModel):
    def initialize(self, args):
        self.settings = fill_preset(parameters(args))
        self.inpainter = build_flux(args, FluxFillInpainter, FILL_MODELS)

    def infer(self, request):
        image = decode_image(bytes_input(request, "IMAGE"), "IMAGE")
        mask = decode_image(bytes_input(request, "MASK"), "MASK", mode="L")
        seed = int(optional_scalar(request, "SEED", 0))
        result, region = self.inpainter(image, mask, seed, request_fill_settings(request, self.settings),
                                        cancelled=request.is_cancelled)
        return pb_utils.InferenceResponse([bytes_output("IMAGE", encode_png(result)),
                                           bytes_output("MASK", encode_png(region))])
