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
import statistics
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
    """Invalid configuration or input files; the message names the value and the fix."""


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
            raise ProfilerError(
                f"unknown config keys {unknown}; expected keys from {sorted(DEFAULTS)}"
            )
        config.update(from_file)
    parity_files = {"inputs": args.parity_inputs, "expected": args.parity_expected}
    for key, value in vars(args).items():
        if key in DEFAULTS and value is not None:
            config[key] = value
    if args.parity_inputs is not None:
        config["parity"] = {**parity_files, "atol": args.parity_atol}
    _validate(config)
    return config


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Profile ONNX models with ONNX Runtime; prints JSON."
    )
    parser.add_argument("--config", help="JSON file with any of the keys below")
    parser.add_argument("--model", help="ONNX model to profile")
    parser.add_argument(
        "--reference", help="ONNX model to pair against (for example the dense one)"
    )
    parser.add_argument(
        "--floor-model", dest="floor_model", help="trivial ONNX model for the per-call floor"
    )
    parser.add_argument(
        "--threads", type=_int_list, help="comma-separated intra-op thread counts, e.g. 1,2,4"
    )
    parser.add_argument("--inter-op-threads", dest="inter_op_threads", type=int)

    parser.add_argument(
        "--graph-optimization", dest="graph_optimization", choices=GRAPH_OPTIMIZATION_NAMES
    )
    parser.add_argument("--warmup-runs", dest="warmup_runs", type=int)
    parser.add_argument("--warmup-seconds", dest="warmup_seconds", type=float)
    parser.add_argument("--min-queries", dest="min_queries", type=int)
    parser.add_argument("--min-seconds", dest="min_seconds", type=float)
    parser.add_argument(
        "--top-operators", dest="top_operators", type=int, help="0 disables the operator profile"
    )

    parser.add_argument("--profile-runs", dest="profile_runs", type=int)
    parser.add_argument(
        "--batch-size", dest="batch_size", type=int, help="value for symbolic input dimensions"
    )

    parser.add_argument("--parity-inputs", help=".npy or .npz file of inputs for the parity check")
    parser.add_argument("--parity-expected", help=".npy or .npz file of expected outputs")
    parser.add_argument(
        "--parity-atol", type=float, default=1e-4, help="max abs difference that passes (1e-4)"
    )

    args = parser.parse_args(argv)
    if (args.parity_inputs is None) != (args.parity_expected is None):
        parser.error("--parity-inputs and --parity-expected go together")
    return args


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{text!r} is invalid; expected comma-separated integers such as 1,2,4"
        ) from err


def _invalid(key: str, value, expected: str) -> ProfilerError:
    return ProfilerError(f"{key} = {value!r} is invalid; expected {expected}")


def _is_count(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _validate(config: dict) -> None:
    """Check every config value; raise ProfilerError naming the key, the value and the fix."""
    if not config["model"]:
        raise ProfilerError("no model given; pass --model PATH or set 'model' in the config file")
    for key in ("model", "reference", "floor_model"):
        path = config[key]
        if path is not None and not os.path.isfile(path):
            raise ProfilerError(f"{key} file {path!r} not found")

    for key in ("threads", "batch_check"):
        values = config[key]
        if not isinstance(values, list) or not all(_is_count(v, 1) for v in values):
            raise _invalid(key, values, "a list of positive integers")
    if not config["threads"]:
        raise _invalid("threads", [], "at least one thread count")
    for key in ("warmup_runs", "min_queries", "profile_runs", "batch_size", "inter_op_threads"):
        if not _is_count(config[key], 1):
            raise _invalid(key, config[key], "a positive integer")
    if not _is_count(config["top_operators"], 0):
        raise _invalid("top_operators", config["top_operators"], "an integer >= 0")
    for key in ("warmup_seconds", "min_seconds"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise _invalid(key, value, "a number of seconds >= 0")
    if config["graph_optimization"] not in GRAPH_OPTIMIZATION_NAMES:
        expected = f"one of {list(GRAPH_OPTIMIZATION_NAMES)}"
        raise _invalid("graph_optimization", config["graph_optimization"], expected)

    parity = config["parity"]
    if parity is not None:
        files = (
            [parity.get(name) for name in ("inputs", "expected")]
            if isinstance(parity, dict)
            else []
        )
        if len(files) != 2 or not all(isinstance(path, str) for path in files):
            raise _invalid("parity", parity, "an object with 'inputs' and 'expected' file paths")


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


def random_feed(session, batch_size: int, seed: int, force_batch: bool = False) -> dict:
    """Build random inputs for every model input; symbolic dimensions become ``batch_size``.

    With ``force_batch`` the first dimension is ``batch_size`` even where the model fixes it,
    which is how a batch-size check finds a model whose batch axis is not dynamic.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    feed = {}
    for meta in session.get_inputs():
        if meta.type not in _NUMPY_TYPES:
            raise ProfilerError(
                f"input {meta.name!r} has unsupported type {meta.type}; expected a numeric tensor"
            )
        shape = [dim if isinstance(dim, int) and dim > 0 else batch_size for dim in meta.shape]
        if force_batch and shape:
            shape[0] = batch_size
        dtype = np.dtype(_NUMPY_TYPES[meta.type])
        if dtype.kind == "f":
            feed[meta.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feed[meta.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            feed[meta.name] = rng.integers(0, 8, shape).astype(dtype)
    return feed


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
    while (
        len(samples) < config["min_queries"] or time.perf_counter() - start < config["min_seconds"]
    ):
        samples.append(_timed_run(session, feed))
    return samples


def time_paired(model: tuple, reference: tuple, config: dict) -> tuple[list[int], list[int]]:
    """Interleave model and reference queries in pairs of alternating order; return both ns lists.

    Pair ``i`` runs the model first when ``i`` is even and the reference first otherwise, so a
    cache or frequency effect that favours the first (or second) call of a pair cancels out.
    """
    model_ns, reference_ns = [], []
    start = time.perf_counter()
    while (
        len(model_ns) < config["min_queries"] or time.perf_counter() - start < config["min_seconds"]
    ):
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


def operator_profile(path: str, config: dict, threads: int, workdir: str) -> dict:
    """Profile ``profile_runs`` queries with ONNX Runtime's profiler and keep the top operators.

    The first run after the session starts is a warm-up and is left out. Node times are summed
    per node over the remaining runs and divided by their number, so ``mean_us`` is the time
    per query. ``share`` is the fraction of the summed kernel time of all nodes.
    """
    session = make_session(
        path, config, threads, profile_prefix=os.path.join(workdir, f"ort_profile_t{threads}")
    )
    feed = random_feed(session, config["batch_size"], config["seed"])
    session.run(None, feed)
    for _ in range(config["profile_runs"]):
        session.run(None, feed)
    trace_path = session.end_profiling()
    try:
        with open(trace_path, encoding="utf-8") as handle:
            events = json.load(handle)
    finally:
        os.remove(trace_path)
    return summarise_trace(events, config["profile_runs"], config["top_operators"])


def summarise_trace(events: list, runs: int, top: int) -> dict:
    """Reduce ORT trace events to the ``top`` nodes and op types by kernel time per query.

    Events up to the end of the first ``model_run`` (the warm-up run) are skipped. A node's
    ``median_us`` is the median of its kernel durations times its calls per query, so one
    preempted call on a busy machine does not reorder the ranking. ``mean_us`` is the plain
    mean per query, and ``share`` is the node's part of the summed medians of all nodes.
    """
    run_events = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    first_run_end = run_events[0]["ts"] + run_events[0]["dur"] if run_events else -1
    durations: dict[str, list[float]] = {}
    op_types: dict[str, str] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        if event["ts"] <= first_run_end:
            continue
        node = name[: -len("_kernel_time")]
        op_types[node] = event.get("args", {}).get("op_name", "?")
        durations.setdefault(node, []).append(float(event.get("dur", 0)))

    per_node = [
        {
            "node": node,
            "op_type": op_types[node],
            "median_us": statistics.median(values) * len(values) / runs,
            "mean_us": sum(values) / runs,
        }
        for node, values in durations.items()
    ]
    per_op_type: dict[str, dict] = {}
    for entry in per_node:
        group = per_op_type.setdefault(
            entry["op_type"],
            {"op_type": entry["op_type"], "nodes": 0, "median_us": 0.0, "mean_us": 0.0},
        )
        group["nodes"] += 1
        group["median_us"] += entry["median_us"]
        group["mean_us"] += entry["mean_us"]

    total = sum(entry["median_us"] for entry in per_node)
    return {
        "runs": runs,
        "nodes": len(per_node),
        "kernel_us_per_run": total,
        "operators": _ranked(per_node, total, top),
        "op_types": _ranked(per_op_type.values(), total, top),
    }


def _ranked(entries, total: float, top: int) -> list[dict]:
    """Keep the ``top`` entries by ``median_us`` and add each one's share of ``total``."""
    ranked = sorted(entries, key=lambda entry: entry["median_us"], reverse=True)[:top]
    return [
        {**entry, "share": entry["median_us"] / total if total > 0 else 0.0} for entry in ranked
    ]


def _load_arrays(path: str, names: list[str], role: str) -> dict:
    """Load ``.npy`` (one array, bound to the first name) or ``.npz`` (arrays keyed by name)."""
    import numpy as np

    if not os.path.isfile(path):
        raise ProfilerError(f"parity {role} file {path!r} not found")
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        return {names[0]: loaded}
    arrays = {key: loaded[key] for key in loaded.files}
    if len(arrays) == 1 and names[0] not in arrays:
        return {names[0]: next(iter(arrays.values()))}
    missing = [name for name in names if name not in arrays]
    if missing:
        raise ProfilerError(
            f"parity {role} file {path!r} lacks arrays {missing}; it contains {sorted(arrays)}"
        )
    return arrays


def run_batched(session, inputs: dict) -> list:
    """Run ``inputs`` through ``session`` in chunks that fit a fixed batch dimension, if any."""
    import numpy as np

    first = session.get_inputs()[0]
    total = len(next(iter(inputs.values())))
    fixed = (
        first.shape[0]
        if first.shape and isinstance(first.shape[0], int) and first.shape[0] > 0
        else None
    )
    step = fixed or total
    if total % step:
        raise ProfilerError(
            f"parity inputs have {total} samples, not a multiple of the model's fixed batch "
            f"size {step}"
        )
    chunks = [
        session.run(None, {k: v[i : i + step] for k, v in inputs.items()})
        for i in range(0, total, step)
    ]
    return [np.concatenate([chunk[j] for chunk in chunks]) for j in range(len(chunks[0]))]


def parity_check(path: str, config: dict) -> dict:
    """Compare the model's outputs on the parity inputs with the expected outputs (max abs diff)."""
    import numpy as np

    spec = config["parity"]
    session = make_session(path, config, threads=1)
    input_names = [meta.name for meta in session.get_inputs()]
    output_names = [meta.name for meta in session.get_outputs()]
    inputs = _load_arrays(spec["inputs"], input_names, "inputs")
    expected = _load_arrays(spec["expected"], output_names, "expected")
    results = run_batched(session, {name: inputs[name] for name in input_names})
    outputs = dict(zip(output_names, results, strict=True))
    atol = float(spec.get("atol", 1e-4))
    diffs = {}
    for name, want in expected.items():
        got = outputs[name]
        if got.shape != want.shape:
            raise ProfilerError(
                f"parity output {name!r} has shape {list(got.shape)}, expected {list(want.shape)}"
            )
        diffs[name] = (
            float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
            if want.size
            else 0.0
        )
    max_diff = max(diffs.values()) if diffs else 0.0
    return {
        "max_abs_diff": max_diff,
        "atol": atol,
        "passed": bool(max_diff <= atol),
        "per_output": diffs,
    }


def batch_check(path: str, config: dict) -> dict:
    """Run the model once at each batch size in ``batch_check``; report output shapes or errors."""
    results = {}
    session = make_session(path, config, threads=1)
    for batch in config["batch_check"]:
        try:
            outputs = session.run(
                None, random_feed(session, batch, config["seed"], force_batch=True)
            )
            results[str(batch)] = {
                "ok": True,
                "output_shapes": [list(out.shape) for out in outputs],
            }
        except Exception as err:  # onnxruntime raises several exception types for shape errors
            results[str(batch)] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    return results


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def cpu_info() -> dict:
    """Describe the CPU from /proc/cpuinfo where it exists, naming Arm cores by MIDR part."""
    info = {
        "logical_cpus": os.cpu_count(),
        "model_name": None,
        "core": None,
        "implementer": None,
        "part": None,
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "model name" and info["model_name"] is None:
            info["model_name"] = value
        elif key == "cpu implementer" and info["implementer"] is None:
            info["implementer"] = value
        elif key == "cpu part" and info["part"] is None:
            info["part"] = value
    if info["implementer"] == "0x41":
        info["core"] = ARM_PARTS.get(info["part"])
    return info


def environment(config: dict) -> dict:
    """Record the versions, provider and platform that the figures were measured with."""
    import numpy as np
    import onnxruntime as ort

    return {
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "execution_provider": config["provider"],
        "available_providers": ort.get_available_providers(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_info(),
    }


def profile_threads(config: dict, threads: int, workdir: str) -> dict:
    """Measure the model (paired with any reference) and the floor at one thread count."""
    model = make_session(config["model"], config, threads)
    model_run = (model, random_feed(model, config["batch_size"], config["seed"]))
    result: dict = {"intra_op_threads": threads, "inter_op_threads": config["inter_op_threads"]}

    if config["reference"] is None:
        result["warmup_rounds"] = warm_up([model_run], config)
        result["latency"] = latency_stats(time_single(*model_run, config))
    else:
        reference = make_session(config["reference"], config, threads)
        reference_run = (reference, random_feed(reference, config["batch_size"], config["seed"]))
        result["warmup_rounds"] = warm_up([model_run, reference_run], config)
        model_ns, reference_ns = time_paired(model_run, reference_run, config)
        result["latency"] = latency_stats(model_ns)
        result["reference_latency"] = latency_stats(reference_ns)
        result["speedup"] = ratio_stats(model_ns, reference_ns)
        del reference, reference_run

    if config["floor_model"] is not None:
        floor = make_session(config["floor_model"], config, threads)
        floor_run = (floor, random_feed(floor, config["batch_size"], config["seed"]))
        warm_up([floor_run], config)
        result["floor"] = latency_stats(time_single(*floor_run, config))

    if config["top_operators"] > 0:
        result["operators"] = operator_profile(config["model"], config, threads, workdir)
    return result


def profile(config: dict) -> dict:
    """Run the whole protocol described in the module docstring and return the JSON document."""
    report = {
        "schema_version": SCHEMA_VERSION,
        "labels": config["labels"],
        "environment": environment(config),
        "settings": {key: config[key] for key in DEFAULTS if key not in ("labels", "parity")},
        "model_size_bytes": os.path.getsize(config["model"]),
    }
    if config["reference"] is not None:
        report["reference_size_bytes"] = os.path.getsize(config["reference"])
    if config["parity"]:
        report["parity"] = parity_check(config["model"], config)
    if config["batch_check"]:
        report["batch_check"] = batch_check(config["model"], config)

    report["threads"] = {}
    with tempfile.TemporaryDirectory(prefix="compressbench-profile-") as workdir:
        for threads in config["threads"]:
            report["threads"][str(threads)] = profile_threads(config, threads, workdir)
    report["peak_rss_bytes"] = peak_rss_bytes()
    return report


def main(argv: list[str] | None = None) -> int:
    try:
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        print(f"profiler: {sys.executable} cannot import {err.name or err}", file=sys.stderr)
        return EXIT_MISSING_PACKAGE
    try:
        config = load_config(argv)
        report = profile(config)
    except ProfilerError as err:
        print(f"profiler: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    json.dump(report, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
