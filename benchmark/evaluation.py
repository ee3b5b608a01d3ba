"""Measure a finished run the same way for every method: metrics, complexity, ONNX, latency."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from benchmark.measure.complexity import count_complexity
from benchmark.measure.export import check_parity, export_onnx, run_onnx

if TYPE_CHECKING:
    from benchmark.config import Suite
    from benchmark.training import Harness, RunOutcome

__all__ = ["evaluate_outcome"]

logger = logging.getLogger(__name__)


def evaluate_outcome(
    harness: Harness, outcome: RunOutcome, suite: Suite, onnx_path: Path, dense_row: dict[str, Any] | None
) -> dict[str, Any]:
    """Return the measured part of a result row.

    Accuracy comes from PyTorch unless the method exported its own ONNX file (a quantised
    model, say): then the deployed file is run in ONNX Runtime and that accuracy is reported.
    The test split is read here, once.
    """
    timings: dict[str, float] = {}
    model = outcome.model.eval()
    example = harness.example_input(1)

    started = time.perf_counter()
    complexity = count_complexity(model, example)
    metrics: dict[str, Any] = {
        "val_metric": harness.evaluate(model, "val"),
        "test_metric": harness.final_test_metric(model),
        "test_summary": harness.last_metric.summary(),
        "metric": harness.task.definition.metric,
        "accuracy_source": "pytorch",
        **complexity.as_dict(),
        "layers": [vars(layer) for layer in complexity.layers],
    }
    timings["measure_s"] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    export = _export(harness, outcome, suite, onnx_path, example)
    timings["export_s"] = round(time.perf_counter() - started, 3)
    if export["custom"]:
        metrics["torch_val_metric"] = metrics["val_metric"]
        metrics["torch_test_metric"] = metrics["test_metric"]
        metrics["val_metric"] = _onnx_metric(harness, onnx_path, "val")
        metrics["test_metric"] = _onnx_metric(harness, onnx_path, "test")
        metrics["test_summary"] = harness.last_metric.summary()
        metrics["accuracy_source"] = "onnxruntime"

    result: dict[str, Any] = {"metrics": metrics, "export": export, "timings": timings}
    flags = [] if export.get("parity", {}).get("passed", True) else ["parity_failed"]
    result["flags"] = flags

    started = time.perf_counter()
    result["latency"] = _profile(suite, onnx_path, metrics["macs"], dense_row)
    timings["profile_s"] = round(time.perf_counter() - started, 3)
    result["task_info"] = harness.task.row_fields(result["latency"])
    return result


def _export(harness: Harness, outcome: RunOutcome, suite: Suite, path: Path, example: torch.Tensor) -> dict[str, Any]:
    model = outcome.model
    outcome.context.export_options = {"opset": suite.export.opset, "dynamic_batch": suite.export.dynamic_batch}
    custom = harness.method.export(model, path, outcome.context)
    info: dict[str, Any] = {"custom": bool(custom), "path": str(path), "opset": suite.export.opset}
    if not custom:
        export_onnx(model, example, path, opset=suite.export.opset, dynamic_batch=suite.export.dynamic_batch)
        samples = harness.task.data.test_x[: suite.export.parity_samples]
        parity = check_parity(model, path, samples, suite.export.parity_tolerance)
        info["parity"] = parity.as_dict()
        if not parity.passed:
            logger.warning("ONNX parity check failed for %s: max abs diff %g", path.name, parity.max_abs_diff)
    info["onnx_bytes"] = path.stat().st_size
    return info


def _onnx_metric(harness: Harness, path: Path, split: str) -> float:
    data = harness.task.data
    inputs, targets = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
    if split == "test":
        harness.test_reads += 1
    outputs = torch.from_numpy(run_onnx(path, inputs))
    metric = harness.task.new_metric()
    metric.update(outputs, targets)
    harness.last_metric = metric
    return metric.compute()


def _profile(suite: Suite, path: Path, macs: int, dense_row: dict[str, Any] | None) -> dict[str, Any] | None:
    """Profile on the suite's devices when its [profile] table names any."""
    if not suite.profile.get("devices"):
        return None
    from benchmark.measure.profiling import ProfileSettings, profile_model

    settings = ProfileSettings.from_table(dict(suite.profile), f"{suite.path}: profile")
    reference = None
    reference_macs = None
    if dense_row is not None:
        candidate = Path(dense_row["export"]["path"])
        if candidate.exists() and candidate != path:
            reference, reference_macs = candidate, dense_row["metrics"]["macs"]
    return profile_model(path, settings, reference_onnx=reference, macs=macs, reference_macs=reference_macs)
