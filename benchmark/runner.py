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

from tqdm.auto import tqdm

from benchmark.config import MethodEntry, Suite
from benchmark.errors import CompressBenchError, ConfigError, DataError
from benchmark.evaluation import evaluate_outcome
from benchmark.executors import Executor, LocalExecutor
from benchmark.results import SCHEMA_VERSION, STATUS_FAILED, STATUS_OK, ResultStore, capture_environment, run_id
from benchmark.tasks.registry import Task, TaskSpec, load_task
from benchmark.training import Harness
from benchmark.tuning import tune_before_run
from methods.base import Method, parse_params
from methods.pipeline import Pipeline
from methods.registry import get_method

__all__ = ["RunRequest", "RunSpec", "SuiteRunner", "default_output", "execute_run", "expand_suite", "run_identity"]

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
            method = method_cls(parse_params(method_cls, dict(values), self.entry.where))
            method.labelled_params = tuple(self.entry.sweep.get(stage, {}))
            stages.append(method)
        return stages[0] if len(stages) == 1 else Pipeline(stages)

    def matches(self) -> set[str]:
        """Return the method names this run's ``match`` parameters refer to.

        A match names a method (``"l1l2.across"``) or one of its rows by label
        (``"l1l2.across(lam=0.1)"``); both depend on every run of that method.
        """
        return {
            v.split("(", 1)[0] for _, values in self.params for k, v in values if k == "match" and isinstance(v, str)
        }


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
        for (stage, param, _), value in zip(axes, choice, strict=False):
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
    """Runs the runs of a suite into a :class:`ResultStore`, through an executor.

    The runner alone writes rows, whichever executor runs the training, so rows stay atomic
    and unduplicated. Runs start only when the runs they depend on are recorded: ``dense``
    first (its ONNX file is the reference of paired speed-ups), then the methods that a
    ``match`` parameter names.
    """

    def __init__(
        self,
        suite: Suite,
        output: Path,
        resume: bool = False,
        retry_failed: bool = False,
        executor: Executor | None = None,
    ) -> None:
        self.suite = suite
        self.output = Path(output)
        self.store = ResultStore(self.output)
        self.resume = resume
        self.retry_failed = retry_failed
        self.executor = executor or LocalExecutor()
        self._environment: dict[str, Any] | None = None

    def check_output(self) -> None:
        """Raise ConfigError when the output folder already contains rows and the run does not resume."""
        existing = list(self.store.rows_dir.glob("*.json")) if self.store.rows_dir.is_dir() else []
        if existing and not self.resume:
            raise ConfigError(
                f"{self.output} already contains {len(existing)} result rows; pass --resume to skip "
                "completed runs, or choose another --output folder"
            )

    def plan(self, runs: Iterable[RunSpec]) -> list[tuple[RunSpec, str, dict[str, Any] | None]]:
        """Pair each run with its id and the existing row that resuming keeps, or None when it must run."""
        planned = []
        for run in runs:
            rid = run_id(self.identity(run))
            previous = self.store.get(rid) if self.resume else None
            if previous is not None and previous["status"] != STATUS_OK and self.retry_failed:
                previous = None
            planned.append((run, rid, previous))
        return planned

    def run(self, runs: Iterable[RunSpec] | None = None) -> dict[str, int]:
        """Execute every run not already complete; return counts by outcome.

        ``skipped`` counts the runs whose rows were kept; ``skipped_failed`` counts those of them
        recorded as failed, which ``--retry-failed`` would rerun.
        """
        runs = list(runs) if runs is not None else expand_suite(self.suite)
        self.check_output()

        counts = {"ok": 0, "failed": 0, "skipped": 0, "skipped_failed": 0}
        pending: list[tuple[RunSpec, str]] = []
        for run, rid, previous in self.plan(runs):
            if previous is None:
                pending.append((run, rid))
                continue
            logger.info(
                "skip %s (%s on %s, seed %d): its row exists with status %s",
                rid,
                previous["label"],
                run.task.name,
                run.seed,
                previous["status"],
            )
            counts["skipped"] += 1
            if previous["status"] != STATUS_OK:
                counts["skipped_failed"] += 1

        self._schedule(pending, counts, len(runs))
        logger.info("suite %s finished: %s (rows in %s)", self.suite.name, counts, self.store.rows_dir)
        return counts

    def _schedule(self, pending: list[tuple[RunSpec, str]], counts: dict[str, int], total: int) -> None:
        waiting = list(pending)
        in_flight: dict[str, RunSpec] = {}
        done = counts["skipped"]
        bar = tqdm(
            total=total,
            initial=done,
            desc=f"suite {self.suite.name}",
            unit="run",
            disable=not self.suite.training.progress,
        )
        try:
            while waiting or in_flight:
                blocked = {r.entry.name for r, _ in waiting} | {r.entry.name for r in in_flight.values()}
                for item in list(waiting):
                    if len(in_flight) >= self.executor.slots:
                        break
                    run, rid = item
                    if self._blocked(run, waiting, in_flight, blocked):
                        continue
                    waiting.remove(item)
                    in_flight[rid] = run
                    logger.info(
                        "start %s on %s, seed %d (run %s)", run.build_method().label(), run.task.name, run.seed, rid
                    )
                    self.executor.submit(rid, RunRequest(self.suite, run, self.output, self._references(run)))
                if not in_flight:
                    raise RuntimeError("no run can start: the dependencies between runs form a cycle")
                for rid, result in self.executor.wait_any():
                    run = in_flight.pop(rid)
                    row = result if isinstance(result, dict) else self._lost_row(run, rid, result)
                    self.store.write(row)
                    counts["ok" if row["status"] == STATUS_OK else "failed"] += 1
                    done += 1
                    bar.update()
                    logger.info(
                        "[%d/%d] end %s on %s, seed %d: %s in %.1f s",
                        done,
                        total,
                        row["label"],
                        run.task.name,
                        run.seed,
                        row["status"],
                        row["timings"].get("total_s", 0.0),
                    )
        finally:
            bar.close()
            self.executor.close()

    @staticmethod
    def _blocked(
        run: RunSpec, waiting: list[tuple[RunSpec, str]], in_flight: dict[str, RunSpec], names: set[str]
    ) -> bool:
        """Return whether a run must wait for dense or a matched method of its task and seed."""
        needs = set(run.matches())
        if run.entry.name != "dense":
            needs.add("dense")
        others = [r for r, _ in waiting] + list(in_flight.values())
        return any(
            other.entry.name in needs and other.task == run.task and other.seed == run.seed
            for other in others
            if other is not run
        )

    def _lost_row(self, run: RunSpec, rid: str, reason: str) -> dict[str, Any]:
        """Build the failed row of a run whose worker died on every attempt."""
        method = run.build_method()
        row = new_row(self.suite, rid, self.identity(run), method, datetime.now(timezone.utc), self.environment())
        row["status"] = STATUS_FAILED
        row["reason"] = reason
        row["timings"]["total_s"] = 0.0
        return row

    def environment(self) -> dict[str, Any]:
        if self._environment is None:
            self._environment = capture_environment(self.suite.training.threads or None)
        return self._environment

    def identity(self, run: RunSpec) -> dict[str, Any]:
        return run_identity(self.suite, run)

    def _references(self, run: RunSpec) -> dict[str, dict[str, Any]]:
        """Collect finished ok rows of the same task and seed, keyed by label and name."""
        references: dict[str, dict[str, Any]] = {}
        by_name: dict[str, list[dict[str, Any]]] = {}
        task_identity = run.task.identity()
        for row in self.store.iter_rows():
            identity = row["identity"]
            if row["status"] != STATUS_OK or identity["seed"] != run.seed or identity["task"] != task_identity:
                continue
            if identity["budget"] != self.suite.budget.as_dict():
                continue
            references[row["label"]] = row
            by_name.setdefault(identity["method"], []).append(row)
        # A bare method name refers to its row with default parameters, when the suite has one,
        # and otherwise to the row with the first label in sorted order, so the choice is stable.
        for name, rows in by_name.items():
            if name not in references:
                references[name] = min(rows, key=lambda row: row["label"])
        return references

    def tasks_available(self) -> list[TaskSpec]:
        """Return the suite's tasks whose data loads; optional tasks may be absent."""
        available = []
        for index, spec in enumerate(self.suite.tasks):
            try:
                _load_task_cached(spec)
            except DataError as error:
                if spec.name in self.suite.optional_tasks:
                    logger.warning("skipping optional task %s: %s", spec.name, error)
                    continue
                raise
            except ConfigError as error:  # options checked against the data, such as classes
                raise ConfigError(f"{self.suite.path}: tasks[{index}] ({spec.name}): {error}") from error
            available.append(spec)
        return available


def describe_counts(counts: dict[str, int]) -> str:
    """Summarise the outcome counts of SuiteRunner.run in one line, naming kept failed rows."""
    text = f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped"
    kept_failed = counts.get("skipped_failed", 0)
    if kept_failed:
        text += f" ({kept_failed} of them kept as failed rows; add --retry-failed to rerun them)"
    return text


def run_identity(suite: Suite, run: RunSpec) -> dict[str, Any]:
    """Return what identifies a run's result. The code version is recorded in the row but
    is not part of the identity, so a resumed suite keeps rows written by earlier commits."""
    method = run.build_method()
    stages = method.stages if isinstance(method, Pipeline) else [method]
    return {
        "task": run.task.identity(),
        "method": run.entry.name,
        "params": {stage.name: _params_dict(stage.params) for stage in stages},
        "seed": run.seed,
        "budget": suite.budget.as_dict(),
        "training": suite.training.identity(),
        "quick": suite.quick,
    }


def new_row(
    suite: Suite, rid: str, identity: dict[str, Any], method: Method, started_at: datetime, environment: dict[str, Any]
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": rid,
        "suite": suite.name,
        "identity": identity,
        "label": method.label(),
        "family": method.family.value if hasattr(method.family, "value") else str(method.family),
        "status": None,
        "reason": None,
        "environment": environment,
        "timings": {"started_at": started_at.isoformat()},
    }


@dataclass(frozen=True)
class RunRequest:
    """Everything a worker needs to execute one run; picklable."""

    suite: Suite
    run: RunSpec
    output: Path
    references: dict[str, dict[str, Any]]


def execute_run(request: RunRequest) -> dict[str, Any]:
    """Execute one run and return its row; every exception becomes a failed row.

    This is what executors call, in this process or in a worker.
    """
    suite, run = request.suite, request.run
    identity = run_identity(suite, run)
    rid = run_id(identity)
    method = run.build_method()
    started_at, started = datetime.now(timezone.utc), time.perf_counter()
    row = new_row(suite, rid, identity, method, started_at, capture_environment(suite.training.threads or None))
    progress: dict[str, Any] = {}
    try:
        row.update(_execute(request, method, rid, progress))
        row["status"] = STATUS_OK
    except Exception as error:  # every failure becomes a row; the suite carries on
        row["status"] = STATUS_FAILED
        row["reason"] = f"{type(error).__name__}: {error}"
        if "harness" in progress:  # the epochs spent before the failure, e.g. a dense checkpoint
            row["budget_consumed"] = progress["harness"].ledger.as_dict()
        if not isinstance(error, CompressBenchError):
            row["traceback"] = traceback.format_exc(limit=-8)
        logger.error("run %s failed: %s", rid, row["reason"])

    row["timings"]["total_s"] = round(time.perf_counter() - started, 3)
    row["timings"]["finished_at"] = datetime.now(timezone.utc).isoformat()
    return row


def _execute(request: RunRequest, method: Method, rid: str, progress: dict[str, Any]) -> dict[str, Any]:
    suite, run, output = request.suite, request.run, request.output
    _check_available(method)
    task = _load_task_cached(run.task)
    # Hyperparameter tuning, when budget.tuning_trials > 0 and the method has a search space.
    method, tuning = tune_before_run(suite, run, task, method, rid, output)
    harness = Harness(
        task,
        method,
        suite.budget,
        suite.training,
        run.seed,
        workdir=output / "work" / rid,
        cache_dir=output / "cache",
        references=request.references,
    )
    progress["harness"] = harness
    outcome = harness.run()
    measured = evaluate_outcome(
        harness, outcome, suite, onnx_path=output / "onnx" / f"{rid}.onnx", dense_row=request.references.get("dense")
    )
    measured["timings"] = {"train_s": round(outcome.train_seconds, 3), **measured.pop("timings", {})}
    measured["history"] = outcome.history
    measured["budget_consumed"] = harness.ledger.as_dict()
    measured["diagnostics"] = outcome.context.diagnostics
    measured["test_reads"] = harness.test_reads
    if tuning is not None:
        measured["tuning"] = tuning
    return measured


def _check_available(method: Method) -> None:
    stages = method.stages if isinstance(method, Pipeline) else [method]
    for stage in stages:
        ok, why = type(stage).available()
        if not ok:
            raise CompressBenchError(f"method {stage.name!r} is unavailable: {why}")


_TASK_CACHE: dict[TaskSpec, Task | CompressBenchError] = {}


def _load_task_cached(spec: TaskSpec) -> Task:
    """Load each task once per process; a data error is remembered and raised again."""
    if spec not in _TASK_CACHE:
        try:
            _TASK_CACHE[spec] = load_task(spec)
        except DataError as error:
            _TASK_CACHE[spec] = error
    task = _TASK_CACHE[spec]
    if isinstance(task, CompressBenchError):
        raise task
    return task


def _params_dict(params: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(params):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}
    return {}
