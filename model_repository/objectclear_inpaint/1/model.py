"""objectclear_inpaint: IMAGE + MASK (+ SEED, STEPS, GUIDANCE_SCALE) -> IMAGE, MASK (attention-guided region).

Adapts Triton tensors to pipelines.objectclear.ObjectClearInpainter; the networks are the objectclear_* models,
called through BLS. Preset values (steps, guidance, short side) come from this config's parameters.
"""
import triton_python_backend_utils as pb_utils

from pipelines.imaging import decode_image, encode_png
from pipelines.triton_io import PublicModel, bytes_input, bytes_output, optional_scalar
from pipelines.triton_pipelines import build_inpainter, parameters, preset_settings, request_settings


class TritonPythonModel(PublicModel):
    def initialize(self, args):
        self.settings = preset_settings(parameters(args))
        self.inpainter = build_inpainter(args)

    def infer(self, request):
        image = decode_image(bytes_input(request, "IMAGE"), "IMAGE")
        mask = decode_image(bytes_input(request, "MASK"), "MASK", mode="L")
        seed = int(optional_scalar(request, "SEED", 0))
        result, region = self.inpainter(image, mask, seed, request_settings(request, self.settings),
                                        cancelled=request.is_cancelled)
        return pb_utils.InferenceResponse([bytes_output("IMAGE", encode_png(result)),
                                           bytes_output("MASK", encode_png(region))])
