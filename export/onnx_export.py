"""One export routine for every network: torch.export -> ONNX -> ONNX Runtime parity check against PyTorch.

Each network is described by a small declarative `ComponentSpec` (names, dynamic axes, dummy and check inputs,
tolerance); `export_component` does the rest. Exports go through `torch.export.export(strict=False)` and then
`torch.onnx.export(ExportedProgram)`: letting torch.onnx call torch.export itself falls back to the slow strict
tracer on diffusers' upsample-size guards (reference/objectclear.md 8.5 #3).
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

    def summary(self) -> str:
        return (f"{self.name}: exported in {self.seconds:.1f} s, ORT vs torch max error {self.max_error:.2e} "
                f"over {len(self.cases)} shapes -> {self.path}")


def export_component(spec: ComponentSpec, module: nn.Module, path: Path, threads: int = 2) -> ExportReport:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + ".data")):
        stale.unlink(missing_ok=True)
    module = module.eval()
    start = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings(), spec.export_context():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.export.export(module, spec.dummy_inputs(), dynamic_shapes=spec.dynamic_shapes, strict=False)
        torch.onnx.export(program, spec.dummy_inputs(), str(path), dynamo=True, input_names=spec.input_names,
                          output_names=spec.output_names, opset_version=OPSET, external_data=spec.external_data,
                          optimize=True, verbose=False)
    name_dynamic_axes(path, spec.axis_names)
    report = ExportReport(spec.name, path, time.perf_counter() - start, 0.0)
    check_parity(spec, module, path, report, threads)
    return report


def export_networks(networks: list[tuple[ComponentSpec, NetworkWrapper]], repository: Path) -> list[ExportReport]:
    """Each network into <repository>/<name>/1/: the ONNX graph (checked against PyTorch) and, under torch/, the
    weights of its parts for the torch runtime. A part shared by several networks (SAM 3's model, a VAE) is saved
    once and hard-linked into the others."""
    reports, saved = [], {}
    for spec, module in networks:
        folder = Path(repository) / spec.name / "1"
        reports.append(export_component(spec, module, folder / "model.onnx"))
        save_torch_network(spec, module, folder / "torch", saved)
        print(reports[-1].summary(), flush=True)
    return reports


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


def check_parity(spec: ComponentSpec, module: nn.Module, path: Path, report: ExportReport, threads: int) -> None:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for inputs in spec.check_inputs():
        with torch.no_grad():
            expected = module(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(spec.output_names, {n: t.numpy() for n, t in zip(spec.input_names, inputs)})
        case = {"shapes": [list(t.shape) for t in inputs]}
        for name, want, have in zip(spec.output_names, expected, got):
            want = want.numpy()
            if want.shape != have.shape:
                raise ExportParityError(f"{spec.name}.{name}: ORT shape {have.shape} != torch {want.shape} "
                                        f"for inputs {case['shapes']}")
            error = float(np.abs(have.astype(np.float64) - want).max() / max(1.0, float(np.abs(want).max())))
            case[name] = error
            report.max_error = max(report.max_error, error)
            if not error <= spec.tolerance:  # also catches NaN
                raise ExportParityError(f"{spec.name}.{name}: ORT differs from torch by {error:.3e} (relative), "
                                        f"tolerance {spec.tolerance:.1e}, inputs {case['shapes']}")
        report.cases.append(case)


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
