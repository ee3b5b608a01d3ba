"""Harness side of the latency protocol: settings, profiling on devices, derived speed-ups.

:func:`profile_model` runs the self-contained ``profiler.py`` on every device of the suite
and adds the figures that need the harness's knowledge of MACs:

- theoretical speed-up = reference MACs / model MACs;
- attainable speed-up = dense / (floor + (dense - floor) / theoretical), where ``dense`` is the
  reference's p50 latency and ``floor`` the p50 latency of a trivial one-node model on the same
  device and thread count, so the fixed cost of a call is not expected to shrink with MACs;
- realised speed-up = median of the paired per-query ratios reference/model, reported beside
  realised / theoretical and realised / attainable;
- the roofline lower bound when the device names an Arm core.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from benchmark.errors import ConfigError, DeviceError, ExportError
from benchmark.measure import profiler as _profiler
from benchmark.measure.devices import DEVICE_TYPES, Device, get_device, parse_spec
from benchmark.measure.roofline import CORES, roofline_bound

__all__ = [
    "ProfileSettings",
    "attainable_speedup",
    "check_parity",
    "profile_model",
    "write_floor_model",
]

logger = logging.getLogger(__name__)

GRAPH_OPTIMIZATIONS = _profiler.GRAPH_OPTIMIZATION_NAMES


@dataclass
class ProfileSettings:
    """Latency protocol of a suite, read from its ``[profile]`` table."""

    # Device specs: "local", "qemu-aarch64", "ssh://user@host[:port]", each with "?options".
    devices: tuple[str, ...] = ("local",)
    # Intra-op thread counts to sweep.
    threads: tuple[int, ...] = (1, 2, 4)
    # Warm-up lasts at least this many runs and at least this many seconds.
    warmup_runs: int = 10
    warmup_seconds: float = 0.5
    # The timed part lasts at least this many queries and at least this many seconds.
    min_queries: int = 100
    min_seconds: float = 2.0
    inter_op_threads: int = 1
    # ONNX Runtime graph optimisation level: "disable", "basic", "extended" or "all".
    graph_optimization: str = "all"
    # Operators kept in the per-operator profile; 0 skips the profile.
    top_operators: int = 10
    # Timed queries on an emulated device, which runs this short protocol with one thread count.
    emulated_queries: int = 5
    # The model has a dynamic batch axis; the device then also checks batch sizes 1 and 8.
    dynamic_batch: bool = False

    @classmethod
    def from_table(cls, table: dict, where: str) -> ProfileSettings:
        """Build settings from a TOML table; raise ConfigError naming ``where``, key and value."""
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(allowed)}"
            )
        values = {}
        for key, value in table.items():
            values[key] = _validated(key, value, where)
        return cls(**values)


def _validated(key: str, value, where: str):
    """Check one settings value and convert lists to tuples."""

    def invalid(expected: str) -> ConfigError:
        return ConfigError(f"{where}: {key} = {value!r} is invalid; expected {expected}")

    if key == "devices":
        if (
            not isinstance(value, (list, tuple))
            or not value
            or not all(isinstance(v, str) and v for v in value)
        ):
            raise invalid(
                'a non-empty list of device specs such as ["local", "qemu-aarch64", "ssh://pi@host"]'
            )
        for spec in value:
            if parse_spec(spec)[0] not in DEVICE_TYPES:
                raise ConfigError(
                    f"{where}: devices entry {spec!r} is not a known device; expected one of "
                    f"{sorted(DEVICE_TYPES)} (ssh as ssh://user@host[:port])"
                )
        return tuple(value)
    if key == "threads":
        if (
            not isinstance(value, (list, tuple))
            or not value
            or not all(_is_int(v) and v >= 1 for v in value)
        ):
            raise invalid("a non-empty list of positive integers such as [1, 2, 4]")
        return tuple(value)
    if key in ("warmup_runs", "min_queries", "inter_op_threads", "emulated_queries"):
        if not _is_int(value) or value < 1:
            raise invalid("a positive integer")
        return value
    if key == "top_operators":
        if not _is_int(value) or value < 0:
            raise invalid("an integer >= 0 (0 skips the operator profile)")
        return value
    if key in ("warmup_seconds", "min_seconds"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise invalid("a number of seconds >= 0")
        return float(value)
    if key == "graph_optimization":
        if value not in GRAPH_OPTIMIZATIONS:
            raise invalid(f"one of {list(GRAPH_OPTIMIZATIONS)}")
        return value
    if key == "dynamic_batch":
        if not isinstance(value, bool):
            raise invalid("true or false")
        return value
    raise invalid("a known key")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def attainable_speedup(dense_s: float, floor_s: float, mac_speedup: float) -> float:
    """Speed-up possible when only the time above the per-call floor shrinks with MACs.

    attainable = dense / (floor + (dense - floor) / mac_speedup). A dense latency at or below
    the floor leaves nothing to shrink, so the result is then 1.
    """
    if mac_speedup <= 0:
        raise ValueError(f"mac_speedup must be positive, got {mac_speedup}")
    floor_s = min(floor_s, dense_s)
    return dense_s / (floor_s + (dense_s - floor_s) / mac_speedup)


def write_floor_model(model_path: Path, floor_path: Path) -> Path:
    """Write a one-node Identity model whose input matches the first input of ``model_path``.

    Symbolic dimensions become 1. Its latency on a device is the per-call floor: the cost of
    ``session.run`` on an input of the same shape and type with no computation to speak of.
    """
    import onnx
    from onnx import helper

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError, OSError and others for a bad file
        raise ExportError(f"cannot read ONNX model {model_path}: {err}") from err
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        raise ExportError(f"ONNX model {model_path} has no graph input to time a call with")
    graph_input = inputs[0]
    tensor_type = graph_input.type.tensor_type
    shape = [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
        for d in tensor_type.shape.dim
    ]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "compressbench_floor",
        [helper.make_tensor_value_info("x", tensor_type.elem_type, shape)],
        [helper.make_tensor_value_info("y", tensor_type.elem_type, shape)],
    )
    floor = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # IR version 8 loads in every onnxruntime release that supports opset 17.
    floor.ir_version = 8
    onnx.save(floor, str(floor_path))
    return floor_path


def _profiler_config(settings: ProfileSettings, emulated: bool) -> dict:
    """Translate settings into profiler.py's config; an emulated device gets the short protocol."""
    config = {
        "threads": list(settings.threads),
        "inter_op_threads": settings.inter_op_threads,
        "graph_optimization": settings.graph_optimization,
        "warmup_runs": settings.warmup_runs,
        "warmup_seconds": settings.warmup_seconds,
        "min_queries": settings.min_queries,
        "min_seconds": settings.min_seconds,
        "top_operators": settings.top_operators,
        "batch_check": [1, 8] if settings.dynamic_batch else [],
    }
    if emulated:
        config.update(
            threads=list(settings.threads[:1]),
            warmup_runs=1,
            warmup_seconds=0.0,
            min_queries=settings.emulated_queries,
            min_seconds=0.0,
            profile_runs=settings.emulated_queries,
        )
    return config


def _save_parity_files(workdir: Path, parity: tuple[np.ndarray, np.ndarray]) -> dict[str, Path]:
    inputs, expected = parity
    files = {
        "parity.inputs": workdir / "parity_inputs.npy",
        "parity.expected": workdir / "parity_expected.npy",
    }
    np.save(files["parity.inputs"], np.ascontiguousarray(inputs))
    np.save(files["parity.expected"], np.ascontiguousarray(expected))
    return files


def profile_model(
    onnx_path: Path,
    settings: ProfileSettings,
    reference_onnx: Path | None = None,
    macs: int | None = None,
    reference_macs: int | None = None,
    workdir: Path | None = None,
    *,
    parity: tuple[np.ndarray, np.ndarray] | None = None,
    parity_atol: float = 1e-4,
) -> dict:
    """Profile ``onnx_path`` on every device of ``settings``; return a JSON-ready dict by device.

    With ``reference_onnx`` (the dense model) the two run paired and interleaved in one process.
    ``macs`` and ``reference_macs`` give the theoretical and attainable speed-ups and, with a
    core named by the device, the roofline bound. ``parity`` = (inputs, expected outputs) adds
    an on-device parity check with tolerance ``parity_atol``. Temporary files go to ``workdir``
    (default: a temporary folder that is removed afterwards).

    A device that fails with DeviceError does not stop the others: its entry is
    ``{"status": "failed", "error": message}`` and the error is logged. Successful entries have
    ``"status": "ok"``.
    """
    onnx_path = Path(onnx_path)
    for path in (onnx_path, reference_onnx):
        if path is not None and not Path(path).is_file():
            raise ExportError(f"ONNX model {path} not found; export the model before profiling it")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="compressbench-profile-") as temporary:
            return profile_model(
                onnx_path,
                settings,
                reference_onnx,
                macs,
                reference_macs,
                Path(temporary),
                parity=parity,
                parity_atol=parity_atol,
            )

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    files = {
        "model": onnx_path,
        "floor_model": write_floor_model(onnx_path, workdir / "floor.onnx"),
    }
    if reference_onnx is not None:
        files["reference"] = Path(reference_onnx)
    if parity is not None:
        files.update(_save_parity_files(workdir, parity))

    results = {}
    for spec in settings.devices:
        try:
            device = get_device(spec)
        except DeviceError as err:
            logger.error("device %s unavailable: %s", spec, err)
            results[spec] = {"status": "failed", "error": str(err)}
            continue
        results[device.name] = _profile_on(
            device, settings, files, parity_atol, macs, reference_macs
        )
    return results


def _profile_on(
    device: Device,
    settings: ProfileSettings,
    files: dict,
    atol: float,
    macs: int | None,
    reference_macs: int | None,
) -> dict:
    config = _profiler_config(settings, device.emulated)
    if "parity.inputs" in files:
        config["parity"] = {"atol": atol}
    config["labels"] = {"timing": "emulation" if device.emulated else "device"}
    started = time.perf_counter()
    try:
        raw = device.profile(config, files)
    except DeviceError as err:
        logger.error("profiling on %s failed: %s", device.name, err)
        return {"status": "failed", "error": str(err)}
    finally:
        device.cleanup()
    summary = summarise(raw, macs, reference_macs, core=_core_for(device, raw))
    p50s = ", ".join(f"{t} thread(s) {m['p50_us']:.1f} µs" for t, m in summary["threads"].items())
    logger.info(
        "profiled on %s in %.1f s: p50 %s (%s)",
        device.name,
        time.perf_counter() - started,
        p50s,
        summary["timing"],
    )
    return summary


def _core_for(device: Device, raw: dict) -> str | None:
    """Choose the Arm core for the roofline: the device's ``core`` option, else the detected one.

    An emulated device reports its fake CPU files, so only an explicit option counts there.
    """
    if device.core:
        return device.core
    detected = raw["environment"]["cpu"].get("core")
    if device.emulated or detected not in CORES:
        return None
    return detected


def summarise(raw: dict, macs: int | None, reference_macs: int | None, core: str | None) -> dict:
    """Add the derived speed-ups and the roofline bound to one device's profiler document."""
    emulated = raw["device"]["emulated"]
    summary = {
        "status": "ok",
        "emulated": emulated,
        "timing": "emulation" if emulated else "device",
        "protocol": "short" if emulated else "full",
        "core": core,
        "environment": raw["environment"],
        "settings": raw["settings"],
        "model_size_bytes": raw["model_size_bytes"],
        "peak_rss_bytes": raw["peak_rss_bytes"],
        "threads": {},
    }
    for key in ("parity", "batch_check", "reference_size_bytes"):
        if key in raw:
            summary[key] = raw[key]
    theoretical = reference_macs / macs if macs and reference_macs else None
    for threads, measured in raw["threads"].items():
        summary["threads"][threads] = _thread_summary(
            measured, theoretical, macs, raw["model_size_bytes"], core
        )
    return summary


def _thread_summary(
    measured: dict, theoretical: float | None, macs: int | None, size: int, core: str | None
) -> dict:
    """Collect one thread count's p50, paired speed-up and floor, and derive the ratios."""
    entry = dict(measured)
    entry["p50_us"] = measured["latency"]["p50_us"]
    entry["floor_us"] = measured["floor"]["p50_us"] if "floor" in measured else None
    realised = measured["speedup"]["median"] if "speedup" in measured else None
    entry["realised_speedup"] = realised
    entry["theoretical_speedup"] = theoretical
    attainable = None
    if theoretical and "reference_latency" in measured and entry["floor_us"] is not None:
        attainable = attainable_speedup(
            measured["reference_latency"]["p50_us"], entry["floor_us"], theoretical
        )
    entry["attainable_speedup"] = attainable
    entry["realised_over_theoretical"] = (
        realised / theoretical if realised and theoretical else None
    )
    entry["realised_over_attainable"] = realised / attainable if realised and attainable else None
    if core is not None and macs is not None:
        bound = roofline_bound(core, macs, size, threads=int(measured["intra_op_threads"]))
        bound["bound_us"] = bound["bound_s"] * 1e6
        bound["p50_over_bound"] = (
            entry["p50_us"] / bound["bound_us"] if bound["bound_us"] > 0 else None
        )
        entry["roofline"] = bound
    return entry


def check_parity(
    onnx_path: Path, inputs: np.ndarray, expected: np.ndarray, atol: float = 1e-4
) -> dict:
    """Run ``inputs`` through the ONNX model in this process and compare with ``expected``.

    Inputs bigger than a fixed batch dimension run in chunks of that size. Returns
    ``max_abs_diff`` (infinite when an output is NaN or infinite), ``atol`` and ``passed``.
    Raises ExportError when the model is missing, fails to run, or returns another shape.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ExportError(
            f"ONNX model {onnx_path} not found; export the model before its parity check"
        )
    config = {**_profiler.DEFAULTS, "inter_op_threads": 1}
    try:
        session = _profiler.make_session(str(onnx_path), config, threads=1)
        name = session.get_inputs()[0].name
        output = _profiler.run_batched(session, {name: np.ascontiguousarray(inputs)})[0]
    except _profiler.ProfilerError as err:
        raise ExportError(f"parity check of {onnx_path}: {err}") from err
    except Exception as err:  # onnxruntime raises its own exception types that share no base
        raise ExportError(f"parity check of {onnx_path}: onnxruntime failed: {err}") from err
    if output.shape != expected.shape:
        raise ExportError(
            f"parity check of {onnx_path}: output shape {list(output.shape)} differs from the "
            f"expected {list(expected.shape)}"
        )
    difference = np.abs(output.astype(np.float64) - np.asarray(expected, dtype=np.float64))
    max_diff = float(difference.max()) if difference.size else 0.0
    if not np.isfinite(max_diff):
        max_diff = float("inf")
    return {"max_abs_diff": max_diff, "atol": atol, "passed": bool(max_diff <= atol)}
