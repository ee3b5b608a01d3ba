"""Unstructured magnitude pruning: masks, targets on nonzero counts, masks kept in fine-tuning."""

from __future__ import annotations

import pytest
import torch
from support import tiny_suite_table

from benchmark.config import parse_suite
from benchmark.errors import MethodError
from benchmark.results import ResultStore
from benchmark.runner import SuiteRunner
from methods.base import parse_params
from methods.magnitude import MagnitudePruning, magnitude_masks


def test_global_masks_remove_exact_share() -> None:
    weights = [torch.randn(20, 1, 5, 5), torch.randn(50, 20, 5, 5)]
    masks = magnitude_masks(weights, 0.75, "global")
    total = sum(w.numel() for w in weights)
    assert sum(int((m == 0).sum()) for m in masks) == round(0.75 * total)
    kept = torch.cat([w[m.bool()].abs() for w, m in zip(weights, masks, strict=True)])
    removed = torch.cat([w[~m.bool()].abs() for w, m in zip(weights, masks, strict=True)])
    assert float(removed.max()) <= float(kept.min())


def test_layer_masks_prune_each_layer_equally() -> None:
    weights = [torch.randn(8, 4), torch.randn(100, 10)]
    masks = magnitude_masks(weights, 0.5, "layer")
    assert [int((m == 0).sum()) for m in masks] == [16, 500]


def test_global_masks_keep_one_weight_per_layer() -> None:
    weights = [torch.full((4, 4), 1e-6), torch.randn(64, 64) + 10]
    masks = magnitude_masks(weights, 0.5, "global")
    assert int(masks[0].sum()) == 1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"sparsity": 0.9, "target_macs_ratio": 0.5}, "at most one target"),
        ({"sparsity": 1.5}, "sparsity"),
        ({"match": ""}, "match"),
        ({"scope": "row"}, "scope"),
        ({"iterative_steps": 0}, "iterative_steps"),
    ],
)
def test_params_reject_invalid(values: dict, message: str) -> None:
    with pytest.raises(MethodError, match=message):
        parse_params(MagnitudePruning, values, "test")


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("magnitude")
    methods = [
        {"name": "dense"},
        {"name": "magnitude", "params": {"target_macs_ratio": 0.3}},
        {"name": "magnitude", "params": {"sparsity": 0.8, "scope": "layer", "iterative_steps": 2}},
    ]
    table = tiny_suite_table(methods, epochs=4, finetune_epochs=2, train_limit=200)
    SuiteRunner(parse_suite(table, folder / "magnitude.toml"), folder / "out").run()
    return {row["label"]: row for row in ResultStore(folder / "out").rows()}


def test_macs_target_met_on_nonzero_macs(rows: dict[str, dict]) -> None:
    row = rows["magnitude(target_macs_ratio=0.3)"]
    assert row["status"] == "ok", row["reason"]
    dense_macs = rows["dense"]["metrics"]["macs"]
    assert row["metrics"]["nonzero_macs"] == pytest.approx(0.3 * dense_macs, rel=0.02)
    assert row["diagnostics"]["pruning"]["target"]["met"]


def test_weights_stay_dense_tensors(rows: dict[str, dict]) -> None:
    row = rows["magnitude(target_macs_ratio=0.3)"]
    assert row["metrics"]["macs"] == rows["dense"]["metrics"]["macs"]
    assert row["metrics"]["params"] == rows["dense"]["metrics"]["params"]
    assert row["export"]["parity"]["passed"]


def test_iterative_layer_sparsity_survives_finetuning(rows: dict[str, dict]) -> None:
    row = rows["magnitude(scope=layer, iterative_steps=2, sparsity=0.8)"]
    assert row["status"] == "ok", row["reason"]
    pruning = row["diagnostics"]["pruning"]
    assert [step["sparsity"] for step in pruning["steps"]] == pytest.approx([0.7, 0.8])
    assert pruning["epochs_between_steps"] == 1
    for layer, sparsity in pruning["layer_sparsity"].items():
        assert sparsity == pytest.approx(0.8, abs=0.01), layer
    assert row["budget_consumed"]["epochs_by_kind"] == {"pretrain": 2, "finetune": 2}
