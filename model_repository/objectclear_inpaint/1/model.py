"""objectclear_inpaint: IMAGE + MASK (+ SEED, STEPS, GUIDANCE_SCALE, ENGINE) -> IMAGE, MASK (the replaced region).

Adapts Triton tensors to pipelines.objectclear.ObjectClearInpainter; the networks are the objectclear_* models,
called through BLS. Preset values (steps, guidance, short side, engine) come from this config's parameters.
ENGINE "flux_fill" hands the request to the flux_fill_inpaint model instead.
"""
import triton_python_backend_utils as pb_utils

from pipelines.imaging import decode_image, encode_png
from pipelines.triton_io import PublicModel, bytes_input, bytes_output, optional_scalar
from pipelines.triton_pipelines import (build_inpainter, inpaint_elsewhere, parameters, preset_settings, request_engine,
                                        request_settings)


class TritonPythonModel(PublicModel):
    def initialize(self, args):
        params = parameters(args)
        self.settings = preset_settings(params)
        self.engine = params["engine"]
        self.inpainter = build_inpainter(args)

    def infer(self, request):
        engine = request_engine(request, self.engine)
        if engine != "objectclear":
            return inpaint_elsewhere(engine, request, pb_utils.get_input_tensor_by_name(request, "IMAGE"),
                                     pb_utils.get_input_tensor_by_name(request, "MASK"))
        image = decode_image(bytes_input(request, "IMAGE"), "IMAGE")
        mask = decode_image(bytes_input(request, "MASK"), "MASK", mode="L")
        seed = int(optional_scalar(request, "SEED", 0))
        result, region = self.inpainter(image, mask, seed, request_settings(request, self.settings),
                                        cancelled=request.is_cancelled)
        return pb_utils.InferenceResponse([bytes_output("IMAGE", encode_png(result)),
                                           bytes_output("MASK", encode_png(region))])
