"""ONNX export of result models, inference with ONNX Runtime, and the parity check."""

from __future__ import annotations

import copy
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmark.errors import ExportError

__all__ = ["DEFAULT_OPSET", "ParityResult", "check_parity", "export_onnx", "onnx_session", "run_onnx"]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: Path,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
) -> int:
    """Export ``model`` in eval mode to ``path`` and return the file size in bytes.

    The batch size is fixed at the size of ``example_input`` unless ``dynamic_batch`` is
    set. The file is written next to ``path`` first and renamed, so a failed export never
    leaves a partial file behind.
    """
    if opset < 17:
        raise ExportError(f"opset {opset} is too old; CompressBench exports with opset 17 or newer")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")

    exported = copy.deepcopy(model).cpu().eval()
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            torch.onnx.export(
                exported,
                (example_input.cpu(),),
                str(partial),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic_axes,
            )
    except Exception as error:  # torch.onnx raises many types for unsupported graphs
        partial.unlink(missing_ok=True)
        raise ExportError(f"ONNX export to {path} failed: {type(error).__name__}: {error}") from error

    os.replace(partial, path)
    return path.stat().st_size


def onnx_session(path: Path, threads: int = 1):
    """Open an ONNX Runtime CPU session on ``path`` with explicit thread counts."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise ExportError(f"ONNX Runtime cannot load {path}: {error}") from error


def run_onnx(path_or_session, inputs: np.ndarray | torch.Tensor, batch_size: int | None = None) -> np.ndarray:
    """Run the model on ``inputs`` and return the stacked outputs.

    With a static batch axis, the inputs are fed in chunks of the exported batch size.
    With a dynamic axis, ``batch_size`` sets the chunk size (256 by default).
    """
    session = onnx_session(path_or_session) if isinstance(path_or_session, (str, Path)) else path_or_session
    array = inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
    array = array.astype(np.float32, copy=False)
    declared = session.get_inputs()[0]
    static = declared.shape[0] if isinstance(declared.shape[0], int) else None
    chunk = static or batch_size or 256

    outputs = []
    for start in range(0, len(array), chunk):
        part = array[start : start + chunk]
        padded = len(part)
        if static is not None and len(part) < static:
            part = np.concatenate([part, np.repeat(part[-1:], static - len(part), axis=0)])
        outputs.append(session.run(None, {declared.name: part})[0][:padded])
    return np.concatenate(outputs)


@dataclass
class ParityResult:
    """The largest absolute difference between ONNX Runtime and PyTorch outputs."""

    max_abs_diff: float
    tolerance: float
    samples: int

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance

    def as_dict(self) -> dict[str, object]:
        return {
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "samples": self.samples,
            "passed": self.passed,
        }


@torch.no_grad()
def check_parity(
    model: nn.Module, path: Path, inputs: torch.Tensor, tolerance: float = 1e-4
) -> ParityResult:
    """Compare ONNX Runtime's outputs on ``inputs`` with the PyTorch model's, in eval mode."""
    reference_model = copy.deepcopy(model).cpu().eval()
    expected = reference_model(inputs.cpu()).numpy()
    actual = run_onnx(path, inputs)
    if actual.shape != expected.shape:
        raise ExportError(f"{path}: ONNX output shape {actual.shape} differs from PyTorch's {expected.shape}")
    diff = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    return ParityResult(max_abs_diff=diff, tolerance=tolerance, samples=len(inputs))
