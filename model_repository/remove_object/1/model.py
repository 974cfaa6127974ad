"""remove_object: IMAGE + PROMPT (+ SEED, STEPS, GUIDANCE_SCALE, SCORE_THRESHOLD, ENGINE) -> IMAGE, MASK.

SAM 3 finds every instance of the prompt, their union is the mask, ObjectClear (or, with ENGINE "flux_fill", the
flux_fill_inpaint model) removes it. Both pipelines run in
this process on the decoded image (decoded once, no PNG between the steps) and call their networks through BLS,
so tensors between networks stay raw (and on the GPU where the networks run there). A prompt that matches
nothing returns the input image and an empty mask without running the diffusion loop.
"""
import numpy as np
import triton_python_backend_utils as pb_utils

from pipelines.imaging import decode_image, encode_png
from pipelines.triton_io import PublicModel, bytes_input, bytes_output, optional_scalar, text_input
from pipelines.triton_observers import PipelineMetrics
from pipelines.triton_pipelines import (build_inpainter, build_segmenter, inpaint_elsewhere, parameters, preset_settings,
                                        request_engine, request_settings)


class TritonPythonModel(PublicModel):
    def initialize(self, args):
        params = parameters(args)
        self.settings = preset_settings(params)
        self.score_threshold = float(params["score_threshold"])
        self.mask_threshold = float(params["mask_threshold"])
        self.engine = params["engine"]
        self.segmenter = build_segmenter(args)
        self.inpainter = build_inpainter(args)
        self.metrics = PipelineMetrics(args, engine=self.engine)

    def infer(self, request, observer):
        observer.stage("decode_input")
        image = decode_image(bytes_input(request, "IMAGE"), "IMAGE")
        prompt = text_input(request, "PROMPT")
        seed = int(optional_scalar(request, "SEED", 0))
        settings = request_settings(request, self.settings)
        engine = observer.engine = request_engine(request, self.engine)
        if engine == "objectclear":
            settings.validate()
        observer.stage("segmentation")
        found = self.segmenter(image, prompt, None,
                               float(optional_scalar(request, "SCORE_THRESHOLD", self.score_threshold)),
                               self.mask_threshold)
        if len(found.scores) == 0:
            observer.nothing_found()
            result, region = image, np.zeros(image.shape[:2], np.uint8)
        elif engine != "objectclear":
            observer.stage(engine)
            return inpaint_elsewhere(engine, request, pb_utils.get_input_tensor_by_name(request, "IMAGE"),
                                     bytes_output("MASK", encode_png(found.union())))
        else:
            result, region = self.inpainter(image, found.union(), seed, settings, observer=observer)
        observer.stage("png")
        return pb_utils.InferenceResponse([bytes_output("IMAGE", encode_png(result)),
                                           bytes_output("MASK", encode_png(region))])
