"""Compression targets shared by the pruning methods: MACs or parameter ratios, and ``match``.

A pruning run states how much to keep in one of four ways, at most one per run:

- its own amount (``sparsity`` for unstructured pruning, ``pruning_ratio`` for filters);
- ``target_macs_ratio``: MACs of the final model divided by MACs of the dense model;
- ``target_params_ratio``: the same for parameters;
- ``match = "<method>"``: the MACs of that method's finished result for the same task and
  seed, divided by the dense MACs, so two methods can be compared at equal compute.

When none is given, the target is :data:`DEFAULT_TARGET_MACS_RATIO`. Unstructured pruning
compares *nonzero* counts with the dense counts, structured pruning the counts of the
physically smaller model. A target is met when the achieved count is within ``tolerance``
(relative, 2% by default) of the target count. The result row records the relative error in
``diagnostics["pruning"]["target"]``, so a missed target shows by how much it missed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from benchmark.errors import MethodError
from benchmark.measure.complexity import Complexity

__all__ = [
    "DEFAULT_TARGET_MACS_RATIO",
    "SCHEDULES",
    "SCOPES",
    "ScheduledTargetParams",
    "SearchResult",
    "Target",
    "TargetParams",
    "bisect_amount",
    "check_target_fields",
    "resolve_target",
    "schedule_fractions",
    "split_epochs",
    "target_report",
]

DEFAULT_TARGET_MACS_RATIO = 0.5
SCHEDULES = ("linear", "cubic")
SCOPES = ("global", "layer")


@dataclass(frozen=True)
class Target:
    """The goal of a pruning run: a kept fraction of MACs or parameters, or its own amount."""

    # "macs", "params", or "amount" (the method's own sparsity or pruning ratio).
    kind: str
    # Kept MACs or parameters over the dense ones, or for "amount" the fraction removed.
    ratio: float
    # Origin of the ratio: a parameter name, "default", or "match:<method>".
    source: str

    def count(self, complexity: Complexity, nonzero: bool) -> int:
        """Return the counted quantity of ``complexity`` that this target constrains."""
        if self.kind == "macs":
            return complexity.nonzero_macs if nonzero else complexity.macs
        if self.kind == "params":
            return complexity.nonzero_params if nonzero else complexity.params
        raise ValueError(f"a target of kind {self.kind!r} does not constrain a count")


@dataclass(frozen=True)
class TargetParams:
    """The target fields of every pruning method's parameters. At most one target may be set.

    A subclass declares its own amount field (``sparsity``, ``pruning_ratio``, ...) and names
    it in ``amount_field``.
    """

    amount_field: ClassVar[str]

    # MACs of the final model over the dense MACs; unstructured pruning counts nonzero MACs.
    # It is 0.5 when no target is set.
    target_macs_ratio: float | None = None
    # Parameters of the final model over the dense parameters, counted as for MACs.
    target_params_ratio: float | None = None
    # A method of the same suite whose MACs to match, for the same task and seed.
    match: str | None = None
    # Relative error of the achieved count that still meets a MACs or parameter target.
    tolerance: float = 0.02

    def __post_init__(self) -> None:
        check_target_fields(self)


@dataclass(frozen=True)
class ScheduledTargetParams(TargetParams):
    """Target fields, plus the scope and step schedule of the pruning methods that iterate."""

    # "global" ranks all layers together, "layer" removes the same fraction from each layer.
    scope: str = "global"
    # Pruning steps, which share the fine-tuning epochs between them.
    iterative_steps: int = 1
    # How the removed amount grows over the steps: "linear" or "cubic".
    schedule: str = "linear"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scope not in SCOPES:
            raise ValueError(f"scope = {self.scope!r} is invalid; expected one of {', '.join(SCOPES)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule = {self.schedule!r} is invalid; expected one of {', '.join(SCHEDULES)}"
            )
        if self.iterative_steps < 1:
            raise ValueError(f"iterative_steps = {self.iterative_steps} is invalid; expected 1 or more")


def check_target_fields(params: TargetParams) -> None:
    """Validate the target fields of a parameter dataclass, raising ``ValueError`` if invalid.

    ``parse_params`` turns the ``ValueError`` into a :class:`MethodError` that names the
    suite entry.
    """
    set_fields = []
    for name in (params.amount_field, "target_macs_ratio", "target_params_ratio"):
        value = getattr(params, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(
                f"{name} = {value!r} is invalid; expected a fraction strictly between 0 and 1"
            )
        set_fields.append(name)

    match = params.match
    if match is not None:
        if not isinstance(match, str) or not match:
            raise ValueError(
                f"match = {match!r} is invalid; expected a method name such as 'l1l2.across'"
            )
        set_fields.append("match")
    if len(set_fields) > 1:
        raise ValueError(
            f"{' and '.join(set_fields)} are both set; give at most one target per run"
        )

    if not 0 < params.tolerance < 1:
        raise ValueError(
            f"tolerance = {params.tolerance!r} is invalid; expected a fraction in (0, 1)"
        )


def resolve_target(
    params: TargetParams, references: Mapping[str, Mapping[str, Any]], dense_macs: int
) -> Target:
    """Return the run's target from its parameters, reading ``references`` for ``match``.

    Raises :class:`MethodError` when the matched method has no finished row for this task
    and seed, which happens when it failed or when the suite does not run it.
    """
    amount = getattr(params, params.amount_field)
    if amount is not None:
        return Target("amount", float(amount), params.amount_field)
    if params.target_macs_ratio is not None:
        return Target("macs", float(params.target_macs_ratio), "target_macs_ratio")
    if params.target_params_ratio is not None:
        return Target("params", float(params.target_params_ratio), "target_params_ratio")
    if params.match is not None:
        return Target(
            "macs", _matched_ratio(params.match, references, dense_macs), f"match:{params.match}"
        )
    return Target("macs", DEFAULT_TARGET_MACS_RATIO, "default")


def _matched_ratio(
    name: str, references: Mapping[str, Mapping[str, Any]], dense_macs: int
) -> float:
    row = references.get(name)
    if row is None:
        known = ", ".join(sorted(references)) or "none"
        raise MethodError(
            f"match = {name!r}: no finished result of that method for this task, seed and budget "
            f"(finished results: {known}); it failed or the suite does not run it"
        )
    macs = row["metrics"]["macs"]
    ratio = macs / dense_macs
    if not 0 < ratio < 1:
        raise MethodError(
            f"match = {name!r}: its model has {macs} MACs against {dense_macs} for the dense "
            f"model (ratio {ratio:.3f}); there is nothing to match below the dense model"
        )
    return ratio


@dataclass
class SearchResult:
    """The amount a bisection chose and the relative error of its count against the target."""

    amount: float
    error: float
    evaluations: int


def bisect_amount(
    count_at: Callable[[float], int],
    target_count: float,
    upper: float,
    tolerance: float,
    max_evaluations: int = 24,
) -> SearchResult:
    """Find the pruned amount in ``[0, upper]`` whose count is closest to ``target_count``.

    ``count_at(amount)`` returns the kept MACs or parameters after removing ``amount``, and
    it must not increase with ``amount``. The search stops when a count is within a quarter of
    ``tolerance`` of the target, or after ``max_evaluations``; the closest amount seen wins.
    """
    best = SearchResult(0.0, math.inf, 0)
    low, high = 0.0, upper
    at_upper = count_at(upper)
    best = _closer(best, upper, at_upper, target_count, 1)
    if at_upper > target_count:  # the target lies beyond the largest allowed amount
        return best

    for evaluation in range(2, max_evaluations + 1):
        middle = (low + high) / 2
        count = count_at(middle)
        best = _closer(best, middle, count, target_count, evaluation)
        if abs(best.error) <= tolerance / 4 or high - low < 1e-6:
            break
        if count > target_count:
            low = middle
        else:
            high = middle
    return best


def _closer(
    best: SearchResult, amount: float, count: int, target: float, evaluation: int
) -> SearchResult:
    error = count / target - 1
    if abs(error) < abs(best.error):
        return SearchResult(amount, error, evaluation)
    best.evaluations = evaluation
    return best


def schedule_fractions(steps: int, schedule: str) -> list[float]:
    """Return the fraction of the final pruning reached after each of ``steps`` steps.

    ``"linear"`` spaces the steps evenly. ``"cubic"`` is the gradual schedule of Zhu and
    Gupta ("To prune, or not to prune", ICLR Workshops 2018): ``1 - (1 - k / n)**3`` after
    step ``k`` of ``n``, which prunes fast first and slowly near the end.
    """
    if steps < 1:
        raise ValueError(f"iterative_steps must be at least 1, got {steps}")
    if schedule == "linear":
        return [k / steps for k in range(1, steps + 1)]
    if schedule == "cubic":
        return [1 - (1 - k / steps) ** 3 for k in range(1, steps + 1)]
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def split_epochs(available: int, steps: int) -> int:
    """Return the epochs to train after each pruning step but the last.

    With ``available`` fine-tuning epochs and ``steps`` steps, each of the first
    ``steps - 1`` steps is followed by ``available // steps`` epochs, and the fine-tuning
    phase gets the rest. With fewer epochs than steps this is 0, and the steps prune back to
    back.
    """
    return max(0, available) // steps


def target_report(
    target: Target, dense: Complexity, achieved: Complexity, nonzero: bool, tolerance: float
) -> dict[str, Any]:
    """Describe how well ``achieved`` meets ``target``, for ``diagnostics["pruning"]["target"]``.

    ``error`` is the achieved count over the target count, minus one. For example ``+0.031``
    means that 3.1% more MACs (or parameters) are kept than the target requests.
    """
    macs = achieved.nonzero_macs if nonzero else achieved.macs
    params = achieved.nonzero_params if nonzero else achieved.params
    report: dict[str, Any] = {
        "kind": target.kind,
        "ratio": target.ratio,
        "source": target.source,
        "counted": "nonzero" if nonzero else "dense",
        "macs_ratio": macs / dense.macs,
        "params_ratio": params / dense.params,
        "tolerance": tolerance,
    }
    if target.kind in ("macs", "params"):
        wanted = target.ratio * (dense.macs if target.kind == "macs" else dense.params)
        error = target.count(achieved, nonzero) / wanted - 1
        report["error"] = error
        report["met"] = abs(error) <= tolerance
    return report
