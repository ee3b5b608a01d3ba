"""Hyperparameter tuning of any method's ``search_space``, the same way for every method.

Protocol, applied when the suite sets ``budget.tuning_trials`` above 0 and the method (or a
stage of a pipeline) suggests at least one value:

- Trials: exactly ``tuning_trials`` complete Optuna trials per run, for every tuned method.
- Proxy: each trial runs the method's whole lifecycle with the suggested values, under the
  suite's epoch budget (same main, fine-tuning and pre-training phases), on a fixed stratified
  subset of the training split holding ``1 / tuning_trials`` of it. Tuning a method therefore
  costs at most one suite budget of passes over the full training split, whatever the trial
  count, and the same for every tuned method.
- Judgement: on the validation split only; the test split of a proxy raises when read. The
  objectives are the validation metric (maximised) and the nonzero MACs (minimised), because
  a compression method tuned on accuracy alone would pick its weakest setting.
- Choice: the cheapest trial on the Pareto front whose validation metric is within
  :data:`ACCURACY_TOLERANCE` of the best trial's.
- Final run: the chosen values replace the defaults, parameters that the suite fixes or sweeps
  are kept, and the final run gets the suite's whole epoch budget. The tuning epochs are
  reported beside it, under ``tuning`` in the row, not taken from it: untuned methods have no
  trials, and taking the epochs from the final run would train tuned methods less.

A pipeline's stages are tuned together in one study; parameter names get the stage name as
a prefix, e.g. ``magnitude.scope``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.budget import Budget, BudgetLedger
from benchmark.errors import ConfigError
from benchmark.studies import (
    ProxyTrainer,
    StudyJob,
    pareto_front,
    resolve_storage_spec,
    run_study,
    select_point,
    study_settings,
)
from methods.base import Method, parse_params
from methods.pipeline import Pipeline
from methods.registry import get_method

if TYPE_CHECKING:
    import optuna

    from benchmark.config import Suite
    from benchmark.runner import RunSpec
    from benchmark.tasks.registry import Task

__all__ = ["ACCURACY_TOLERANCE", "TuningStudy", "tunable_stages", "tune_before_run"]

logger = logging.getLogger(__name__)

# The chosen trial may lose at most this much validation metric against the best trial.
ACCURACY_TOLERANCE = 0.01
# The cost objective of a trial whose training diverged: above any real MAC count.
DIVERGED_COST = 1e18
# From this many trials on, NSGA-II replaces multi-objective TPE.
NSGA2_FROM_TRIALS = 32


class _StageTrial:
    """An Optuna trial whose ``suggest_*`` calls prefix parameter names with a stage name."""

    def __init__(self, trial: optuna.Trial, prefix: str) -> None:
        self._trial = trial
        self._prefix = prefix

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._trial, name)
        if not name.startswith("suggest_"):
            return attribute

        def suggest(param: str, *args: Any, **kwargs: Any) -> Any:
            return attribute(f"{self._prefix}{param}", *args, **kwargs)

        return suggest


def _stages(method: Method) -> list[Method]:
    return list(method.stages) if isinstance(method, Pipeline) else [method]


def tunable_stages(method: Method) -> list[str]:
    """Return the names of the stages of ``method`` whose ``search_space`` suggests values."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    return [
        stage.name
        for stage in _stages(method)
        if type(stage).search_space(_StageTrial(trial, f"{stage.name}."))
    ]


@dataclass
class TuningStudy:
    """The tuning study of one run: what each trial trains and how it is judged."""

    # (method name, the suite's parameters of that stage), in pipeline order.
    stages: list[tuple[str, dict[str, Any]]]
    tuned: list[str]
    budget: Budget
    fraction: float
    where: str
    # Parameters the suite sets explicitly, per stage; tuning never overrides them.
    fixed: dict[str, set[str]] = field(default_factory=dict)

    def study_directions(self) -> tuple[str, ...]:
        return ("maximize", "minimize")

    def make_sampler(self, n_trials: int, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        if n_trials >= NSGA2_FROM_TRIALS:
            return optuna.samplers.NSGAIISampler(population_size=8, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=max(2, min(10, n_trials // 3)), multivariate=True
            )

    def suggest(self, trial: optuna.Trial) -> dict[str, dict[str, Any]]:
        """Return the suggested values per tuned stage, without the ones the suite fixes."""
        chosen = {}
        for name in self.tuned:
            values = get_method(name).search_space(_StageTrial(trial, f"{name}."))
            chosen[name] = {k: v for k, v in values.items() if k not in self.fixed.get(name, set())}
        return chosen

    def build_method(self, chosen: Mapping[str, Mapping[str, Any]]) -> Method:
        """Return the method with ``chosen`` values over the defaults and the suite's values."""
        instances = []
        for name, values in self.stages:
            method_cls = get_method(name)
            merged = {**chosen.get(name, {}), **values}
            instances.append(method_cls(parse_params(method_cls, merged, self.where)))
        return instances[0] if len(instances) == 1 else Pipeline(instances)

    def make_objective(self, trainer: ProxyTrainer) -> Callable[[optuna.Trial], Sequence[float]]:
        def objective(trial: optuna.Trial) -> Sequence[float]:
            chosen = self.suggest(trial)
            trial.set_user_attr("chosen", chosen)
            result = trainer.train(
                self.build_method(chosen), self.budget, self.fraction, name=f"tuning{trial.number}"
            )
            trial.set_user_attr("epochs", result.epochs)
            trial.set_user_attr("test_reads", result.test_reads)
            trial.set_user_attr("diverged", result.diverged)
            # A diverged trial gets the worst score and a cost that any other trial beats.
            cost = (
                DIVERGED_COST
                if result.complexity is None
                else float(result.complexity.nonzero_macs)
            )
            return result.val_metric, cost

        return objective


def tune_before_run(
    suite: Suite, run: RunSpec, task: Task, method: Method, rid: str, output: Path
) -> tuple[Method, dict[str, Any] | None]:
    """Tune ``method`` when the suite budgets trials and the method has a search space.

    Returns the method to train for the row, with the chosen values, and the tuning record
    for the row. When there is nothing to tune, returns ``method`` unchanged and None.
    """
    trials = suite.budget.tuning_trials
    if trials == 0:
        return method, None
    tuned = tunable_stages(method)
    if not tuned:
        return method, None

    study = TuningStudy(
        stages=[(stage, dict(values)) for stage, values in run.params],
        tuned=tuned,
        budget=Budget(suite.budget.epochs, suite.budget.finetune_epochs),
        fraction=1.0 / trials,
        where=run.entry.where,
        fixed={stage: set(values) for stage, values in run.stage_params().items()},
    )
    workdir = Path(output) / "work" / rid / "tuning"
    trainer = ProxyTrainer(task, suite.training, run.seed, output, workdir)
    if study.fraction * trainer.full_train_size < task.num_classes:
        raise ConfigError(
            f"budget.tuning_trials = {trials}: each trial would train on fewer images than the "
            f"{task.num_classes} classes; lower tuning_trials"
        )
    job = StudyJob(
        study_name=f"{rid}.tuning",
        builder=study,
        task=run.task,
        training=trainer.training,
        seed=run.seed,
        output=Path(output),
        workdir=workdir,
        n_trials=trials,
        storage=resolve_storage_spec(study_settings().storage, output),
    )
    logger.info(
        "tuning %s: %d trials on %.1f%% of the training split",
        method.label(),
        trials,
        100 * study.fraction,
    )
    report = run_study(job, trainer)
    record = _record(study, report, suite.budget)
    return study.build_method(record["chosen"]), record


def _record(study: TuningStudy, report: Any, budget: Budget) -> dict[str, Any]:
    ledger = BudgetLedger(budget)
    for _ in report.complete:
        ledger.charge_trial()  # raises BudgetError past budget.tuning_trials

    rows = [
        {
            "trial": trial.number,
            "chosen": trial.user_attrs["chosen"],
            "val_metric": float(trial.values[0]),
            "nonzero_macs": int(trial.values[1]),
            "epochs": trial.user_attrs["epochs"],
            "test_reads": trial.user_attrs.get("test_reads", 0),
            "diverged": trial.user_attrs.get("diverged", False),
        }
        for trial in report.complete
    ]
    points = [(row["val_metric"], float(row["nonzero_macs"])) for row in rows]
    front = pareto_front(points)
    selected = select_point(points, front, ACCURACY_TOLERANCE)
    epochs = sum(row["epochs"] for row in rows)
    return {
        **report.as_dict(),
        "trials": ledger.trials,
        "epochs": round(epochs, 6),
        "chosen": rows[selected]["chosen"],
        "chosen_trial": rows[selected]["trial"],
        "chosen_val_metric": rows[selected]["val_metric"],
        "objectives": ["val_metric (max)", "nonzero_macs (min)"],
        "selection": f"cheapest Pareto trial within {ACCURACY_TOLERANCE} of the best val_metric",
        "proxy": {
            "fraction": study.fraction,
            "budget": study.budget.as_dict(),
        },
        "pareto_trials": [rows[i]["trial"] for i in front],
        "trials_table": rows,
    }
