"""sam3_segment: IMAGE + PROMPT (+ BOXES, SCORE_THRESHOLD) -> MASKS, BOXES, SCORES of the instances found.

Adapts Triton tensors to pipelines.sam3.Sam3Segmenter; the networks are the sam3_* models, called through BLS.
Thresholds come from this config's parameters; only instances above the score threshold are returned.
"""
import numpy as np
import triton_python_backend_utils as pb_utils

from pipelines.imaging import decode_image
from pipelines.triton_io import PublicModel, bytes_input, optional_scalar, optional_tensor, text_input
from pipelines.triton_observers import PipelineMetrics
from pipelines.triton_pipelines import build_segmenter, parameters


class TritonPythonModel(PublicModel):
    def initialize(self, args):
        params = parameters(args)
        self.score_threshold = float(params["score_threshold"])
        self.mask_threshold = float(params["mask_threshold"])
        self.segmenter = build_segmenter(args)
        self.metrics = PipelineMetrics(args, engine="sam3")

    def infer(self, request, observer):
        observer.stage("decode_input")
        image = decode_image(bytes_input(request, "IMAGE"), "IMAGE")
        boxes = optional_tensor(request, "BOXES")
        observer.stage("segmentation")
        found = self.segmenter(image, text_input(request, "PROMPT"), boxes,
                               float(optional_scalar(request, "SCORE_THRESHOLD", self.score_threshold)),
                               self.mask_threshold)
        return pb_utils.InferenceResponse([pb_utils.Tensor("MASKS", found.masks),
                                           pb_utils.Tensor("BOXES", found.boxes.astype(np.float32)),
                                           pb_utils.Tensor("SCORES", found.scores.astype(np.float32))])
