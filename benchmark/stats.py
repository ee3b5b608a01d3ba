"""Statistics over seeds: mean, standard deviation, t-intervals, noise tests and Pareto fronts.

Every aggregate that a report prints goes through :func:`describe`, so each number over seeds
comes with the seed count, the sample standard deviation (ddof=1) and a two-sided confidence
interval from Student's t-distribution::

    mean ± t_{1-α/2, n-1} · s / √n

A difference from a reference (dense) is tested with :func:`compare`. When both sides were run
on the same seeds, the runs are paired: seeds fix the data order and, for methods that start
from the dense checkpoint, the start weights, so the per-seed differences cancel that shared
variation. Otherwise Welch's interval for two independent samples is used. A difference whose
interval contains zero is "within noise".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

__all__ = [
    "Difference",
    "Estimate",
    "compare",
    "describe",
    "pareto_front",
    "t_critical",
]

CONFIDENCE = 0.95


def t_critical(dof: float, confidence: float = CONFIDENCE) -> float:
    """Return the two-sided critical value of Student's t with ``dof`` degrees of freedom."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    if dof <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {dof!r}")
    return float(scipy_stats.t.ppf(0.5 + confidence / 2.0, dof))


@dataclass(frozen=True)
class Estimate:
    """A quantity measured over ``n`` seeds; spread fields are NaN when ``n`` is 1."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float:
        """Half the width of the confidence interval (NaN for a single seed)."""
        return (self.ci_high - self.ci_low) / 2.0

    @property
    def has_spread(self) -> bool:
        return self.n > 1 and not math.isnan(self.std)

    def as_dict(self, prefix: str = "") -> dict[str, float | int | None]:
        """Return the fields with NaN as None, keyed ``prefix + field``, for CSV and JSON."""
        values = {
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
        }
        return {f"{prefix}{key}": _none_if_nan(value) for key, value in values.items()}


def describe(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Summarise per-seed ``values``: mean, sample standard deviation and t-interval.

    NaN values are dropped first. Raises :class:`ValueError` when no finite value is left.
    """
    data = np.asarray([v for v in values if v is not None], dtype=np.float64)
    data = data[~np.isnan(data)]
    if data.size == 0:
        raise ValueError("describe() needs at least one value that is not NaN")

    mean = float(data.mean())
    if data.size == 1:
        nan = float("nan")
        return Estimate(n=1, mean=mean, std=nan, ci_low=nan, ci_high=nan, confidence=confidence)

    std = float(data.std(ddof=1))
    half = t_critical(data.size - 1, confidence) * std / math.sqrt(data.size)
    return Estimate(
        n=int(data.size),
        mean=mean,
        std=std,
        ci_low=mean - half,
        ci_high=mean + half,
        confidence=confidence,
    )


@dataclass(frozen=True)
class Difference:
    """``method − reference`` with its confidence interval.

    ``test`` is ``"paired"`` (per-seed differences on common seeds), ``"welch"`` (two
    independent samples) or ``None`` when either side has a single seed, in which case the
    interval is NaN and ``within_noise`` is None: noise cannot be judged from one seed.
    """

    delta: float
    ci_low: float
    ci_high: float
    test: str | None
    n_method: int
    n_reference: int
    confidence: float = CONFIDENCE

    @property
    def within_noise(self) -> bool | None:
        if self.test is None:
            return None
        return self.ci_low <= 0.0 <= self.ci_high

    @property
    def verdict(self) -> str:
        """One of ``within noise``, ``better``, ``worse`` or ``n/a (1 seed)``."""
        noise = self.within_noise
        if noise is None:
            return "n/a (1 seed)"
        if noise:
            return "within noise"
        return "better" if self.delta > 0 else "worse"


def compare(
    method: Mapping[int, float], reference: Mapping[int, float], confidence: float = CONFIDENCE
) -> Difference:
    """Compare per-seed values of a method with a reference, both keyed by seed.

    The test is paired when the method's seeds are all among the reference's and there are at
    least two of them. Otherwise Welch's t-interval is used when both sides have two or more
    seeds. Raises :class:`ValueError` when either side is empty.
    """
    if not method or not reference:
        raise ValueError("compare() needs at least one seed on each side")

    common = sorted(set(method) & set(reference))
    if set(method) <= set(reference) and len(common) >= 2:
        diffs = describe([method[seed] - reference[seed] for seed in common], confidence)
        return Difference(
            diffs.mean,
            diffs.ci_low,
            diffs.ci_high,
            "paired",
            len(method),
            len(reference),
            confidence,
        )

    ours, theirs = (
        describe(list(method.values()), confidence),
        describe(list(reference.values()), confidence),
    )
    delta = ours.mean - theirs.mean
    if ours.n < 2 or theirs.n < 2:
        nan = float("nan")
        return Difference(delta, nan, nan, None, ours.n, theirs.n, confidence)

    low, high = _welch_interval(ours, theirs, confidence)
    return Difference(delta, low, high, "welch", ours.n, theirs.n, confidence)


def _welch_interval(a: Estimate, b: Estimate, confidence: float) -> tuple[float, float]:
    """Welch's interval for ``a.mean − b.mean`` with Welch–Satterthwaite degrees of freedom."""
    var_a, var_b = a.std**2 / a.n, b.std**2 / b.n
    se = math.sqrt(var_a + var_b)
    delta = a.mean - b.mean
    if se == 0.0:
        return delta, delta
    dof = (var_a + var_b) ** 2 / (var_a**2 / (a.n - 1) + var_b**2 / (b.n - 1))
    half = t_critical(dof, confidence) * se
    return delta - half, delta + half


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Return the indices of the points that no other point dominates, by increasing cost.

    Lower cost and higher score are better. A point is dominated when another point is at
    least as good on both and strictly better on one; exact duplicates therefore both stay.
    Points with a NaN or None cost or score are never on the front.
    """
    if len(costs) != len(scores):
        raise ValueError(f"costs and scores differ in length: {len(costs)} != {len(scores)}")

    valid = [
        i
        for i, (c, s) in enumerate(zip(costs, scores, strict=True))
        if c is not None and s is not None and not math.isnan(c) and not math.isnan(s)
    ]
    front = []
    for i in valid:
        dominated = any(
            costs[j] <= costs[i]
            and scores[j] >= scores[i]
            and (costs[j] < costs[i] or scores[j] > scores[i])
            for j in valid
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (costs[i], -scores[i]))


def _none_if_nan(value: float | int) -> float | int | None:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
