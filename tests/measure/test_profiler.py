"""The profiling protocol: statistics, stopping rules, pairing, parity and the harness API."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest

from benchmark.errors import ConfigError, ExportError
from benchmark.measure import profiler
from benchmark.measure.profiling import (
    ProfileSettings,
    attainable_speedup,
    check_parity,
    profile_model,
    write_floor_model,
)

FAST = {
    **profiler.DEFAULTS,
    "warmup_runs": 10,
    "warmup_seconds": 0.05,
    "min_queries": 30,
    "min_seconds": 0.1,
    "top_operators": 3,
    "profile_runs": 5,
}


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, profiler.__file__, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def session_and_feed(path, config=FAST, threads=1):
    session = profiler.make_session(str(path), config, threads)
    return session, profiler.random_feed(session, 1, 0)


class RecordingSession:
    """Wraps a real InferenceSession and records the order of its runs in a shared list."""

    def __init__(self, session, label: str, log: list[str]) -> None:
        self.session, self.label, self.log = session, label, log

    def run(self, outputs, feed):
        self.log.append(self.label)
        return self.session.run(outputs, feed)


def test_latency_stats_known_values():
    stats = profiler.latency_stats([1000 * v for v in range(1, 101)])
    assert stats["count"] == 100
    assert stats["p50_us"] == pytest.approx(50.5)
    assert stats["p90_us"] == pytest.approx(90.1)
    assert stats["p99_us"] == pytest.approx(99.01)
    assert stats["mean_us"] == pytest.approx(50.5)
    assert stats["std_us"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert stats["cv"] == pytest.approx(stats["std_us"] / 50.5)
    assert stats["min_us"] == 1.0
    assert stats["max_us"] == 100.0


def test_ratio_stats_median_and_spread():
    model = [100] * 9
    reference = [100 * r for r in (1, 2, 2, 3, 3, 3, 4, 4, 5)]
    stats = profiler.ratio_stats(model, reference)
    assert stats["pairs"] == 9
    assert stats["median"] == pytest.approx(3.0)
    assert stats["p25"] == pytest.approx(2.0)
    assert stats["p75"] == pytest.approx(4.0)
    assert stats["iqr"] == pytest.approx(2.0)
    assert stats["p10"] <= stats["p25"] <= stats["median"] <= stats["p75"] <= stats["p90"]


def test_timed_part_stops_after_min_queries(tiny_models):
    session, feed = session_and_feed(tiny_models["small"])
    samples = profiler.time_single(session, feed, {**FAST, "min_queries": 57, "min_seconds": 0.0})
    assert len(samples) == 57
    assert all(sample > 0 for sample in samples)


def test_timed_part_lasts_min_seconds(tiny_models):
    session, feed = session_and_feed(tiny_models["small"])
    start = time.perf_counter()
    samples = profiler.time_single(session, feed, {**FAST, "min_queries": 1, "min_seconds": 0.3})
    assert time.perf_counter() - start >= 0.3
    assert len(samples) > 1


def test_warm_up_meets_both_minimums(tiny_models):
    session, feed = session_and_feed(tiny_models["small"])
    start = time.perf_counter()
    rounds = profiler.warm_up([(session, feed)], {**FAST, "warmup_runs": 10, "warmup_seconds": 0.2})
    assert time.perf_counter() - start >= 0.2
    assert rounds >= 10
    assert (
        profiler.warm_up([(session, feed)], {**FAST, "warmup_runs": 12, "warmup_seconds": 0.0})
        == 12
    )


def test_paired_runs_interleave_in_alternating_order(tiny_models):
    log: list[str] = []
    model, feed = session_and_feed(tiny_models["small"])
    reference, reference_feed = session_and_feed(tiny_models["large"])
    model_ns, reference_ns = profiler.time_paired(
        (RecordingSession(model, "A", log), feed),
        (RecordingSession(reference, "B", log), reference_feed),
        {**FAST, "min_queries": 6, "min_seconds": 0.0},
    )
    assert len(model_ns) == len(reference_ns) == 6
    assert "".join(log) == "ABBAABBAABBA"


def test_operator_profile_ranks_top_nodes(tiny_models, tmp_path):
    summary = profiler.operator_profile(
        str(tiny_models["large"]), {**FAST, "top_operators": 2}, 1, str(tmp_path)
    )
    operators = summary["operators"]
    assert summary["runs"] == 5
    assert summary["nodes"] >= 2
    assert len(operators) == 2
    assert operators[0]["median_us"] >= operators[1]["median_us"]
    assert all(op["mean_us"] > 0 for op in operators)
    assert {op["op_type"] for op in operators} <= {"MatMul", "Relu", "FusedMatMul", "Gemm"}
    assert 0 < sum(op["share"] for op in operators) <= 1.0 + 1e-9
    assert summary["op_types"][0]["median_us"] >= operators[0]["median_us"]
    assert sum(group["nodes"] for group in summary["op_types"]) <= summary["nodes"]
    assert list(tmp_path.iterdir()) == []


def test_trace_summary_resists_one_slow_call():
    def kernel(node, op_type, ts, dur):
        return {
            "cat": "Node",
            "name": f"{node}_kernel_time",
            "ts": ts,
            "dur": dur,
            "args": {"op_name": op_type},
        }

    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 10},
        kernel("a", "Conv", 5, 999),
    ]
    for run in range(1, 5):
        start = 100 * run
        events.append({"cat": "Session", "name": "model_run", "ts": start, "dur": 50})
        events.append(kernel("a", "Conv", start + 1, 10))
        events.append(kernel("b", "MaxPool", start + 20, 5000 if run == 2 else 2))
    summary = profiler.summarise_trace(events, runs=4, top=5)
    assert [op["node"] for op in summary["operators"]] == ["a", "b"]
    assert summary["operators"][0]["median_us"] == pytest.approx(10.0)
    assert summary["operators"][1]["median_us"] == pytest.approx(2.0)
    assert summary["operators"][1]["mean_us"] == pytest.approx((5000 + 3 * 2) / 4)
    assert summary["kernel_us_per_run"] == pytest.approx(12.0)
    assert summary["op_types"][0] == {
        "op_type": "Conv",
        "nodes": 1,
        "median_us": 10.0,
        "mean_us": 10.0,
        "share": 10.0 / 12.0,
    }


def test_script_sweeps_threads_and_records_settings(tiny_models, tmp_path):
    floor = write_floor_model(tiny_models["small"], tmp_path / "floor.onnx")
    completed = run_script(
        "--model",
        str(tiny_models["small"]),
        "--reference",
        str(tiny_models["large"]),
        "--floor-model",
        str(floor),
        "--threads",
        "1,2",
        "--warmup-seconds",
        "0.02",
        "--min-queries",
        "20",
        "--min-seconds",
        "0.05",
        "--top-operators",
        "2",
        "--profile-runs",
        "3",
        "--graph-optimization",
        "basic",
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert set(report["threads"]) == {"1", "2"}
    assert report["settings"]["graph_optimization"] == "basic"
    assert report["environment"]["execution_provider"] == "CPUExecutionProvider"
    assert report["environment"]["onnxruntime"]
    assert report["model_size_bytes"] == tiny_models["small"].stat().st_size
    assert report["peak_rss_bytes"] > 10 * 2**20
    for threads, measured in report["threads"].items():
        assert measured["intra_op_threads"] == int(threads)
        assert measured["inter_op_threads"] == 1
        assert measured["latency"]["count"] >= 20
        assert measured["speedup"]["pairs"] == measured["latency"]["count"]
        assert measured["floor"]["p50_us"] > 0
        assert len(measured["operators"]["operators"]) <= 2


def test_script_config_file_and_invalid_values(tiny_models, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": str(tiny_models["small"]), "graph_optimization": "max"}))
    completed = run_script("--config", str(config))
    assert completed.returncode == profiler.EXIT_CONFIG_ERROR
    assert "'max'" in completed.stderr
    assert "extended" in completed.stderr

    config.write_text(json.dumps({"model": str(tiny_models["small"]), "warmup": 3}))
    completed = run_script("--config", str(config))
    assert completed.returncode == profiler.EXIT_CONFIG_ERROR
    assert "unknown config keys ['warmup']" in completed.stderr

    completed = run_script("--model", str(tmp_path / "absent.onnx"))
    assert completed.returncode == profiler.EXIT_CONFIG_ERROR
    assert "absent.onnx" in completed.stderr


def test_script_parity_detects_wrong_model(tiny_models, tmp_path):
    inputs = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    right = profiler.make_session(str(tiny_models["small"]), FAST, 1).run(None, {"input": inputs})[
        0
    ]
    np.save(tmp_path / "inputs.npy", inputs)
    np.save(tmp_path / "expected.npy", right)
    results = {}
    for name in ("small", "wrong"):
        config = {**FAST, "model": str(tiny_models[name]), "threads": [1], "top_operators": 0}
        config["parity"] = {
            "inputs": str(tmp_path / "inputs.npy"),
            "expected": str(tmp_path / "expected.npy"),
        }
        results[name] = profiler.parity_check(config["model"], config)
    assert results["small"]["passed"] is True
    assert results["small"]["max_abs_diff"] == 0.0
    assert results["wrong"]["passed"] is False
    assert results["wrong"]["max_abs_diff"] > 1.0


def test_script_parity_from_npz_arguments(tiny_models, tmp_path):
    inputs = np.random.default_rng(4).standard_normal((2, 64)).astype(np.float32)
    session = profiler.make_session(str(tiny_models["small"]), FAST, 1)
    np.savez(tmp_path / "inputs.npz", input=inputs)
    np.savez(tmp_path / "expected.npz", output=session.run(None, {"input": inputs})[0] + 1e-3)
    common = ["--model", str(tiny_models["small"]), "--threads", "1", "--min-queries", "5"]
    common += ["--min-seconds", "0", "--warmup-seconds", "0", "--top-operators", "0"]
    common += ["--parity-inputs", str(tmp_path / "inputs.npz")]
    common += ["--parity-expected", str(tmp_path / "expected.npz")]
    strict = json.loads(run_script(*common).stdout)["parity"]
    loose = json.loads(run_script(*common, "--parity-atol", "1e-2").stdout)["parity"]
    assert strict["passed"] is False
    assert strict["max_abs_diff"] == pytest.approx(1e-3, rel=1e-2)
    assert loose["passed"] is True
    incomplete = run_script("--model", str(tiny_models["small"]), "--parity-inputs", "x.npy")
    assert incomplete.returncode == 2
    assert "--parity-expected" in incomplete.stderr


def test_batch_check_static_and_dynamic(tiny_models):
    config = {**FAST, "batch_check": [1, 8]}
    dynamic = profiler.batch_check(str(tiny_models["small"]), config)
    static = profiler.batch_check(str(tiny_models["static"]), config)
    assert dynamic["8"] == {"ok": True, "output_shapes": [[8, 10]]}
    assert dynamic["1"]["ok"] is True
    assert static["1"]["ok"] is True
    assert static["8"]["ok"] is False


def test_attainable_speedup_formula():
    # 2-core x86 host, 1 thread: floor 32 µs, LeNet-5 251 µs, 6x fewer MACs.
    assert attainable_speedup(251.0, 32.0, 6.0) == pytest.approx(251.0 / (32.0 + 219.0 / 6.0))
    assert attainable_speedup(100.0, 0.0, 4.0) == pytest.approx(4.0)
    assert attainable_speedup(20.0, 32.0, 6.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        attainable_speedup(100.0, 10.0, 0.0)


def test_settings_from_table_valid():
    settings = ProfileSettings.from_table(
        {
            "devices": ["local", "qemu-aarch64"],
            "threads": [1, 2],
            "min_seconds": 1,
            "dynamic_batch": True,
        },
        "suite.toml: profile",
    )
    assert settings.devices == ("local", "qemu-aarch64")
    assert settings.threads == (1, 2)
    assert settings.min_seconds == 1.0
    assert settings.dynamic_batch is True
    assert settings.min_queries == 100


@pytest.mark.parametrize(
    ("table", "fragments"),
    [
        ({"threads": [0, 2]}, ["threads", "[0, 2]", "positive integers"]),
        ({"threads": 4}, ["threads", "4", "list"]),
        ({"graph_optimization": "max"}, ["graph_optimization", "'max'", "'extended'"]),
        ({"min_queries": True}, ["min_queries", "True", "positive integer"]),
        ({"min_seconds": -1}, ["min_seconds", "-1", ">= 0"]),
        ({"top_operators": -2}, ["top_operators", "-2", ">= 0"]),
        ({"dynamic_batch": "yes"}, ["dynamic_batch", "'yes'", "true or false"]),
        ({"devices": ["local", "board"]}, ["devices", "'board'", "qemu-aarch64"]),
        ({"warmup": 3}, ["warmup", "allowed keys", "warmup_runs"]),
    ],
)
def test_settings_from_table_rejects(table, fragments):
    with pytest.raises(ConfigError) as caught:
        ProfileSettings.from_table(table, "suite.toml: profile")
    message = str(caught.value)
    assert message.startswith("suite.toml: profile")
    for fragment in fragments:
        assert fragment in message


def test_profile_model_paired_on_local(tiny_models, short_settings, tmp_path):
    results = profile_model(
        tiny_models["small"],
        short_settings,
        reference_onnx=tiny_models["large"],
        macs=64 * 16 + 16 * 10,
        reference_macs=64 * 2048 + 2048 * 10,
        workdir=tmp_path,
    )
    local = results["local"]
    measured = local["threads"]["1"]
    assert local["status"] == "ok"
    assert local["emulated"] is False
    assert local["timing"] == "device"
    assert measured["theoretical_speedup"] == pytest.approx((64 * 2048 + 20480) / (64 * 16 + 160))
    assert measured["realised_speedup"] == measured["speedup"]["median"]
    assert measured["realised_speedup"] > 1.0
    assert 1.0 <= measured["attainable_speedup"] <= measured["theoretical_speedup"]
    assert measured["realised_over_attainable"] == pytest.approx(
        measured["realised_speedup"] / measured["attainable_speedup"]
    )
    assert measured["floor_us"] < measured["reference_latency"]["p50_us"]
    assert "roofline" not in measured
    json.dumps(results)


def test_profile_model_dynamic_batch(tiny_models, short_settings):
    settings = ProfileSettings(**{**short_settings.__dict__, "dynamic_batch": True})
    local = profile_model(tiny_models["small"], settings)["local"]
    assert local["batch_check"]["1"]["ok"] is True
    assert local["batch_check"]["8"]["output_shapes"] == [[8, 10]]
    assert local["settings"]["batch_check"] == [1, 8]


def test_floor_model_matches_input(tiny_models, tmp_path):
    floor = write_floor_model(tiny_models["small"], tmp_path / "floor.onnx")
    session = profiler.make_session(str(floor), FAST, 1)
    (graph_input,) = session.get_inputs()
    assert graph_input.shape == [1, 64]
    assert graph_input.type == "tensor(float)"
    assert [node.op_type for node in onnx.load(str(floor)).graph.node] == ["Identity"]
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(ExportError, match="broken.onnx"):
        write_floor_model(broken, tmp_path / "floor2.onnx")


def test_profile_model_missing_file(tmp_path, short_settings):
    with pytest.raises(ExportError, match="absent.onnx"):
        profile_model(tmp_path / "absent.onnx", short_settings)


def test_check_parity_lenet_against_pytorch(lenets):
    good = check_parity(lenets["dense"], lenets["inputs"], lenets["expected"])
    assert good["passed"] is True
    assert good["max_abs_diff"] < 1e-4
    wrong = check_parity(lenets["thin"], lenets["inputs"], lenets["expected"])
    assert wrong["passed"] is False
    assert wrong["max_abs_diff"] > 1e-3


def test_check_parity_shape_mismatch(lenets):
    with pytest.raises(ExportError, match="shape"):
        check_parity(lenets["dense"], lenets["inputs"], lenets["expected"][:, :5])


def test_pruned_lenet_faster_than_dense_on_local(lenets, tmp_path):
    settings = ProfileSettings(
        threads=(1,), min_queries=200, min_seconds=1.0, warmup_seconds=0.2, top_operators=0
    )
    results = profile_model(
        lenets["thin"],
        settings,
        reference_onnx=lenets["dense"],
        macs=lenets["thin_macs"],
        reference_macs=lenets["dense_macs"],
        workdir=tmp_path,
    )
    measured = results["local"]["threads"]["1"]
    assert measured["speedup"]["median"] > 1.2
    assert measured["speedup"]["p25"] > 1.0
    assert measured["realised_over_theoretical"] < 1.0
