"""One export routine for every network: torch.export -> ONNX -> ONNX Runtime parity check against PyTorch.

Each network is described by a small declarative `ComponentSpec` (names, dynamic axes, dummy and check inputs,
tolerance); `export_component` does the rest. Exports go through `torch.export.export(strict=False)` and then
`torch.onnx.export(ExportedProgram)`: letting torch.onnx call torch.export itself falls back to the slow strict
tracer on diffusers' upsample-size guards (reference/objectclear.md 8.5 #3).

Precision (`python -m export --dtype`): fp32 graphs by default, which is what ONNX Runtime on the CPU serves. In fp16
or bf16 the weights and arithmetic are reduced but the graph's inputs and outputs stay fp32 (InPrecision), so Triton
configs, TensorRT profiles and the pipelines do not change; the parity check still compares with the fp32 model,
computed before the cast (memory-lean for bf16-stored checkpoints: computed_in_fp32), at REDUCED_TOLERANCE.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

OPSET = 18
MAX_BATCH = 32  # rows one exported graph takes; Triton's max_batch_size stays at or under it
Inputs = tuple[torch.Tensor, ...]
Outputs = list[np.ndarray]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# The check's bound for reduced-precision graphs, |ORT - fp32 torch| relative to max(1, max |torch|), used instead of a
# smaller spec.tolerance: the largest error measured over every tiny network and check shape (SAM 3's mask logits:
# fp16 2.8e-3, bf16 1.3e-2), times 3-3.5 (README, "Reduced precision"). bf16 graphs run widened to fp32
# (widened_copy), so their error is the rounding of weights and inputs to bf16, not bf16 arithmetic.
REDUCED_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 4e-2}


def seeded(seed: int) -> torch.Generator:
    """Dummy and check inputs are drawn from fixed seeds, so an export and its parity check are reproducible."""
    return torch.Generator().manual_seed(seed)


class ExportParityError(RuntimeError):
    """ONNX Runtime disagrees with PyTorch past the spec's tolerance."""


@dataclass(frozen=True)
class ComponentSpec:
    name: str  # also the Triton model that serves it
    input_names: list[str]
    output_names: list[str]
    # {input: {axis: torch.export.Dim}} and the human names of every dynamic axis, inputs and outputs
    dynamic_shapes: dict
    axis_names: dict[str, dict[int, str]]
    dummy_inputs: Callable[[], Inputs]  # the export example; batch >= 2 so the batch axis stays symbolic
    check_inputs: Callable[[], list[Inputs]]  # other shapes, checked in ONNX Runtime against PyTorch
    tolerance: float  # max |ORT - torch| allowed, relative to max(1, max |torch|)
    external_data: bool = False  # graphs over 2 GB must keep their weights beside the .onnx
    # active while tracing only (the parity check then runs the unpatched module): e.g. float32 RoPE for TensorRT
    export_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


class NetworkWrapper(nn.Module):
    """Base of the export wrappers: Hugging Face models (the wrapper's *parts*, given to its constructor as keyword
    arguments) re-plumbed to the tensors one Triton network serves. The parts are remembered so the export can save
    them, and the torch runtime (pipelines/torch_network.py) rebuilds the very same wrapper around their weights."""

    def __init__(self, **parts: nn.Module):
        super().__init__()
        self.__dict__["parts"] = parts  # a plain attribute: each subclass registers the submodules it runs


@dataclass
class ExportReport:
    name: str
    path: Path
    seconds: float
    max_error: float  # worst relative error over all check cases and outputs
    cases: list[dict] = field(default_factory=list)
    dtype: str = "fp32"
    bytes: int = 0  # model.onnx and its external data

    def summary(self) -> str:
        return (f"{self.name}: {self.dtype} exported in {self.seconds:.1f} s, {self.bytes / 1e6:.1f} MB, "
                f"ORT vs fp32 torch max error {self.max_error:.2e} over {len(self.cases)} shapes -> {self.path}")


def graph_dtype(spec: ComponentSpec, dtype: torch.dtype) -> torch.dtype:
    """The precision a network is exported in: the requested one, except fp32 for the networks that are served in
    fp32 on GPUs too (export/serving.py: the VAEs overflow in fp16, and are small)."""
    from export.serving import precision

    return torch.float32 if precision(spec.name) == "tf32" else dtype


def export_networks(networks: list[tuple[ComponentSpec, NetworkWrapper]], repository: Path,
                    dtype: torch.dtype = torch.float32, device: str = "cpu") -> list[ExportReport]:
    """Each network into <repository>/<name>/1/: under torch/, the weights of its parts as loaded, for the torch
    runtime, and the ONNX graph, checked against PyTorch. A part shared by several networks (SAM 3's model, a VAE)
    is saved once and hard-linked into the others. Every fp32 reference is computed before any network is cast to
    `dtype`, since shared parts are cast once for all their networks."""
    saved = {}
    for spec, module in networks:
        save_torch_network(spec, module, Path(repository) / spec.name / "1" / "torch", saved)
    expected = {spec.name: fp32_outputs(spec, module, device) for spec, module in networks}
    reports = []
    for spec, module in networks:
        reports.append(export_component(spec, module, Path(repository) / spec.name / "1" / "model.onnx",
                                        dtype=graph_dtype(spec, dtype), device=device, expected=expected[spec.name]))
        print(reports[-1].summary(), flush=True)
    return reports


def export_component(spec: ComponentSpec, module: nn.Module, path: Path, threads: int = 2,
                     dtype: torch.dtype = torch.float32, device: str = "cpu",
                     expected: list[Outputs] | None = None) -> ExportReport:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + ".data")):
        stale.unlink(missing_ok=True)
    module = module.eval().to(device)
    if expected is None:
        expected = fp32_outputs(spec, module, device)
    module = reduce_precision(module, dtype)  # to fp32 too: a VAE of a bf16-stored FLUX checkpoint is exported in fp32
    traced = module if dtype == torch.float32 else InPrecision(module, dtype)
    dummy = tuple(t.to(device) for t in spec.dummy_inputs())
    start = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings(), spec.export_context():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        dynamic = spec.dynamic_shapes if traced is module else (  # InPrecision takes them all as *inputs
            tuple(spec.dynamic_shapes.get(name) for name in spec.input_names),)
        program = torch.export.export(traced, dummy, dynamic_shapes=dynamic, strict=False)
        torch.onnx.export(program, dummy, str(path), dynamo=True, input_names=spec.input_names,
                          output_names=spec.output_names, opset_version=OPSET, external_data=spec.external_data,
                          optimize=True, verbose=False)
    name_dynamic_axes(path, spec.axis_names)
    if dtype != torch.float32:
        cast_mixed_float_inputs(path)
    written = sum(p.stat().st_size for p in (path, path.with_name(path.name + ".data")) if p.exists())
    report = ExportReport(spec.name, path, time.perf_counter() - start, 0.0, dtype=DTYPE_NAMES[dtype], bytes=written)
    tolerance = spec.tolerance if dtype == torch.float32 else max(spec.tolerance, REDUCED_TOLERANCE[dtype])
    check_parity(spec, path, expected, report, threads, tolerance)
    return report


DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


# --------------------------------------------------------------------------------------------------------------------
# Reduced precision
# --------------------------------------------------------------------------------------------------------------------
class InPrecision(nn.Module):
    """A network computing in `dtype` behind an fp32 interface: floating inputs are cast in and outputs cast back,
    so a reduced-precision graph has the inputs and outputs of the fp32 one (casts at the edges, nothing else)."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, *inputs):
        outputs = self.module(*(t.to(self.dtype) if t.is_floating_point() else t for t in inputs))
        return tuple(t.float() for t in outputs) if isinstance(outputs, tuple) else outputs.float()


def reduce_precision(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """`module` cast to `dtype` in place, except the submodules its Hugging Face models keep in fp32 themselves
    (`_keep_in_fp32_modules`, e.g. T5's `wo` projections, which overflow in fp16). A no-op on an fp32 module."""
    module.to(dtype)
    for owner in module.modules():
        keep = getattr(owner, "_keep_in_fp32_modules", None) or ()
        for name, sub in owner.named_modules():
            if any(part in keep for part in name.split(".")):
                sub.float()
    return module


def upcast_units(module: nn.Module) -> list[nn.Module]:
    """The largest submodules that hold no list of blocks: a transformer's blocks, embedders and heads."""
    if any(isinstance(m, nn.ModuleList) for m in module.modules()):
        return [unit for child in module.children() for unit in upcast_units(child)]
    return [module] if any(True for _ in module.parameters()) else []


@contextlib.contextmanager
def computed_in_fp32(module: nn.Module):
    """Run a module stored in a reduced dtype (FLUX's checkpoints are bf16) as its fp32 original, one block at a time:
    each block is upcast on entry and computes in fp32 on fp32 activations; on exit its parameters and buffers get
    their stored tensors back (not a re-cast: weights memory-mapped from the checkpoint stay so). The fp32 reference
    then costs one block of fp32 memory, not the whole model's."""
    if all(t.dtype == torch.float32 for t in module.parameters() if t.is_floating_point()):
        yield
        return
    stored = {}

    def upcast(unit, args, kwargs):
        stored[unit] = ([(p, p.data) for p in unit.parameters()],
                        [(m, name, b) for m in unit.modules() for name, b in m._buffers.items() if b is not None])
        unit.float()
        cast = lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
        return tuple(map(cast, args)), {k: cast(v) for k, v in kwargs.items()}

    def restore(unit, args, output):
        parameters, buffers = stored.pop(unit)
        for parameter, data in parameters:
            parameter.data = data
        for owner, name, buffer in buffers:
            owner._buffers[name] = buffer

    hooks = [hook for unit in upcast_units(module) for hook in (
        unit.register_forward_pre_hook(upcast, with_kwargs=True), unit.register_forward_hook(restore))]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def fp32_outputs(spec: ComponentSpec, module: nn.Module, device: str = "cpu") -> list[Outputs]:
    """The fp32 PyTorch outputs for each of the spec's check inputs (on the host)."""
    module = module.eval().to(device)
    results = []
    with torch.no_grad(), computed_in_fp32(module):
        for inputs in spec.check_inputs():
            outputs = module(*(t.to(device) for t in inputs))
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            results.append([t.float().cpu().numpy() for t in outputs])
    return results


def save_torch_network(spec: ComponentSpec, module: NetworkWrapper, folder: Path, saved: dict[int, Path],
                       weights: bool = True) -> None:
    """<folder>/network.json (the wrapper, its parts' classes, the tensor names) and each part's save_pretrained
    folder. weights=False: the parts' configs alone, for the torch runtime's random weights (benchmarks)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, part in module.parts.items():
        if id(part) in saved:
            shutil.copytree(saved[id(part)], folder / name, copy_function=_link_or_copy)
            continue
        if weights:
            part.save_pretrained(folder / name)
        elif hasattr(part, "save_config"):  # diffusers
            part.save_config(folder / name)
        else:  # transformers' config, or PostfuseModule's plain dict
            config = part.config
            (folder / name).mkdir()
            if isinstance(config, dict):
                (folder / name / "config.json").write_text(json.dumps(config))
            else:
                config.save_pretrained(folder / name)
        saved[id(part)] = folder / name
    qualified = lambda cls: f"{cls.__module__}:{cls.__qualname__}"  # noqa: E731
    (folder / "network.json").write_text(json.dumps(
        {"wrapper": qualified(type(module)), "parts": {name: qualified(type(p)) for name, p in module.parts.items()},
         "inputs": {name: value.ndim for name, value in zip(spec.input_names, spec.dummy_inputs())},
         "outputs": spec.output_names}, indent=2))


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem
        shutil.copy2(source, target)


# --------------------------------------------------------------------------------------------------------------------
# The check in ONNX Runtime
# --------------------------------------------------------------------------------------------------------------------
def check_parity(spec: ComponentSpec, path: Path, expected: list[Outputs], report: ExportReport, threads: int,
                 tolerance: float) -> None:
    """ONNX Runtime (CPU) on the spec's check inputs against the fp32 PyTorch outputs. Prepacking is off, so the
    weights stay in the memory-mapped external data file instead of being copied: the check of a 24 GB graph needs
    page cache, not 24 GB of process memory."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.disable_prepacking", "1")
    with widened_copy(path) as runnable:
        session = ort.InferenceSession(str(runnable), options, providers=["CPUExecutionProvider"])
        for inputs, want_all in zip(spec.check_inputs(), expected):
            got = session.run(spec.output_names, {n: t.numpy() for n, t in zip(spec.input_names, inputs)})
            case = {"shapes": [list(t.shape) for t in inputs]}
            for name, want, have in zip(spec.output_names, want_all, got):
                if want.shape != have.shape:
                    raise ExportParityError(f"{spec.name}.{name}: ORT shape {have.shape} != torch {want.shape} "
                                            f"for inputs {case['shapes']}")
                error = float(np.abs(have.astype(np.float64) - want).max() / max(1.0, float(np.abs(want).max())))
                case[name] = error
                report.max_error = max(report.max_error, error)
                if not error <= tolerance:  # also catches NaN
                    raise ExportParityError(f"{spec.name}.{name}: ORT differs from torch by {error:.3e} (relative), "
                                            f"tolerance {tolerance:.1e}, inputs {case['shapes']}")
            report.cases.append(case)
        del session


BF16, FP32 = onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT
ALIGN = 4096  # external tensors start on a page, so ONNX Runtime can memory-map them


@contextlib.contextmanager
def widened_copy(path: Path):
    """`path` itself, or for a graph with bf16 tensors (ONNX Runtime's CPU provider has no bf16 kernels) a copy beside
    it with every bf16 tensor, cast and type widened to fp32: exact for the weights (a bf16 value is the top half of
    an fp32 one), so the check sees the exported weights and graph, computed in fp32. Large weights are converted one
    at a time from the memory-mapped data file into a new one; fp32 weights are shared with the original."""
    model = onnx.load(str(path), load_external_data=False)
    if not _uses_bf16(model.graph):
        yield path
        return
    target = path.with_name(path.stem + ".widened.onnx")
    data = target.with_name(target.name + ".data")
    try:
        with open(data, "wb") as out:
            for tensor in model.graph.initializer:
                if tensor.data_type == BF16 and tensor.data_location == onnx.TensorProto.EXTERNAL:
                    info = {e.key: e.value for e in tensor.external_data}
                    raw = np.memmap(path.parent / info["location"], dtype=np.uint16, mode="r",
                                    offset=int(info.get("offset", 0)), shape=(int(info["length"]) // 2,))
                    out.write(b"\0" * (-out.tell() % ALIGN))
                    offset = out.tell()
                    out.write((raw.astype(np.uint32) << 16).tobytes())
                    tensor.data_type = FP32
                    del tensor.external_data[:]
                    for key, value in (("location", data.name), ("offset", offset), ("length", out.tell() - offset)):
                        tensor.external_data.add(key=key, value=str(value))
        _widen_graph(model.graph)
        onnx.save(model, str(target))
        yield target
    finally:
        target.unlink(missing_ok=True)
        data.unlink(missing_ok=True)


def _uses_bf16(graph: onnx.GraphProto) -> bool:
    values = [*graph.input, *graph.output, *graph.value_info]
    return (any(t.data_type == BF16 for t in graph.initializer)
            or any(v.type.tensor_type.elem_type == BF16 for v in values)
            or any(a.name == "to" and a.i == BF16 for node in graph.node for a in node.attribute))


def _widen_tensor(tensor: onnx.TensorProto) -> None:
    if tensor.data_type == BF16 and tensor.data_location != onnx.TensorProto.EXTERNAL:
        tensor.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor).astype(np.float32),
                                                     tensor.name))


def _widen_graph(graph: onnx.GraphProto) -> None:
    for tensor in graph.initializer:
        _widen_tensor(tensor)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == BF16:
            value.type.tensor_type.elem_type = FP32
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                _widen_tensor(attribute.t)
            elif attribute.type == onnx.AttributeProto.GRAPH:
                _widen_graph(attribute.g)
            elif attribute.name in ("to", "dtype") and attribute.i == BF16:
                attribute.i = FP32


FLOAT_RANK = {onnx.TensorProto.FLOAT16: 0, onnx.TensorProto.BFLOAT16: 0, onnx.TensorProto.FLOAT: 1,
              onnx.TensorProto.DOUBLE: 2}


def cast_mixed_float_inputs(path: Path) -> None:
    """PyTorch promotes mixed float operands (torch.cat of an fp16 and an fp32 tensor gives fp32; diffusers' SDXL
    added-time embedding does that in fp16), the ONNX exporter does not: ONNX Runtime rejects the node. Cast the
    narrower operands to the widest, in front of each such node."""
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    types |= {t.name: t.data_type for t in graph.initializer}
    nodes = []
    for node in graph.node:
        floats = {types[i] for i in node.input if types.get(i) in FLOAT_RANK}
        if len(floats) > 1:
            widest = max(floats, key=FLOAT_RANK.get)
            for index, name in enumerate(node.input):
                if types.get(name) in FLOAT_RANK and types[name] != widest:
                    cast = f"{name}_as_{onnx.TensorProto.DataType.Name(widest).lower()}_for_{node.name}"
                    nodes.append(onnx.helper.make_node("Cast", [name], [cast], to=widest, name=f"{cast}_cast"))
                    node.input[index] = cast
        nodes.append(node)
    if len(nodes) > len(graph.node):
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.save(model, str(path))


def name_dynamic_axes(path: Path, axis_names: dict[str, dict[int, str]]) -> None:
    """An ExportedProgram loses the Dim names (axes come out as s23, s30, ...): map each symbol found at a named
    input axis back to its name everywhere in the graph, so Triton configs and TensorRT profiles can refer to it.
    Weights in external data are untouched."""
    model = onnx.load(str(path), load_external_data=False)
    mapping = {}
    for value in model.graph.input:
        for axis, name in axis_names.get(value.name, {}).items():
            symbols = re.findall(r"\bs\d+\b", value.type.tensor_type.shape.dim[axis].dim_param)
            if len(symbols) == 1:
                mapping.setdefault(symbols[0], name)
    if not mapping:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, mapping)) + r")\b")
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: mapping[m.group(1)], dim.dim_param)
    onnx.save(model, str(path))
