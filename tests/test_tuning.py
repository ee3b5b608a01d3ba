"""Hyperparameter tuning: trials, proxy budget, recorded choice, and the sealed test split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from support import tiny_suite_table
from torch import nn

from benchmark.budget import Budget
from benchmark.config import parse_suite
from benchmark.errors import DataError
from benchmark.results import ResultStore
from benchmark.runner import SuiteRunner
from benchmark.studies import ProxyTrainer, configure_studies
from benchmark.tasks.registry import TaskSpec, load_task
from benchmark.training import TrainingConfig
from benchmark.tuning import _StageTrial, tunable_stages
from methods.base import Family, Method, RunContext
from methods.dense import Dense
from methods.registry import _REGISTRY, register

TRIALS = 2
BUDGET = {"epochs": 2, "finetune_epochs": 1}


@dataclass(frozen=True)
class ShrinkParams:
    # Multiplier applied to every weight after each step; tuned in [0.9, 1.0].
    shrink: float = 1.0
    # Left alone by tuning when the suite sets it.
    note: str = "default"


class ShrinkWeights(Method):
    """A test method with a search space: multiplies the weights by ``shrink`` after each step."""

    name = "test.shrink"
    family = Family.REGULARISER
    Params = ShrinkParams
    summary = "test method for tuning"

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "shrink": trial.suggest_float("shrink", 0.9, 1.0),
            "note": trial.suggest_categorical("note", ["tuned"]),
        }

    def after_step(self, model: nn.Module, ctx: RunContext) -> None:
        for parameter in model.parameters():
            parameter.mul_(self.params.shrink)


@dataclass(frozen=True)
class PeekParams:
    # Tuned, and otherwise unused.
    unused: float = 0.0


class PeeksAtTest(Method):
    """A test method that tries to read the test split, as a leaky tuning objective would."""

    name = "test.peek"
    family = Family.BASELINE
    Params = PeekParams
    summary = "test method that reads the test split"

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        return {"unused": trial.suggest_float("unused", 0.0, 1.0)}

    def after_training(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        ctx._harness.final_test_metric(model)
        return model


@pytest.fixture(scope="module", autouse=True)
def _test_methods():
    for method_cls in (ShrinkWeights, PeeksAtTest):
        register(method_cls)
    configure_studies(storage=None, workers=1)
    yield
    for method_cls in (ShrinkWeights, PeeksAtTest):
        _REGISTRY.pop(method_cls.name, None)


def _run(folder: Path, methods: list[dict[str, Any]]) -> list[dict]:
    table = tiny_suite_table(methods, train_limit=200, **BUDGET)
    table["budget"]["tuning_trials"] = TRIALS
    SuiteRunner(parse_suite(table, folder / "tuning.toml"), folder / "out").run()
    return ResultStore(folder / "out").rows()


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("tuning")
    methods = [
        {"name": "dense"},
        {"name": "test.shrink", "params": {"note": "fixed"}},
        {"name": "test.peek"},
    ]
    return {row["identity"]["method"]: row for row in _run(folder, methods)}


def test_stage_trial_prefixes_names() -> None:
    trial = optuna.create_study().ask()
    value = _StageTrial(trial, "stage.").suggest_int("width", 1, 4)
    assert trial.params == {"stage.width": value}


def test_tunable_stages() -> None:
    assert tunable_stages(Dense()) == []
    assert tunable_stages(ShrinkWeights()) == ["test.shrink"]


def test_untuned_method_has_no_tuning(rows: dict[str, dict]) -> None:
    assert rows["dense"]["status"] == "ok"
    assert "tuning" not in rows["dense"]


def test_tuning_runs_budgeted_trials(rows: dict[str, dict]) -> None:
    row = rows["test.shrink"]
    assert row["status"] == "ok", row.get("reason")
    tuning = row["tuning"]
    assert tuning["trials"] == TRIALS
    assert tuning["trials_complete"] == TRIALS
    assert len(tuning["trials_table"]) == TRIALS


def test_tuning_epochs_fit_one_budget(rows: dict[str, dict]) -> None:
    row = rows["test.shrink"]
    tuning = row["tuning"]
    assert tuning["proxy"]["fraction"] == pytest.approx(1 / TRIALS)
    assert 0 < tuning["epochs"] <= BUDGET["epochs"] + 1e-9
    assert tuning["epochs"] == pytest.approx(sum(t["epochs"] for t in tuning["trials_table"]))
    assert row["budget_consumed"]["epochs"] == BUDGET["epochs"]


def test_tuning_records_choice(rows: dict[str, dict]) -> None:
    row = rows["test.shrink"]
    chosen = row["tuning"]["chosen"]["test.shrink"]
    assert 0.9 <= chosen["shrink"] <= 1.0
    assert "note" not in chosen, "a parameter fixed by the suite is not tuned"
    assert row["tuning"]["chosen_trial"] in row["tuning"]["pareto_trials"]
    assert row["label"] == "test.shrink(note=fixed)"


def test_tuning_never_reads_test_split(rows: dict[str, dict]) -> None:
    row = rows["test.shrink"]
    assert all(trial["test_reads"] == 0 for trial in row["tuning"]["trials_table"])
    assert row["test_reads"] == 1


def test_tuning_rejects_test_reads(rows: dict[str, dict]) -> None:
    row = rows["test.peek"]
    assert row["status"] == "failed"
    assert "test split is sealed" in row["reason"]


def test_proxy_task_seals_test_split() -> None:
    task = load_task(TaskSpec("lenet5-mnist-sample", train_limit=200))
    trainer = ProxyTrainer(task, TrainingConfig(progress=False), 0, Path("/nonexistent"))
    proxy = trainer.proxy_task(0.25)
    assert len(proxy.data.train_y) == 50
    assert torch.equal(proxy.data.val_y, task.data.val_y)
    assert set(proxy.data.train_y.tolist()) == set(range(10))
    with pytest.raises(DataError, match="sealed"):
        _ = proxy.data.test_x


class Diverges(Method):
    """A test method whose penalty is NaN, so its training diverges."""

    name = "test.diverges"
    summary = "test method that diverges"

    def penalty(self, model: nn.Module, ctx: RunContext) -> torch.Tensor:
        return torch.tensor(float("nan"))


def test_proxy_divergence_is_poor_trial(tmp_path: Path) -> None:
    task = load_task(TaskSpec("lenet5-mnist-sample", train_limit=200))
    trainer = ProxyTrainer(task, TrainingConfig(progress=False), 0, tmp_path)
    result = trainer.train(Diverges(), Budget(epochs=1), 0.25)
    assert result.diverged
    assert result.val_metric == 0.0
    assert result.model is None
    assert result.epochs == pytest.approx(0.25)
