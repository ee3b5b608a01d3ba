"""Aggregate result rows over seeds: one summary per task and method label.

Rows are grouped by task and by method label (the method name plus the parameters that differ
from its defaults), so each swept value is its own line. Every quantity measured per seed is
an :class:`~benchmark.stats.Estimate`, and the test metric is compared with dense by
:func:`~benchmark.stats.compare`. Rows of one task that ran under different budgets are never
pooled: each budget gets its own task key.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from benchmark.report.latency import LatencySummary, summarise_latency
from benchmark.results import STATUS_OK
from benchmark.stats import Difference, Estimate, compare, describe

__all__ = [
    "DENSE",
    "MethodSummary",
    "SearchFront",
    "Sweep",
    "TaskReport",
    "find_sweeps",
    "flat_params",
    "search_fronts",
    "summarise_rows",
    "task_label",
]

logger = logging.getLogger(__name__)

DENSE = "dense"


@dataclass
class MethodSummary:
    """One method label on one task, aggregated over its seeds."""

    task: str
    label: str
    method: str
    family: str
    params: dict[str, Any]
    metric: str
    seeds: list[int]
    test_by_seed: dict[int, float]
    test: Estimate
    val: Estimate | None
    params_count: Estimate | None
    macs: Estimate | None
    nonzero_params: Estimate | None
    nonzero_macs: Estimate | None
    onnx_bytes: Estimate | None
    # Per layer, in model order: the median over seeds of the output filters (or neurons).
    filters: dict[str, float]
    epochs: float | None
    epochs_by_kind: dict[str, float]
    tuning_trials: float | None
    latency: list[LatencySummary]
    flags: dict[str, int]
    rows: list[dict[str, Any]] = field(repr=False, default_factory=list)
    # Filled by :func:`summarise_rows` once dense is known.
    versus_dense: Difference | None = None
    params_reduction: float | None = None
    macs_reduction: float | None = None

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def is_dense(self) -> bool:
        return self.label == DENSE


@dataclass
class TaskReport:
    """Everything a report shows for one task: the summaries, dense first, and failed rows."""

    task: str
    metric: str
    summaries: list[MethodSummary]
    failed: list[dict[str, Any]]
    budget: dict[str, Any] | None

    @property
    def dense(self) -> MethodSummary | None:
        return next((s for s in self.summaries if s.is_dense), None)

    @property
    def seeds(self) -> list[int]:
        return sorted({seed for s in self.summaries for seed in s.seeds})


def task_label(row: Mapping[str, Any]) -> str:
    """Return the task's name, with its class subset when it has one."""
    task = row["identity"]["task"]
    if task.get("classes"):
        return f"{task['name']}[classes={','.join(map(str, task['classes']))}]"
    return task["name"]


def flat_params(identity_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Flatten ``{stage: {param: value}}``: plain names for one stage, ``stage.param`` for more."""
    if not identity_params:
        return {}
    stages = [(stage, values or {}) for stage, values in identity_params.items()]
    if len(stages) == 1:
        return dict(stages[0][1])
    return {f"{stage}.{key}": value for stage, values in stages for key, value in values.items()}


def summarise_rows(
    rows: Iterable[Mapping[str, Any]], reference_core: str | None = None
) -> list[TaskReport]:
    """Group rows by task and label, aggregate over seeds, and compare each label with dense.

    ``reference_core`` names an Arm core whose roofline bound is computed for devices whose
    rows carry none (see :func:`~benchmark.report.latency.summarise_latency`).
    """
    by_task = _group_by_task(list(rows))
    reports = []
    for key, members in sorted(by_task.items()):
        ok = [row for row in members if row.get("status") == STATUS_OK and _has_test_metric(row)]
        failed = [row for row in members if row.get("status") != STATUS_OK]
        failed.sort(key=lambda row: (str(row.get("label")), row["identity"]["seed"]))
        broken = [
            row for row in members if row.get("status") == STATUS_OK and not _has_test_metric(row)
        ]
        for row in broken:
            logger.warning(
                "row %s of %s is ok but has no test metric; left out", row.get("run_id"), key
            )

        by_label: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for row in ok:
            by_label[row.get("label") or row["identity"]["method"]].append(row)
        summaries = [
            _summarise(key, label, group, reference_core) for label, group in by_label.items()
        ]
        summaries.sort(key=lambda s: (not s.is_dense, s.family, s.label))
        _compare_with_dense(summaries)

        metric = summaries[0].metric if summaries else "accuracy"
        budget = members[0]["identity"].get("budget")
        reports.append(
            TaskReport(task=key, metric=metric, summaries=summaries, failed=failed, budget=budget)
        )
    return reports


def _has_test_metric(row: Mapping[str, Any]) -> bool:
    value = (row.get("metrics") or {}).get("test_metric")
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _group_by_task(rows: list[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Key rows by task label; a task run under several budgets gets one key per budget."""
    by_task: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_task[task_label(row)].append(row)

    keyed: dict[str, list[Mapping[str, Any]]] = {}
    for task, members in by_task.items():
        variants: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for row in members:
            variants[_budget_text(row["identity"])].append(row)
        if len(variants) == 1:
            keyed[task] = members
            continue
        logger.warning(
            "task %s has rows from %d budgets (%s); each gets its own table",
            task,
            len(variants),
            ", ".join(variants),
        )
        for text, group in variants.items():
            keyed[f"{task} ({text})"] = group
    return keyed


def _budget_text(identity: Mapping[str, Any]) -> str:
    budget = identity.get("budget") or {}
    text = ", ".join(f"{key}={value}" for key, value in sorted(budget.items()))
    return f"{text}, quick" if identity.get("quick") else text


def _summarise(
    task: str, label: str, rows: list[Mapping[str, Any]], reference_core: str | None
) -> MethodSummary:
    rows = sorted(rows, key=lambda row: row["identity"]["seed"])
    metrics = [row.get("metrics") or {} for row in rows]
    first = rows[0]
    test_by_seed = {}
    for row, m in zip(rows, metrics, strict=True):
        test_by_seed[row["identity"]["seed"]] = float(m["test_metric"])
    if len(test_by_seed) < len(rows):
        logger.warning(
            "%s on %s has several rows for one seed; the last row of each seed is used", label, task
        )
    consumed = [row.get("budget_consumed") or {} for row in rows]

    return MethodSummary(
        task=task,
        label=label,
        method=first["identity"]["method"],
        family=first.get("family") or "",
        params=flat_params(first["identity"].get("params")),
        metric=metrics[0].get("metric", "accuracy"),
        seeds=sorted(test_by_seed),
        test_by_seed=test_by_seed,
        test=describe(list(test_by_seed.values())),
        val=_estimate(m.get("val_metric") for m in metrics),
        params_count=_estimate(m.get("params") for m in metrics),
        macs=_estimate(m.get("macs") for m in metrics),
        nonzero_params=_estimate(m.get("nonzero_params") for m in metrics),
        nonzero_macs=_estimate(m.get("nonzero_macs") for m in metrics),
        onnx_bytes=_estimate((row.get("export") or {}).get("onnx_bytes") for row in rows),
        filters=_median_filters(metrics),
        epochs=_mean_of(c.get("epochs") for c in consumed),
        epochs_by_kind=_mean_by_kind(c.get("epochs_by_kind") or {} for c in consumed),
        tuning_trials=_mean_of(c.get("tuning_trials") for c in consumed),
        latency=summarise_latency(rows, reference_core),
        flags=_count_flags(rows),
        rows=list(rows),
    )


def _estimate(values: Iterable[Any]) -> Estimate | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return describe(numbers) if numbers else None


def _mean_of(values: Iterable[Any]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.fmean(numbers) if numbers else None


def _mean_by_kind(tables: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    tables = list(tables)
    kinds = sorted({kind for table in tables for kind in table})
    return {
        kind: statistics.fmean(float(table.get(kind, 0.0)) for table in tables) for kind in kinds
    }


def _median_filters(metrics: list[Mapping[str, Any]]) -> dict[str, float]:
    """Median filters per layer over seeds; a layer missing from a seed counts as 0 there."""
    layers: list[str] = []
    for m in metrics:
        for layer in m.get("filters") or {}:
            if layer not in layers:
                layers.append(layer)
    return {
        layer: float(statistics.median((m.get("filters") or {}).get(layer, 0) for m in metrics))
        for layer in layers
    }


def _count_flags(rows: list[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        for flag in row.get("flags") or []:
            counts[str(flag)] += 1
    return dict(counts)


def _compare_with_dense(summaries: list[MethodSummary]) -> None:
    dense = next((s for s in summaries if s.is_dense), None)
    if dense is None:
        return
    for summary in summaries:
        if not summary.is_dense:
            summary.versus_dense = compare(summary.test_by_seed, dense.test_by_seed)
        summary.params_reduction = _ratio(dense.params_count, summary.params_count)
        summary.macs_reduction = _ratio(dense.macs, summary.macs)


def _ratio(dense: Estimate | None, method: Estimate | None) -> float | None:
    if dense is None or method is None or method.mean <= 0:
        return None
    return dense.mean / method.mean


@dataclass
class Sweep:
    """Labels of one method that differ only in the numeric parameter ``parameter``."""

    method: str
    parameter: str
    fixed: dict[str, Any]
    values: list[float]
    summaries: list[MethodSummary]
    # The method name, plus the fixed parameters that tell sweeps of one method apart.
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.method


def find_sweeps(summaries: Iterable[MethodSummary]) -> list[Sweep]:
    """Find parameter sweeps: labels of one method that differ in exactly one numeric parameter.

    For every method and every numeric parameter, labels are grouped by all their other
    parameters. A group with two or more distinct values of that parameter is a sweep, so a
    grid over two parameters yields one sweep per value of the other parameter.
    """
    by_method: dict[str, list[MethodSummary]] = defaultdict(list)
    for summary in summaries:
        if not summary.is_dense:
            by_method[summary.method].append(summary)

    sweeps = []
    for method, members in sorted(by_method.items()):
        if len(members) < 2:
            continue
        keys = sorted({key for s in members for key in s.params if _is_number(s.params[key])})
        for key in keys:
            sweeps.extend(_sweeps_over(method, key, members))
    _name_sibling_sweeps(sweeps)
    return sweeps


def _sweeps_over(method: str, key: str, members: list[MethodSummary]) -> list[Sweep]:
    groups: dict[str, list[MethodSummary]] = defaultdict(list)
    fixed_of: dict[str, dict[str, Any]] = {}
    for summary in members:
        if not _is_number(summary.params.get(key)):
            continue
        fixed = {k: v for k, v in summary.params.items() if k != key}
        text = repr(sorted(fixed.items(), key=lambda item: item[0]))
        groups[text].append(summary)
        fixed_of[text] = fixed

    sweeps = []
    for text, group in groups.items():
        group.sort(key=lambda s: s.params[key])
        values = [float(s.params[key]) for s in group]
        if len(set(values)) >= 2:
            sweeps.append(Sweep(method, key, fixed_of[text], values, group))
    return sweeps


def _name_sibling_sweeps(sweeps: list[Sweep]) -> None:
    """Name sweeps of one method and parameter by the fixed values that tell them apart."""
    siblings: dict[tuple[str, str], list[Sweep]] = defaultdict(list)
    for sweep in sweeps:
        siblings[(sweep.method, sweep.parameter)].append(sweep)
    for group in siblings.values():
        if len(group) < 2:
            continue
        varying = sorted(
            {
                k
                for s in group
                for k, v in s.fixed.items()
                if any(o.fixed.get(k) != v for o in group)
            }
        )
        for sweep in group:
            detail = ", ".join(f"{k}={sweep.fixed.get(k)}" for k in varying)
            sweep.name = f"{sweep.method}({detail})"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class SearchFront:
    """The Pareto front that one search row recorded, as (cost, score) points."""

    label: str
    seed: int
    cost_key: str
    score_key: str
    points: list[tuple[float, float]]
    # All trials the row recorded, when it kept them; drawn behind the front.
    trials: list[tuple[float, float]]
    # The architecture the method retrained, as (cost, score), when the row records it.
    selected: tuple[float, float] | None


_SCORE_KEYS = ("val_metric", "accuracy", "val_accuracy", "score", "value")
# "cost" first: a search stores there the objective it minimised (MACs or latency), so the front
# is drawn in the space where it is a front.
_COST_KEYS = ("cost", "macs", "latency_us", "latency_ms", "latency", "params")
_TRIAL_KEYS = ("trials", "trials_table", "all_trials")


def search_fronts(summary: MethodSummary) -> list[SearchFront]:
    """Read the Pareto front from each row's diagnostics, where a search method stores it.

    The front is the first entry whose key contains ``pareto``, in the diagnostics or in one
    dict nested in them (``diagnostics["search"]["pareto_front"]``, say). It is a list of
    trials, each a dict with a score (``val_metric``, ``accuracy``, ...) and a cost (``cost``,
    ``macs``, ``latency_ms``, ...) or an Optuna-style ``values`` pair [score, cost]. Next to
    it, ``trials`` or ``trials_table`` lists every trial, ``selected`` the retrained one, and
    ``cost_unit`` names the cost. Rows without a front give nothing.
    """
    fronts = []
    for row in summary.rows:
        container, key = _pareto_container(row.get("diagnostics") or {})
        if container is None:
            continue
        entries = container[key]
        if isinstance(entries, Mapping):
            entries = entries.get("trials") or entries.get("points") or []
        front = _front_points(entries) if isinstance(entries, list) else None
        if front is None:
            seed = row["identity"]["seed"]
            logger.info(
                "%s seed %s: diagnostics %r has no score and cost fields", summary.label, seed, key
            )
            continue

        cost_key, score_key, points = front
        trial_list = next(
            (container[k] for k in _TRIAL_KEYS if isinstance(container.get(k), list)), []
        )
        trials = _front_points(trial_list, cost_key, score_key)
        unit = container.get("cost_unit")
        fronts.append(
            SearchFront(
                label=summary.label,
                seed=row["identity"]["seed"],
                cost_key=f"{cost_key} ({unit})" if unit and cost_key == "cost" else cost_key,
                score_key=score_key,
                points=points,
                trials=trials[2] if trials else [],
                selected=_selected_point(container, cost_key, score_key),
            )
        )
    return fronts


def _pareto_container(diagnostics: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, str]:
    """Return the dict with a ``pareto`` key and that key: the diagnostics or a dict in them."""
    for candidate in (diagnostics, *(v for v in diagnostics.values() if isinstance(v, Mapping))):
        key = next(
            (k for k in candidate if "pareto" in str(k).lower() and _is_front(candidate[k])), None
        )
        if key is not None:
            return candidate, key
    return None, ""


def _is_front(value: Any) -> bool:
    return isinstance(value, list) or (
        isinstance(value, Mapping) and ("trials" in value or "points" in value)
    )


def _front_points(
    entries: list[Any], cost_key: str | None = None, score_key: str | None = None
) -> tuple[str, str, list[tuple[float, float]]] | None:
    dicts = [e for e in entries if isinstance(e, Mapping)]
    if not dicts:
        return None
    sample = {k for e in dicts for k in e}
    if score_key is None:
        score_key = next((k for k in _SCORE_KEYS if k in sample), None)
    if cost_key is None:
        cost_key = next((k for k in _COST_KEYS if k in sample), None)
    if (score_key is None or cost_key is None) and "values" in sample:
        score_key, cost_key = "values[0]", "values[1]"
    if score_key is None or cost_key is None:
        return None
    points = []
    for entry in dicts:
        cost, score = _field(entry, cost_key), _field(entry, score_key)
        if cost is not None and score is not None:
            points.append((cost, score))
    return (cost_key, score_key, points) if points else None


def _field(entry: Mapping[str, Any], key: str) -> float | None:
    if key.startswith("values["):
        values = entry.get("values")
        index = int(key[len("values[") : -1])
        value = values[index] if isinstance(values, list) and len(values) > index else None
    else:
        value = entry.get(key)
    return float(value) if _is_number(value) else None


def _selected_point(
    container: Mapping[str, Any], cost_key: str, score_key: str
) -> tuple[float, float] | None:
    selected = container.get("selected")
    if isinstance(selected, Mapping):
        cost, score = _field(selected, cost_key), _field(selected, score_key)
        if cost is not None and score is not None:
            return cost, score
    return None
