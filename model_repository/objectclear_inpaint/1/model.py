"""objectclear_inpaint: IMAGE + MASK (+ SEED, STEPS, GUIDANCE_SCALE, ENGINE) -> IMAGE, MASK (the replaced region).

Adapts Triton tensors to pipelines.objectclear.ObjectClearInpainter; the networks are the objectclear_* models,
called through BLS. Preset values (steps, guidance, short side, engine) come from this config's parameters.
ENGINE "flux_fill" hands the request to the flux_fill_inpaint model instead.
"""
import triton_python_backend_utils as pb_utils

from pipelines.triton_io import PublicModel
from pipelines.triton_observers import PipelineMetrics
from pipelines.triton_pipelines import (build_inpainter, inpaint_elsewhere, inpaint_response, parameters,
                                        preset_settings, request_engine, request_settings)


class TritonPythonModel(PublicModel):
    def initialize(self, args):
        params = parameters(args)
        self.settings = preset_settings(params)
        self.engine = params["engine"]
        self.inpainter = build_inpainter(args)
        self.metrics = PipelineMetrics(args, engine=self.engine)

    def infer(self, request, observer):
        engine = observer.engine = request_engine(request, self.engine)
        if engine != "objectclear":
            observer.stage(engine)
            return inpaint_elsewhere(engine, request, pb_utils.get_input_tensor_by_name(request, "IMAGE"),
                                     pb_utils.get_input_tensor_by_name(request, "MASK"))
        return inpaint_response(request, self.inpainter, request_settings(request, self.settings), observer)
