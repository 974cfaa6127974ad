"""How each exported network is served: the rows one call may carry, its precision on a GPU, and the range of every
named graph axis in each preset.

The one source of the TensorRT optimisation profiles (export/tensorrt.py), of the generated repositories' Triton
configs (server/repository.py: max_batch_size, dims and data types, the ONNX Runtime TensorRT EP's shape ranges) and
of the torch runtime's precision. The sizes come from the pipelines' own rules -- ObjectClear's processing envelope
(pipelines/imaging.py: every side in [MIN_SIDE, short_side * MAX_ASPECT]), FLUX's WIDTH/HEIGHT limits, which Fill's
processing size also keeps (pipelines/flux.py) -- and from each preset's parameters
(model_repository/<model>/configs/<preset>.pbtxt); axis names, fixed sizes and data types come from the exported
graph itself (export/onnx_export.py names the dynamic axes: batch, latent_h, latent_w, tokens, text, num_boxes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import onnx

from pipelines.flux import MAX_SIDE, MIN_SIDE as FLUX_MIN_SIDE
from pipelines.imaging import MAX_ASPECT, MIN_SIDE, processing_size
from pipelines.ort import evaluate
from pipelines.sam3 import MAX_BOXES, TEXT_TOKENS

Range = tuple[int, int, int]  # min, opt, max
Shapes = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]

# Rows one call may carry: Triton's max_batch_size and the profiles' batch bound (0: no batch axis, one image per
# call). The UNet's rows are CFG pairs: 8 = four concurrent requests in one run, which is where the H200 stopped
# gaining (BENCHMARKS.md, UNet batching). Bounded because a TensorRT engine reserves activation memory for its
# largest profile shape.
MAX_BATCH = {
    "objectclear_unet": 8, "objectclear_vae_encoder": 4, "objectclear_vae_decoder": 4, "objectclear_object_encoder": 8,
    "sam3_image_encoder": 4, "sam3_text_encoder": 8, "sam3_detector": 4, "sam3_detector_boxes": 0,
    "flux_clip_text_encoder": 8, "flux_t5_encoder": 4, "flux_schnell_transformer": 4, "flux_dev_transformer": 4,
    "flux_fill_transformer": 4, "flux_vae_encoder": 2, "flux_vae_decoder": 2,
}
OPT_BATCH = {"objectclear_unet": 2}  # one request's CFG pair

# Precision on a GPU, for TensorRT and the torch runtime alike. fp16 unless listed: T5 overflows in fp16 and FLUX
# was trained in bf16 (reference/flux.md 3.1), and so was SAM 3; both VAEs run in fp32 with TF32 matmuls, never fp16
# (the SDXL VAE's config says force_upcast: it overflows in fp16).
PRECISION = {
    "objectclear_vae_encoder": "tf32", "objectclear_vae_decoder": "tf32",
    "sam3_image_encoder": "bf16", "sam3_text_encoder": "bf16", "sam3_detector": "bf16", "sam3_detector_boxes": "bf16",
    "flux_clip_text_encoder": "bf16", "flux_t5_encoder": "bf16", "flux_schnell_transformer": "bf16",
    "flux_dev_transformer": "bf16", "flux_fill_transformer": "bf16", "flux_vae_encoder": "tf32",
    "flux_vae_decoder": "tf32",
}
OPT_PHOTO = (1200, 800)  # the profiles' optimum: a 3:2 photo at the preset's processing size


def precision(network: str) -> str:
    return PRECISION.get(network, "fp16")


@dataclass(frozen=True)
class Graph:
    """An exported graph's signature: name -> (ONNX element type, dims: ints and axis names or expressions)."""
    inputs: dict[str, tuple[str, list]]
    outputs: dict[str, tuple[str, list]]

    @classmethod
    def load(cls, path: Path) -> "Graph":
        graph = onnx.load(str(path), load_external_data=False).graph

        def signature(values):
            return {v.name: (onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type),
                             [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values}
        return cls(signature(graph.input), signature(graph.output))

    @property
    def batched(self) -> bool:
        return all(dims and dims[0] == "batch" for _, dims in self.inputs.values())


@dataclass(frozen=True)
class PresetSizes:
    """What a preset asks of the networks: ObjectClear's short side, FLUX's image side and Fill area, and the T5
    lengths of the exported FLUX checkpoints (256 schnell, 512 dev and Fill)."""
    short_side: int
    flux_side: int
    fill_pixels: int
    text_lengths: tuple[int, ...]

    @classmethod
    def read(cls, preset: str, repository: Path) -> "PresetSizes":
        from server.launcher import preset_parameters

        repository = Path(repository)
        generate = preset_parameters(preset, "flux_generate", repository)
        lengths = sorted({json.loads(p.read_text())["max_sequence_length"]
                          for p in repository.glob("*/1/pipeline/serving.json")})
        return cls(int(preset_parameters(preset, "objectclear_inpaint", repository)["short_side"]),
                   max(int(generate["width"]), int(generate["height"])),
                   int(preset_parameters(preset, "flux_fill_inpaint", repository)["pixels"]), tuple(lengths))


def axis_ranges(network: str, sizes: PresetSizes) -> dict[str, Range]:
    """{axis name: (min, opt, max)} for every named axis of `network`'s graph in the preset `sizes` describes."""
    ranges = {"batch": (1, OPT_BATCH.get(network, 1), MAX_BATCH[network])}
    if network.startswith("objectclear_"):
        width, height = processing_size(*OPT_PHOTO, sizes.short_side)
        high = sizes.short_side * MAX_ASPECT // 8  # either side may be the long one
        ranges |= {"latent_h": (MIN_SIDE // 8, height // 8, high), "latent_w": (MIN_SIDE // 8, width // 8, high)}
    elif network.startswith("sam3_"):
        ranges |= {"tokens": (2, TEXT_TOKENS, TEXT_TOKENS), "num_boxes": (1, 1, MAX_BOXES)}
    elif network.startswith("flux_"):
        fill = "fill" in network or network == "flux_vae_encoder"  # the encoder serves Fill only
        side = round(sizes.fill_pixels ** 0.5) if fill else sizes.flux_side
        low, high = FLUX_MIN_SIDE, MAX_SIDE  # WIDTH/HEIGHT limits; Fill's sizes stay inside them
        lengths = sizes.text_lengths or (256,)
        ranges |= {"tokens": ((low // 16) ** 2, (side // 16) ** 2, (high // 16) ** 2),
                   "latent_h": (low // 8, side // 8, high // 8), "latent_w": (low // 8, side // 8, high // 8),
                   "text": (min(lengths), lengths[-1] if fill else lengths[0], max(lengths))}
    return ranges


def profiles(graph: Graph, ranges: dict[str, Range]) -> dict[str, Shapes]:
    """{input: (min shape, opt shape, max shape)}: each input's dims at the axes' min, opt and max."""
    return {name: tuple(tuple(evaluate(d, {axis: r[k] for axis, r in ranges.items()}) for d in dims)
                        for k in range(3))
            for name, (_, dims) in graph.inputs.items()}


def network_profiles(repository: Path, network: str, preset: str) -> dict[str, Shapes]:
    graph = Graph.load(Path(repository) / network / "1" / "model.onnx")
    return profiles(graph, axis_ranges(network, PresetSizes.read(preset, repository)))
