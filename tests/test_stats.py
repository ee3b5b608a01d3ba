"""Statistics over seeds: t-intervals, paired and Welch differences, Pareto fronts."""

from __future__ import annotations

import math

import pytest

from benchmark.stats import compare, describe, pareto_front, t_critical


def test_describe_matches_hand_computed_interval() -> None:
    # Values 1, 2, 3, 4: mean 2.5, s = sqrt(5/3) = 1.2909944, s/sqrt(4) = 0.6454972,
    # t(0.975, 3) = 3.1824463 from a t table, so the half width is 2.0542603.
    estimate = describe([1.0, 2.0, 3.0, 4.0])
    assert estimate.n == 4
    assert estimate.mean == pytest.approx(2.5)
    assert estimate.std == pytest.approx(1.2909944, abs=1e-7)
    assert estimate.ci_low == pytest.approx(0.4457397, abs=1e-6)
    assert estimate.ci_high == pytest.approx(4.5542603, abs=1e-6)
    assert estimate.half_width == pytest.approx(2.0542603, abs=1e-6)


def test_t_critical_matches_table() -> None:
    assert t_critical(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_critical(2) == pytest.approx(4.3027, abs=1e-4)
    assert t_critical(30) == pytest.approx(2.0423, abs=1e-4)
    assert t_critical(9, confidence=0.99) == pytest.approx(3.2498, abs=1e-4)


def test_t_critical_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="confidence"):
        t_critical(3, confidence=1.5)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_critical(0)


def test_describe_single_seed_has_no_spread() -> None:
    estimate = describe([0.97])
    assert estimate.n == 1
    assert estimate.mean == pytest.approx(0.97)
    assert math.isnan(estimate.std)
    assert math.isnan(estimate.ci_low)
    assert not estimate.has_spread
    assert estimate.as_dict("test_")["test_std"] is None


def test_describe_drops_nan_and_rejects_empty() -> None:
    assert describe([1.0, float("nan"), 3.0]).n == 2
    with pytest.raises(ValueError, match="at least one value"):
        describe([float("nan")])


def test_compare_paired_within_noise() -> None:
    # Per-seed differences 0, 0.01, 0.02: mean 0.01, s = 0.01, t(0.975, 2) = 4.3026527, so the
    # interval is 0.01 ± 0.0248414 and contains 0.
    method = {0: 0.90, 1: 0.91, 2: 0.92}
    dense = {0: 0.90, 1: 0.90, 2: 0.90}
    diff = compare(method, dense)
    assert diff.test == "paired"
    assert diff.delta == pytest.approx(0.01)
    assert diff.ci_low == pytest.approx(-0.0148414, abs=1e-6)
    assert diff.ci_high == pytest.approx(0.0348414, abs=1e-6)
    assert diff.within_noise is True
    assert diff.verdict == "within noise"


def test_compare_paired_detects_worse() -> None:
    diff = compare({0: 0.95, 1: 0.951, 2: 0.949}, {0: 0.98, 1: 0.982, 2: 0.979})
    assert diff.test == "paired"
    assert diff.within_noise is False
    assert diff.verdict == "worse"


def test_compare_welch_matches_scipy() -> None:
    # Different seeds force Welch's interval; scipy's ttest_ind(equal_var=False) gives
    # [-5.7317115, -1.2682885] with 4.959 degrees of freedom.
    diff = compare({0: 1.0, 1: 2.0, 2: 3.0}, {10: 4.0, 11: 5.0, 12: 6.0, 13: 7.0})
    assert diff.test == "welch"
    assert diff.delta == pytest.approx(-3.5)
    assert diff.ci_low == pytest.approx(-5.7317115, abs=1e-6)
    assert diff.ci_high == pytest.approx(-1.2682885, abs=1e-6)
    assert diff.verdict == "worse"


def test_compare_one_seed_cannot_judge_noise() -> None:
    diff = compare({0: 0.97}, {0: 0.98, 1: 0.97, 2: 0.99})
    assert diff.test is None
    assert diff.delta == pytest.approx(0.97 - 0.98)
    assert diff.within_noise is None
    assert diff.verdict == "n/a (1 seed)"


def test_compare_rejects_empty_side() -> None:
    with pytest.raises(ValueError, match="at least one seed"):
        compare({}, {0: 0.9})


def test_pareto_front_on_hand_made_table() -> None:
    #        cost   score
    table = [
        (1.0, 0.90),  # 0: front
        (2.0, 0.95),  # 1: front
        (2.0, 0.93),  # 2: dominated by 1 (same cost, lower score)
        (3.0, 0.94),  # 3: dominated by 1
        (4.0, 0.97),  # 4: front
        (0.5, 0.80),  # 5: front, the cheapest
        (5.0, 0.97),  # 6: dominated by 4 (same score, higher cost)
        (float("nan"), 0.99),  # 7: never on the front
    ]
    costs = [c for c, _ in table]
    scores = [s for _, s in table]
    assert pareto_front(costs, scores) == [5, 0, 1, 4]


def test_pareto_front_keeps_duplicates_and_checks_lengths() -> None:
    assert pareto_front([1.0, 1.0], [0.9, 0.9]) == [0, 1]
    assert pareto_front([], []) == []
    with pytest.raises(ValueError, match="differ in length"):
        pareto_front([1.0], [0.9, 0.8])
