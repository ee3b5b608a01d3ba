"""The ``compressbench device`` commands: ``device setup NAME`` and ``device check NAME``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmark.errors import CompressBenchError
from benchmark.measure.devices import setup
from benchmark.measure.profiling import ProfileSettings, profile_model

__all__ = ["add_commands", "build_check_model"]

logger = logging.getLogger(__name__)

CHECK_INPUT_FEATURES = 64
CHECK_HIDDEN = 32
CHECK_CLASSES = 10


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``device setup`` and ``device check`` to the console script's subparsers.

    Each leaf command sets ``func`` to a handler that takes the parsed arguments and returns an
    exit code: 0 on success, 1 when the device is unusable (the reason goes to stderr).
    """
    device = subparsers.add_parser("device", help="prepare and check profiling devices")
    commands = device.add_subparsers(dest="device_command", metavar="{setup,check}", required=True)

    setup_parser = commands.add_parser(
        "setup",
        help="prepare a device; for qemu-aarch64, build the arm64 sysroot",
        description="Prepare a device. For qemu-aarch64 this downloads Debian arm64 packages "
        "and the aarch64 numpy and onnxruntime wheels and builds a sysroot (about 180 MB); a "
        "cached sysroot is reused. Other devices are only checked.",
    )
    setup_parser.add_argument(
        "name", help="device spec: local, qemu-aarch64 or ssh://user@host[:port]"
    )
    setup_parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="sysroot cache folder for qemu-aarch64 (default: $COMPRESSBENCH_QEMU_CACHE or "
        "~/.cache/compressbench/qemu-aarch64)",
    )
    setup_parser.set_defaults(func=run_setup)

    check_parser = commands.add_parser(
        "check",
        help="profile a tiny model on a device and print a JSON summary",
        description="Run the profiler on a tiny two-layer model with a short protocol, check its "
        "outputs against numpy, and print a JSON summary.",
    )
    check_parser.add_argument(
        "name", help="device spec: local, qemu-aarch64 or ssh://user@host[:port]"
    )
    check_parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    check_parser.add_argument(
        "--queries", type=int, default=20, help="minimum timed queries (default 20)"
    )
    check_parser.set_defaults(func=run_check)


def run_setup(args: argparse.Namespace) -> int:
    """Handle ``device setup``: print the device summary as JSON."""
    try:
        summary = setup(args.name, args.cache_dir)
    except CompressBenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Handle ``device check``: profile the tiny model and print a short JSON summary."""
    settings = ProfileSettings(
        devices=(args.name,),
        threads=(args.threads,),
        warmup_runs=10,
        warmup_seconds=0.1,
        min_queries=args.queries,
        min_seconds=0.2,
        top_operators=3,
        emulated_queries=min(args.queries, 5),
    )
    try:
        with tempfile.TemporaryDirectory(prefix="compressbench-check-") as workdir:
            model, inputs, expected = build_check_model(Path(workdir) / "check.onnx")
            results = profile_model(
                model, settings, workdir=Path(workdir), parity=(inputs, expected)
            )
    except CompressBenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    summary = {name: _short_summary(result) for name, result in results.items()}
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0 if all(s["status"] == "ok" and s["parity_passed"] for s in summary.values()) else 1


def _short_summary(result: dict) -> dict:
    if result["status"] != "ok":
        return {"status": result["status"], "error": result["error"], "parity_passed": False}
    threads, measured = next(iter(result["threads"].items()))
    return {
        "status": "ok",
        "timing": result["timing"],
        "onnxruntime": result["environment"]["onnxruntime"],
        "machine": result["environment"]["machine"],
        "cpu": result["environment"]["cpu"],
        "threads": int(threads),
        "p50_us": measured["p50_us"],
        "floor_us": measured["floor_us"],
        "queries": measured["latency"]["count"],
        "parity_max_abs_diff": result["parity"]["max_abs_diff"],
        "parity_passed": result["parity"]["passed"],
    }


def build_check_model(path: Path, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """Write a MatMul-Relu-MatMul model and return it with 4 inputs and numpy's outputs for them."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((CHECK_INPUT_FEATURES, CHECK_HIDDEN)).astype(np.float32)
    w2 = rng.standard_normal((CHECK_HIDDEN, CHECK_CLASSES)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w1"], ["hidden"]),
            helper.make_node("Relu", ["hidden"], ["activation"]),
            helper.make_node("MatMul", ["activation", "w2"], ["output"]),
        ],
        "compressbench_check",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, CHECK_INPUT_FEATURES])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, CHECK_CLASSES])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))

    inputs = rng.standard_normal((4, CHECK_INPUT_FEATURES)).astype(np.float32)
    expected = (np.maximum(inputs @ w1, 0.0) @ w2).astype(np.float32)
    return path, inputs, expected
