#!/usr/bin/env python3
"""Self-contained ONNX Runtime profiler that CompressBench copies to a device and runs there.

It needs only the standard library, numpy and onnxruntime, so it runs on a bare board or in an
emulated sysroot. It never imports CompressBench. Run it as::

    python3 profiler.py --config CONFIG.json
    python3 profiler.py --model model.onnx --reference dense.onnx --floor-model floor.onnx

It prints one JSON document on stdout. Errors go to stderr with exit status 2 (bad
configuration or input files) or 3 (onnxruntime or numpy cannot be imported).

Protocol, modelled on onnxruntime_perf_test and MLPerf single-stream:

- warm-up of at least ``warmup_runs`` runs and at least ``warmup_seconds``;
- a timed part of at least ``min_queries`` queries and at least ``min_seconds``;
- p50, p90, p99, mean, standard deviation (ddof=1) and coefficient of variation, in µs;
- each thread count in ``threads`` gets fresh sessions with explicit intra-op and inter-op
  thread counts and the requested graph optimisation level;
- with a ``reference`` model, both models are loaded in one process and their queries are
  interleaved in pairs whose order alternates (AB, BA, AB, ...). The speed-up is the median of
  the per-pair ratios reference/model, reported with its p10, p25, p75 and p90;
- with a ``floor_model`` (a trivial graph), its latency under the same protocol is the per-call
  floor of the device;
- a per-operator profile from ONNX Runtime's profiling JSON, reduced to the top operators.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time

SCHEMA_VERSION = 1

EXIT_CONFIG_ERROR = 2
EXIT_MISSING_PACKAGE = 3

DEFAULTS = {
    "model": None,
    "reference": None,
    "floor_model": None,
    "threads": [1, 2, 4],
    "inter_op_threads": 1,
    "graph_optimization": "all",
    "provider": "CPUExecutionProvider",
    "warmup_runs": 10,
    "warmup_seconds": 0.5,
    "min_queries": 100,
    "min_seconds": 2.0,
    "top_operators": 10,
    "profile_runs": 20,
    "batch_size": 1,
    "batch_check": [],
    "parity": None,
    "seed": 0,
    "labels": {},
}

GRAPH_OPTIMIZATION_NAMES = ("disable", "basic", "extended", "all")

# MIDR part numbers of Arm Ltd cores (implementer 0x41), as printed in /proc/cpuinfo.
ARM_PARTS = {
    "0xd03": "cortex-a53",
    "0xd04": "cortex-a35",
    "0xd05": "cortex-a55",
    "0xd07": "cortex-a57",
    "0xd08": "cortex-a72",
    "0xd09": "cortex-a73",
    "0xd0a": "cortex-a75",
    "0xd0b": "cortex-a76",
    "0xd0c": "neoverse-n1",
    "0xd0d": "cortex-a77",
    "0xd41": "cortex-a78",
}


class ProfilerError(Exception):
    """Invalid configuration or input files; the message says which value and what to do."""


# ---------------------------------------------------------------- configuration


def load_config(argv: list[str] | None = None) -> dict:
    """Merge the defaults, the ``--config`` JSON file and explicit options, then validate."""
    args = _parse_args(argv)
    config = dict(DEFAULTS)
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as handle:
                from_file = json.load(handle)
        except (OSError, ValueError) as err:
            raise ProfilerError(f"cannot read config file {args.config!r}: {err}") from err
        unknown = sorted(set(from_file) - set(DEFAULTS))
        if unknown:
            raise ProfilerError(f"unknown config keys {unknown}; expected keys from {sorted(DEFAULTS)}")
        config.update(from_file)
    for key, value in vars(args).items():
        if key != "config" and value is not None:
            config[key] = value
    _validate(config)
    return config


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Profile ONNX models with ONNX Runtime; prints JSON.")
    parser.add_argument("--config", help="JSON file with any of the keys below")
    parser.add_argument("--model", help="ONNX model to profile")
    parser.add_argument("--reference", help="ONNX model to pair against (for example the dense one)")
    parser.add_argument("--floor-model", dest="floor_model", help="trivial ONNX model for the per-call floor")
    parser.add_argument("--threads", type=_int_list, help="comma-separated intra-op thread counts, e.g. 1,2,4")
    parser.add_argument("--inter-op-threads", dest="inter_op_threads", type=int)
    parser.add_argument("--graph-optimization", dest="graph_optimization", choices=GRAPH_OPTIMIZATION_NAMES)
    parser.add_argument("--warmup-runs", dest="warmup_runs", type=int)
    parser.add_argument("--warmup-seconds", dest="warmup_seconds", type=float)
    parser.add_argument("--min-queries", dest="min_queries", type=int)
    parser.add_argument("--min-seconds", dest="min_seconds", type=float)
    parser.add_argument("--top-operators", dest="top_operators", type=int, help="0 disables the operator profile")
    parser.add_argument("--profile-runs", dest="profile_runs", type=int)
    parser.add_argument("--batch-size", dest="batch_size", type=int, help="value for symbolic input dimensions")
    return parser.parse_args(argv)


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def _validate(config: dict) -> None:
    if not config["model"]:
        raise ProfilerError("no model given; pass --model PATH or set 'model' in the config file")
    for key in ("model", "reference", "floor_model"):
        path = config[key]
        if path is not None and not os.path.isfile(path):
            raise ProfilerError(f"{key} file {path!r} not found")
    threads = config["threads"]
    if not threads or any(not isinstance(t, int) or t < 1 for t in threads):
        raise ProfilerError(f"threads must be a non-empty list of positive integers, got {threads!r}")
    if config["graph_optimization"] not in GRAPH_OPTIMIZATION_NAMES:
        raise ProfilerError(
            f"graph_optimization {config['graph_optimization']!r} is invalid; expected one of "
            f"{list(GRAPH_OPTIMIZATION_NAMES)}"
        )
    for key in ("warmup_runs", "min_queries", "profile_runs", "batch_size", "inter_op_threads"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise ProfilerError(f"{key} must be a positive integer, got {config[key]!r}")
    for key in ("warmup_seconds", "min_seconds"):
        if not isinstance(config[key], (int, float)) or config[key] < 0:
            raise ProfilerError(f"{key} must be a number of seconds >= 0, got {config[key]!r}")
    if not isinstance(config["top_operators"], int) or config["top_operators"] < 0:
        raise ProfilerError(f"top_operators must be an integer >= 0, got {config['top_operators']!r}")


# ---------------------------------------------------------------- sessions and inputs


def make_session(path: str, config: dict, threads: int, profile_prefix: str | None = None):
    """Create an InferenceSession with explicit thread counts and optimisation level."""
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = config["inter_op_threads"]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[config["graph_optimization"]]
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, sess_options=options, providers=[config["provider"]])


_NUMPY_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def random_feed(session, batch_size: int, seed: int) -> dict:
    """Build random inputs for every model input; symbolic dimensions become ``batch_size``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feed = {}
    for meta in session.get_inputs():
        if meta.type not in _NUMPY_TYPES:
            raise ProfilerError(f"input {meta.name!r} has unsupported type {meta.type}; expected a numeric tensor")
        shape = [dim if isinstance(dim, int) and dim > 0 else batch_size for dim in meta.shape]
        dtype = np.dtype(_NUMPY_TYPES[meta.type])
        if dtype.kind == "f":
            feed[meta.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feed[meta.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            feed[meta.name] = rng.integers(0, 8, shape).astype(dtype)
    return feed


# ---------------------------------------------------------------- timing


def _timed_run(session, feed: dict) -> int:
    start = time.perf_counter_ns()
    session.run(None, feed)
    return time.perf_counter_ns() - start


def warm_up(runners: list, config: dict) -> int:
    """Run every (session, feed) pair until both warm-up minimums are met; return the rounds."""
    deadline = time.perf_counter() + config["warmup_seconds"]
    rounds = 0
    while rounds < config["warmup_runs"] or time.perf_counter() < deadline:
        for session, feed in runners:
            session.run(None, feed)
        rounds += 1
    return rounds


def time_single(session, feed: dict, config: dict) -> list[int]:
    """Time queries until at least ``min_queries`` ran and ``min_seconds`` passed; return ns."""
    samples = []
    start = time.perf_counter()
    while len(samples) < config["min_queries"] or time.perf_counter() - start < config["min_seconds"]:
        samples.append(_timed_run(session, feed))
    return samples


def time_paired(model: tuple, reference: tuple, config: dict) -> tuple[list[int], list[int]]:
    """Interleave model and reference queries in pairs of alternating order; return both ns lists.

    Pair ``i`` runs the model first when ``i`` is even and the reference first otherwise, so a
    cache or frequency effect that favours the first (or second) call of a pair cancels out.
    """
    model_ns, reference_ns = [], []
    start = time.perf_counter()
    while len(model_ns) < config["min_queries"] or time.perf_counter() - start < config["min_seconds"]:
        if len(model_ns) % 2 == 0:
            model_ns.append(_timed_run(*model))
            reference_ns.append(_timed_run(*reference))
        else:
            reference_ns.append(_timed_run(*reference))
            model_ns.append(_timed_run(*model))
    return model_ns, reference_ns


def latency_stats(samples_ns: list[int]) -> dict:
    """Summarise latencies in microseconds: p50, p90, p99, mean, std (ddof=1), CV, min, max."""
    import numpy as np

    values = np.asarray(samples_ns, dtype=np.float64) / 1000.0
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return {
        "count": int(values.size),
        "total_s": float(values.sum() / 1e6),
        "p50_us": float(np.percentile(values, 50)),
        "p90_us": float(np.percentile(values, 90)),
        "p99_us": float(np.percentile(values, 99)),
        "mean_us": mean,
        "std_us": std,
        "cv": std / mean if mean > 0 else 0.0,
        "min_us": float(values.min()),
        "max_us": float(values.max()),
    }


def ratio_stats(model_ns: list[int], reference_ns: list[int]) -> dict:
    """Summarise the per-pair speed-ups reference/model: median with p10, p25, p75, p90 and IQR."""
    import numpy as np

    ratios = np.asarray(reference_ns, dtype=np.float64) / np.asarray(model_ns, dtype=np.float64)
    p10, p25, median, p75, p90 = (float(v) for v in np.percentile(ratios, [10, 25, 50, 75, 90]))
    return {
        "pairs": int(ratios.size),
        "median": median,
        "p10": p10,
        "p25": p25,
        "p75": p75,
        "p90": p90,
        "iqr": p75 - p25,
    }
