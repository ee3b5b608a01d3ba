"""Expand a suite into runs, execute them with failures isolated, and resume.

A run is one task x method (or pipeline) x parameter combination x seed, under the suite's
budget. Each run ends in exactly one result row, ok or failed; a run that raises is recorded
with its reason and the suite carries on.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmark.config import MethodEntry, Suite
from benchmark.errors import CompressBenchError, ConfigError, DataError
from benchmark.evaluation import evaluate_outcome
from benchmark.results import SCHEMA_VERSION, STATUS_FAILED, STATUS_OK, ResultStore, capture_environment, run_id
from benchmark.tasks.registry import Task, TaskSpec, load_task
from benchmark.training import Harness
from methods.base import Method, parse_params
from methods.pipeline import Pipeline
from methods.registry import get_method

__all__ = ["RunSpec", "SuiteRunner", "default_output", "expand_suite"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """One run of a suite."""

    task: TaskSpec
    entry: MethodEntry
    # Parameters per stage, fixed and swept values merged.
    params: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
    seed: int

    def stage_params(self) -> dict[str, dict[str, Any]]:
        return {stage: dict(values) for stage, values in self.params}

    def build_method(self) -> Method:
        stages = []
        for stage, values in self.params:
            method_cls = get_method(stage)
            stages.append(method_cls(parse_params(method_cls, dict(values), self.entry.where)))
        return stages[0] if len(stages) == 1 else Pipeline(stages)

    def matches(self) -> set[str]:
        """Return the method names this run's ``match`` parameters refer to."""
        return {v for _, values in self.params for k, v in values if k == "match" and isinstance(v, str)}


def expand_suite(suite: Suite) -> list[RunSpec]:
    """Return the runs of ``suite``, ordered so that ``dense`` and matched methods go first."""
    runs = []
    for task in suite.tasks:
        for entry in suite.methods:
            for params in _combinations(entry):
                for seed in suite.seeds:
                    runs.append(RunSpec(task, entry, params, seed))
    return _order_by_dependencies(runs)


def _combinations(entry: MethodEntry) -> list[tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]]:
    axes = [(stage, param, values) for stage in entry.stages for param, values in entry.sweep[stage].items()]
    combos = []
    for choice in itertools.product(*(values for _, _, values in axes)) if axes else [()]:
        merged = {stage: dict(entry.params[stage]) for stage in entry.stages}
        for (stage, param, _), value in zip(axes, choice):
            merged[stage][param] = value
        combos.append(tuple((stage, tuple(sorted(merged[stage].items()))) for stage in entry.stages))
    return combos


def _order_by_dependencies(runs: list[RunSpec]) -> list[RunSpec]:
    names = {run.entry.name for run in runs}
    for run in runs:
        missing = run.matches() - names
        if missing:
            raise ConfigError(
                f"{run.entry.where}: match = {sorted(missing)[0]!r} names a method that this suite "
                "does not run; add it to the suite's [[methods]]"
            )

    def rank(run: RunSpec) -> int:
        if run.entry.name == "dense":
            return 0
        return 2 if run.matches() else 1

    return sorted(runs, key=rank)  # sorted is stable: suite order is kept within each rank


def default_output(suite: Suite) -> Path:
    """Reference results go to results/<suite>; quick runs go to runs/quick/<suite>."""
    return Path("runs/quick") / suite.name if suite.quick else Path("results") / suite.name


class SuiteRunner:
    """Runs the runs of a suite into a :class:`ResultStore`."""

    def __init__(self, suite: Suite, output: Path, resume: bool = False, retry_failed: bool = False) -> None:
        self.suite = suite
        self.output = Path(output)
        self.store = ResultStore(self.output)
        self.resume = resume
        self.retry_failed = retry_failed
        self._tasks: dict[TaskSpec, Task | CompressBenchError] = {}
        self._environment: dict[str, Any] | None = None

    def run(self, runs: Iterable[RunSpec] | None = None) -> dict[str, int]:
        """Execute every run not already complete; return counts by outcome."""
        runs = list(runs) if runs is not None else expand_suite(self.suite)
        existing = list(self.store.rows_dir.glob("*.json")) if self.store.rows_dir.is_dir() else []
        if existing and not self.resume:
            raise ConfigError(
                f"{self.output} already holds {len(existing)} result rows; pass --resume to skip "
                "completed runs, or choose another --output folder"
            )

        counts = {"ok": 0, "failed": 0, "skipped": 0}
        for index, run in enumerate(runs, start=1):
            outcome = self._run_one(run, index, len(runs))
            counts[outcome] += 1
        logger.info("suite %s finished: %s (rows in %s)", self.suite.name, counts, self.store.rows_dir)
        return counts

    def identity(self, run: RunSpec) -> dict[str, Any]:
        method = run.build_method()
        stages = method.stages if isinstance(method, Pipeline) else [method]
        return {
            "task": run.task.identity(),
            "method": run.entry.name,
            "params": {stage.name: _params_dict(stage.params) for stage in stages},
            "seed": run.seed,
            "budget": self.suite.budget.as_dict(),
            "training": self.suite.training.identity(),
            "quick": self.suite.quick,
        }

    def _run_one(self, run: RunSpec, index: int, total: int) -> str:
        identity = self.identity(run)
        rid = run_id(identity)
        previous = self.store.get(rid)
        if previous is not None and (previous["status"] == STATUS_OK or not self.retry_failed):
            logger.info("[%d/%d] skip %s: a %s row exists", index, total, rid, previous["status"])
            return "skipped"

        method = run.build_method()
        logger.info("[%d/%d] start %s on %s, seed %d", index, total, method.label(), run.task.name, run.seed)
        started_at, started = datetime.now(timezone.utc), time.perf_counter()
        row = self._new_row(rid, identity, method, started_at)
        try:
            row.update(self._execute(run, method, rid))
            row["status"] = STATUS_OK
        except Exception as error:  # every failure becomes a row; the suite carries on
            row["status"] = STATUS_FAILED
            row["reason"] = f"{type(error).__name__}: {error}"
            if not isinstance(error, CompressBenchError):
                row["traceback"] = traceback.format_exc(limit=-8)
            logger.error("run %s failed: %s", rid, row["reason"])

        row["timings"]["total_s"] = round(time.perf_counter() - started, 3)
        row["timings"]["finished_at"] = datetime.now(timezone.utc).isoformat()
        self.store.write(row)
        logger.info(
            "[%d/%d] end %s: %s in %.1f s", index, total, method.label(), row["status"], row["timings"]["total_s"]
        )
        return "ok" if row["status"] == STATUS_OK else "failed"

    def _new_row(self, rid: str, identity: dict[str, Any], method: Method, started_at: datetime) -> dict[str, Any]:
        if self._environment is None:
            self._environment = capture_environment(self.suite.training.threads or None)
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": rid,
            "suite": self.suite.name,
            "identity": identity,
            "label": method.label(),
            "family": method.family.value if hasattr(method.family, "value") else str(method.family),
            "status": None,
            "reason": None,
            "environment": self._environment,
            "timings": {"started_at": started_at.isoformat()},
        }

    def _execute(self, run: RunSpec, method: Method, rid: str) -> dict[str, Any]:
        self._check_available(method)
        task = self._task(run.task)
        references = self._references(run)
        harness = Harness(
            task, method, self.suite.budget, self.suite.training, run.seed,
            workdir=self.output / "work" / rid, cache_dir=self.output / "cache", references=references,
        )
        outcome = harness.run()
        dense_row = references.get("dense")
        measured = evaluate_outcome(
            harness, outcome, self.suite, onnx_path=self.output / "onnx" / f"{rid}.onnx", dense_row=dense_row
        )
        measured["timings"] = {"train_s": round(outcome.train_seconds, 3), **measured.pop("timings", {})}
        measured["history"] = outcome.history
        measured["budget_consumed"] = harness.ledger.as_dict()
        measured["diagnostics"] = outcome.context.diagnostics
        measured["test_reads"] = harness.test_reads
        return measured

    def _check_available(self, method: Method) -> None:
        stages = method.stages if isinstance(method, Pipeline) else [method]
        for stage in stages:
            ok, why = type(stage).available()
            if not ok:
                raise CompressBenchError(f"method {stage.name!r} is unavailable: {why}")

    def _task(self, spec: TaskSpec) -> Task:
        if spec not in self._tasks:
            try:
                self._tasks[spec] = load_task(spec)
            except DataError as error:
                self._tasks[spec] = error
        task = self._tasks[spec]
        if isinstance(task, CompressBenchError):
            raise task
        return task

    def _references(self, run: RunSpec) -> dict[str, dict[str, Any]]:
        """Collect finished ok rows of the same task and seed, keyed by label and name."""
        references: dict[str, dict[str, Any]] = {}
        task_identity = run.task.identity()
        for row in self.store.iter_rows():
            identity = row["identity"]
            if row["status"] != STATUS_OK or identity["seed"] != run.seed or identity["task"] != task_identity:
                continue
            if identity["budget"] != self.suite.budget.as_dict():
                continue
            references[row["label"]] = row
            references.setdefault(identity["method"], row)
        return references

    def tasks_available(self) -> list[TaskSpec]:
        """Return the suite's tasks whose data loads; optional tasks may be absent."""
        available = []
        for spec in self.suite.tasks:
            try:
                self._task(spec)
            except DataError as error:
                if spec.name in self.suite.optional_tasks:
                    logger.warning("skipping optional task %s: %s", spec.name, error)
                    continue
                raise
            available.append(spec)
        return available


def _params_dict(params: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(params):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}
    return {}
