"""The l1/l2 regulariser: its three penalties, their invariances, and a whole run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
import pytest
import torch
from onnx import numpy_helper
from support import tiny_suite

from benchmark.runner import SuiteRunner
from methods.base import Family
from methods.l1l2 import l1l2_across, l1l2_norms, l1l2_within
from methods.registry import get_method

PENALTIES = {"l1l2.across": l1l2_across, "l1l2.within": l1l2_within, "l1l2.norms": l1l2_norms}


def _away_from_zero(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Float64 values with |w| in [0.1, 1.1], where |w| is differentiable."""
    generator = torch.Generator().manual_seed(seed)
    magnitude = torch.rand(shape, generator=generator, dtype=torch.float64) + 0.1
    sign = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0).double()
    return magnitude * sign


@pytest.mark.parametrize("name", sorted(PENALTIES))
@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (5, 6)])
@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_gradient_finite_difference(name: str, shape: tuple[int, ...], eps: float) -> None:
    weight = _away_from_zero(shape, seed=len(shape)).requires_grad_(True)
    penalty = PENALTIES[name]
    assert torch.autograd.gradcheck(lambda w: penalty(w, eps), (weight,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(PENALTIES))
@pytest.mark.parametrize("scale", [1e-3, 0.5, 7.0, 1e3])
def test_scale_invariance(name: str, scale: float) -> None:
    weight = _away_from_zero((6, 3, 3, 3), seed=1)
    penalty = PENALTIES[name]
    assert penalty(weight * scale, 0.0).item() == pytest.approx(
        penalty(weight, 0.0).item(), rel=1e-12
    )


def test_across_invariant_with_default_eps() -> None:
    weight = _away_from_zero((8, 4, 3, 3), seed=2).float()
    reference = l1l2_across(weight).item()
    for scale in (0.1, 10.0):
        assert l1l2_across(weight * scale).item() == pytest.approx(reference, rel=1e-5)


def test_values_by_hand() -> None:
    # Filters are rows: (1, 0) and (1, 2).
    weight = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
    across = 2 / math.sqrt(2) + 2 / 2  # columns (1, 1) and (0, 2)
    within = 1 / 1 + 3 / math.sqrt(5)  # rows (1, 0) and (1, 2)
    norms = (1 + math.sqrt(5)) / math.sqrt(1 + 5)  # filter norms (1, √5)
    assert l1l2_across(weight, 0.0).item() == pytest.approx(across)
    assert l1l2_within(weight, 0.0).item() == pytest.approx(within)
    assert l1l2_norms(weight, 0.0).item() == pytest.approx(norms)


def test_across_smallest_for_one_filter_per_coefficient() -> None:
    """Each column costs 1 when one filter carries it and √N when all carry it equally."""
    filters, positions = 4, 6
    spread = torch.ones(filters, positions, dtype=torch.float64)
    concentrated = torch.zeros(filters, positions, dtype=torch.float64)
    concentrated[0] = 1.0
    assert l1l2_across(concentrated, 0.0).item() == pytest.approx(positions)
    assert l1l2_across(spread, 0.0).item() == pytest.approx(positions * math.sqrt(filters))


def test_empty_filters_stay_finite() -> None:
    weight = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    for penalty in PENALTIES.values():
        value = penalty(weight, 1e-8)
        value.backward()
        assert value.item() == 0.0
        assert torch.isfinite(weight.grad).all()
        weight.grad = None


@pytest.mark.parametrize("name", sorted(PENALTIES))
def test_variant_contract(name: str) -> None:
    method_cls = get_method(name)
    assert method_cls.family is Family.REGULARISER
    assert method_cls.start_from == "scratch"
    assert method_cls.main_checkpoint == "last"
    assert method_cls.layer_penalty is PENALTIES[name]
    assert method_cls().params.lam > 0


def test_run_exports_reduced_network(tmp_path: Path) -> None:
    """An absolute threshold above every norm keeps one filter per conv layer, end to end."""
    methods = [{"name": "l1l2.across", "params": {"lam": 1e-3, "absolute_threshold": 1e9}}]
    suite = tiny_suite(tmp_path, methods, epochs=2, finetune_epochs=1, train_limit=200)
    counts = SuiteRunner(suite, tmp_path / "out").run()
    row = json.loads(next((tmp_path / "out" / "rows").glob("*.json")).read_text())
    assert counts["ok"] == 1, row.get("reason")

    assert row["metrics"]["filters"] == {
        "features.0": 1,
        "features.2": 1,
        "classifier.1": 500,
        "classifier.3": 10,
    }
    assert row["diagnostics"]["removal"]["removed"] == {"features.0": 19, "features.2": 49}
    assert row["export"]["parity"]["passed"]

    graph = onnx.load(row["export"]["path"]).graph
    shapes = {init.name: numpy_helper.to_array(init).shape for init in graph.initializer}
    conv_out = [shapes[node.input[1]][0] for node in graph.node if node.op_type == "Conv"]
    assert conv_out == [1, 1]
    gemm_in = [shapes[node.input[1]] for node in graph.node if node.op_type == "Gemm"]
    assert (500, 16) in gemm_in or (16, 500) in gemm_in
