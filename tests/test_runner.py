"""The runner end to end: rows, budget accounting, failure isolation and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import tiny_suite, tiny_suite_table

from benchmark.budget import Budget, BudgetLedger
from benchmark.errors import BudgetError
from benchmark.results import ResultStore
from benchmark.runner import SuiteRunner, describe_counts, expand_suite
from methods import registry
from methods.base import Family, Method

ROOT = Path(__file__).resolve().parents[1]


class RaisingMethod(Method):
    name = "test.raises"
    family = Family.BASELINE

    def after_training(self, model, ctx):
        raise RuntimeError("deliberate failure in after_training")


class NanMethod(Method):
    name = "test.nan"

    def penalty(self, model, ctx):
        return torch.tensor(float("nan"))


class GreedyMethod(Method):
    name = "test.greedy"

    def after_training(self, model, ctx):
        return ctx.train(model, ctx.budget.epochs)  # more than what is left


class FromDense(Method):
    name = "test.from_dense"
    start_from = "dense"


class PeekTest(Method):
    name = "test.peek"

    def after_training(self, model, ctx):
        ctx.evaluate(model, "test")
        return model


@pytest.fixture
def test_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    registry.load_methods()
    for cls in (RaisingMethod, NanMethod, GreedyMethod, FromDense, PeekTest):
        monkeypatch.setitem(registry._REGISTRY, cls.name, cls)


def _rows_by_method(output: Path) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in ResultStore(output).rows():
        grouped.setdefault(row["identity"]["method"], []).append(row)
    return grouped


def test_dense_row_complete(tmp_path: Path) -> None:
    suite = tiny_suite(tmp_path, epochs=2, finetune_epochs=1)
    counts = SuiteRunner(suite, tmp_path / "out").run()
    assert counts == {"ok": 1, "failed": 0, "skipped": 0, "skipped_failed": 0}
    (row,) = ResultStore(tmp_path / "out").rows()
    assert row["status"] == "ok"
    assert row["budget_consumed"]["epochs"] == 2  # dense trains the whole budget
    assert row["budget_consumed"]["epochs_by_kind"] == {"main": 2}
    assert 0.3 < row["metrics"]["test_metric"] <= 1.0
    assert row["metrics"]["macs"] == 2_293_000
    assert row["metrics"]["filters"] == {"features.0": 20, "features.2": 50, "classifier.1": 500, "classifier.3": 10}
    assert row["export"]["parity"]["passed"]
    assert row["export"]["onnx_bytes"] > 1_000_000
    assert row["test_reads"] == 1
    assert row["environment"]["packages"]["torch"]
    assert len(row["history"]) == 2


def test_failures_recorded_and_suite_continues(tmp_path: Path, test_methods: None) -> None:
    methods = [{"name": "test.raises"}, {"name": "test.nan"}, {"name": "test.greedy"}, {"name": "dense"}]
    suite = tiny_suite(tmp_path, methods)
    counts = SuiteRunner(suite, tmp_path / "out").run()
    assert counts == {"ok": 1, "failed": 3, "skipped": 0, "skipped_failed": 0}
    rows = _rows_by_method(tmp_path / "out")
    assert "deliberate failure" in rows["test.raises"][0]["reason"]
    assert "traceback" in rows["test.raises"][0]
    assert rows["test.nan"][0]["reason"].startswith("TrainingDivergedError")
    assert rows["test.greedy"][0]["reason"].startswith("BudgetError")
    assert rows["dense"][0]["status"] == "ok"


def test_dense_start_charges_pretraining(tmp_path: Path, test_methods: None) -> None:
    suite = tiny_suite(tmp_path, [{"name": "test.from_dense"}], seeds=(0, 1), epochs=3, finetune_epochs=1)
    SuiteRunner(suite, tmp_path / "out").run()
    rows = _rows_by_method(tmp_path / "out")["test.from_dense"]
    assert len(rows) == 2
    for row in rows:
        assert row["budget_consumed"]["epochs_by_kind"] == {"pretrain": 2, "finetune": 1}
        assert row["budget_consumed"]["epochs"] == 3
    checkpoints = list((tmp_path / "out" / "cache" / "dense").glob("*.pt"))
    assert len(checkpoints) == 2  # one per seed, trained once each


def test_dense_checkpoint_reused(tmp_path: Path, test_methods: None) -> None:
    suite = tiny_suite(tmp_path, [{"name": "test.from_dense"}], epochs=3, finetune_epochs=1)
    SuiteRunner(suite, tmp_path / "a").run()
    first = ResultStore(tmp_path / "a").rows()[0]
    cache = tmp_path / "a" / "cache"
    stamp = next((cache / "dense").glob("*.pt")).stat().st_mtime_ns
    # A second output folder sharing the cache gives the same row without retraining.
    (tmp_path / "b").mkdir()
    os.symlink(cache, tmp_path / "b" / "cache")
    SuiteRunner(suite, tmp_path / "b").run()
    second = ResultStore(tmp_path / "b").rows()[0]
    assert next((cache / "dense").glob("*.pt")).stat().st_mtime_ns == stamp
    assert second["metrics"]["test_metric"] == first["metrics"]["test_metric"]
    assert second["budget_consumed"] == first["budget_consumed"]


def test_methods_cannot_read_test_split(tmp_path: Path, test_methods: None) -> None:
    suite = tiny_suite(tmp_path, [{"name": "test.peek"}])
    SuiteRunner(suite, tmp_path / "out").run()
    (row,) = ResultStore(tmp_path / "out").rows()
    assert row["status"] == "failed"
    assert "test split" in row["reason"]


def test_seeded_runs_reproducible(tmp_path: Path) -> None:
    suite = tiny_suite(tmp_path)
    SuiteRunner(suite, tmp_path / "a").run()
    SuiteRunner(suite, tmp_path / "b").run()
    first, second = ResultStore(tmp_path / "a").rows()[0], ResultStore(tmp_path / "b").rows()[0]
    assert first["run_id"] == second["run_id"]
    assert first["history"][-1]["loss"] == second["history"][-1]["loss"]
    assert first["metrics"]["test_metric"] == second["metrics"]["test_metric"]


def test_existing_rows_need_resume(tmp_path: Path) -> None:
    suite = tiny_suite(tmp_path)
    SuiteRunner(suite, tmp_path / "out").run()
    with pytest.raises(Exception, match="--resume"):
        SuiteRunner(suite, tmp_path / "out").run()
    counts = SuiteRunner(suite, tmp_path / "out", resume=True).run()
    assert counts == {"ok": 0, "failed": 0, "skipped": 1, "skipped_failed": 0}


def test_retry_failed_reruns(tmp_path: Path, test_methods: None) -> None:
    suite = tiny_suite(tmp_path, [{"name": "test.raises"}])
    SuiteRunner(suite, tmp_path / "out").run()
    counts = SuiteRunner(suite, tmp_path / "out", resume=True).run()
    assert counts == {"ok": 0, "failed": 0, "skipped": 1, "skipped_failed": 1}
    assert "1 of them kept as failed rows; add --retry-failed" in describe_counts(counts)
    existing_rows = [
        previous for _, _, previous in SuiteRunner(suite, tmp_path / "out", resume=True).plan(expand_suite(suite))
    ]
    assert [row["status"] for row in existing_rows] == ["failed"]
    retry = SuiteRunner(suite, tmp_path / "out", resume=True, retry_failed=True)
    assert [previous for _, _, previous in retry.plan(expand_suite(suite))] == [None]
    assert retry.run()["failed"] == 1
    assert len(ResultStore(tmp_path / "out").rows()) == 1


def test_sweep_and_seeds_expand(tmp_path: Path) -> None:
    suite = tiny_suite(tmp_path, [{"name": "dense"}], seeds=(0, 1, 2))
    runs = expand_suite(suite)
    assert [run.seed for run in runs] == [0, 1, 2]


def test_ledger_rejects_overrun() -> None:
    ledger = BudgetLedger(Budget(epochs=4, finetune_epochs=1, tuning_trials=1))
    ledger.charge_epochs(3, "pretrain")
    ledger.charge_epochs(0.5, "tuning")
    assert ledger.epochs_left == 0.5
    with pytest.raises(BudgetError, match="3.5 of 4 epochs"):
        ledger.charge_epochs(1, "finetune")
    ledger.charge_trial()
    with pytest.raises(BudgetError, match="tuning trial 2"):
        ledger.charge_trial()
    assert ledger.as_dict()["epochs_by_kind"] == {"pretrain": 3, "tuning": 0.5}


def test_resume_after_sigkill(tmp_path: Path) -> None:
    table = tiny_suite_table(seeds=(0, 1, 2, 3), train_limit=300)
    lines = ["[suite]", 'name = "killed"', "seeds = [0, 1, 2, 3]", "[budget]", "epochs = 2",
             "finetune_epochs = 1", "[training]", "threads = 1", "progress = false", "[export]",
             "parity_samples = 32", "[[tasks]]", 'name = "lenet5-mnist-sample"', "train_limit = 300",
             "[[methods]]", 'name = "dense"']
    assert table["budget"]["epochs"] == 2
    suite_file = tmp_path / "killed.toml"
    suite_file.write_text("\n".join(lines) + "\n")
    output = tmp_path / "out"
    command = [sys.executable, "-m", "benchmark.cli", "run", str(suite_file), "--output", str(output)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    rows_dir = output / "rows"
    while time.monotonic() < deadline and process.poll() is None:
        if rows_dir.is_dir() and len(list(rows_dir.glob("*.json"))) >= 1:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the suite finished before it could be killed; make it longer"
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = sorted(p.name for p in rows_dir.glob("*.json"))
    assert 1 <= len(before) < 4

    resumed = subprocess.run(command + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = [json.loads(p.read_text()) for p in sorted(rows_dir.glob("*.json"))]
    assert len(rows) == 4
    assert sorted(r["identity"]["seed"] for r in rows) == [0, 1, 2, 3]
    assert all(r["status"] == "ok" for r in rows)
    assert set(before) <= {p.name for p in rows_dir.glob("*.json")}
    assert f"{len(before)} skipped" in resumed.stdout
