"""One optimised version of a model, as a method built it and the report measures it."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


@dataclass
class Variant:
    """A model ready to run on one runtime: an ONNX file (ONNX Runtime, OpenVINO) or a module
    (torch)."""

    method: str  # the registered method that built it
    name: str  # its row in the report, unique there: "int8-static", "openvino-int8"
    runtime: str  # a registered runtime: "torch", "onnxruntime", "openvino"
    precision: str  # "fp32", "int8"
    artifact: Path | None = None  # the ONNX file the runtime loads
    module: nn.Module | None = None  # what the torch runtime calls
    #: The module to log as a PyTorch (pt2) model when ``module`` itself cannot be exported
    #: (a torch.compile'd module); None: log ``module``.
    loggable_module: nn.Module | None = None
    #: Parameters of the network: None counts them from ``module`` or, for a file, takes the
    #: source model's (quantisation stores the same weights in fewer bits).
    params: int | None = None
    nonzero_params: int | None = None
    notes: list[str] = field(default_factory=list)  # what the report says about it
    skipped: str | None = None  # why it was not built; nothing else is measured then
    finetune_run_id: str | None = None  # the training run that fine-tuned it

    @classmethod
    def skip(cls, method: str, runtime: str, reason: str, name: str | None = None) -> Variant:
        return cls(
            method=method, name=name or method, runtime=runtime, precision="-", skipped=reason
        )

    def size_bytes(self) -> int | None:
        """Bytes of the file a deployment ships: the ONNX file, or the module's state dict."""
        if self.artifact is not None:
            return _file_bytes(self.artifact)
        if self.module is not None:
            buffer = io.BytesIO()
            torch.save((self.loggable_module or self.module).state_dict(), buffer)
            return buffer.getbuffer().nbytes
        return None


def _file_bytes(path: Path) -> int:
    """An ONNX model with external data keeps its weights beside it, an OpenVINO IR (.xml) in
    its .bin."""
    size = path.stat().st_size
    for weights in (path.with_name(path.name + ".data"), path.with_suffix(".bin")):
        if weights != path and weights.exists():
            size += weights.stat().st_size
    return size


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters) of ``module``."""
    total = nonzero = 0
    for parameter in module.parameters():
        total += parameter.numel()
        nonzero += int(torch.count_nonzero(parameter.detach()))
    return total, nonzero
