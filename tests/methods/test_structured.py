"""Structured filter pruning: targets, round_to, ONNX parity on LeNet, VGG and ResNet."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support import tiny_suite_table, write_cifar_folder

from benchmark.config import parse_suite
from benchmark.errors import MethodError
from benchmark.results import ResultStore
from benchmark.runner import SuiteRunner
from benchmark.tasks.models import build_model
from methods.base import parse_params
from methods.structured import (
    GroupScores,
    L1FilterPruning,
    apply_plan,
    plan_removal,
    round_channels,
)
from methods.targets import resolve_target

CLASSIFIERS = {"classifier.3", "fc"}


def run_suite(folder: Path, methods: list[dict], **options) -> dict[str, dict]:
    table = tiny_suite_table(methods, **options)
    SuiteRunner(parse_suite(table, folder / "suite.toml"), folder / "out").run()
    return {row["label"]: row for row in ResultStore(folder / "out").rows()}


def assert_ok(row: dict) -> None:
    assert row["status"] == "ok", row["reason"]
    assert row["export"]["parity"]["passed"], row["export"]["parity"]


def hidden_filters(row: dict) -> dict[str, int]:
    return {
        name: count for name, count in row["metrics"]["filters"].items() if name not in CLASSIFIERS
    }


@pytest.mark.parametrize(
    ("keep", "channels", "round_to", "expected"),
    [(19, 20, 8, 16), (13, 50, 8, 16), (3, 50, 8, 8), (50, 50, 16, 48), (5, 6, 8, 6), (7, 9, 1, 7)],
)
def test_round_channels(keep: int, channels: int, round_to: int, expected: int) -> None:
    assert round_channels(keep, channels, round_to) == expected


def test_round_channels_respects_minimum() -> None:
    assert round_channels(11, 130, 8) == 8
    assert round_channels(11, 130, 8, minimum=11) == 16


def test_global_plan_ranks_across_groups() -> None:
    groups = [
        GroupScores("a", torch.tensor([0.1, 0.2, 3.0, 4.0]), 4),
        GroupScores("b", torch.tensor([1.0, 2.0, 0.05, 5.0]), 4),
    ]
    plan = plan_removal(groups, 0.375, "global", 1, 0.9)
    assert plan == {"a": [0, 1], "b": [2]}


def test_plan_respects_max_layer_ratio() -> None:
    groups = [
        GroupScores("a", torch.arange(10.0), 10),
        GroupScores("b", torch.arange(10.0) + 100, 10),
    ]
    plan = plan_removal(groups, 0.5, "global", 1, 0.5)
    assert len(plan["a"]) == 5


def test_apply_plan_prunes_resnet_residual_group() -> None:
    model = build_model("resnet56", width_mult=0.25).eval()
    example = torch.randn(2, 3, 32, 32)
    apply_plan(model, example, {"layer1.0.conv2": [0, 1]})
    assert model.layer1[0].conv2.out_channels == 2
    assert model.conv1.out_channels == 2  # coupled through the residual additions
    assert model(example).shape == (2, 10)


def test_params_reject_two_targets() -> None:
    with pytest.raises(MethodError, match="at most one target"):
        parse_params(L1FilterPruning, {"pruning_ratio": 0.5, "match": "l1l2.across"}, "test")


def test_match_without_reference_fails_clearly() -> None:
    params = parse_params(L1FilterPruning, {"match": "l1l2.across"}, "test")
    with pytest.raises(MethodError, match="no finished result"):
        resolve_target(params, {}, 1000)


@pytest.fixture(scope="module")
def lenet_rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    methods = [
        {"name": "dense"},
        {"name": "filter.random", "params": {"pruning_ratio": 0.4}},
        {"name": "filter.l1", "params": {"match": "filter.random"}},
        {"name": "filter.taylor", "params": {"target_params_ratio": 0.3, "round_to": 8}},
        {
            "name": "filter.lamp",
            "params": {"scope": "layer", "iterative_steps": 2, "target_macs_ratio": 0.4},
        },
    ]
    return run_suite(
        tmp_path_factory.mktemp("lenet"), methods, epochs=4, finetune_epochs=2, train_limit=200
    )


def test_lenet_match_meets_reference_macs(lenet_rows: dict[str, dict]) -> None:
    reference = lenet_rows["filter.random(pruning_ratio=0.4)"]
    row = lenet_rows["filter.l1(match=filter.random)"]
    assert_ok(reference)
    assert_ok(row)
    assert row["metrics"]["macs"] == pytest.approx(reference["metrics"]["macs"], rel=0.02)
    assert row["diagnostics"]["pruning"]["target"]["source"] == "match:filter.random"


def test_lenet_params_target_with_round_to(lenet_rows: dict[str, dict]) -> None:
    row = lenet_rows["filter.taylor(target_params_ratio=0.3, round_to=8)"]
    assert_ok(row)
    dense = lenet_rows["dense"]["metrics"]
    assert row["metrics"]["params"] == pytest.approx(0.3 * dense["params"], rel=0.02)
    assert all(count % 8 == 0 for count in hidden_filters(row).values()), hidden_filters(row)
    assert row["budget_consumed"]["epochs_by_kind"] == {"pretrain": 2, "finetune": 2}


def test_lenet_iterative_layer_scope(lenet_rows: dict[str, dict]) -> None:
    row = lenet_rows["filter.lamp(target_macs_ratio=0.4, scope=layer, iterative_steps=2)"]
    assert_ok(row)
    pruning = row["diagnostics"]["pruning"]
    assert len(pruning["steps"]) == 2
    assert pruning["steps"][0]["macs_ratio"] == pytest.approx(0.7, rel=0.02)
    assert row["metrics"]["macs"] == pytest.approx(
        0.4 * lenet_rows["dense"]["metrics"]["macs"], rel=0.02
    )
    assert row["budget_consumed"]["epochs"] <= 4


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar_folder(root, per_batch=16)
    return str(root)


def cifar_task(name: str, cifar_dir: str, width_mult: float) -> list[dict]:
    return [{"name": name, "data_dir": cifar_dir, "model_options": {"width_mult": width_mult}}]


def test_vgg_macs_target_round_to_and_parity(cifar_dir: str, tmp_path: Path) -> None:
    methods = [
        {"name": "filter.l1", "params": {"target_macs_ratio": 0.5, "round_to": 4}},
        {"name": "filter.bn_scale", "params": {"target_macs_ratio": 0.6}},
    ]
    rows = run_suite(
        tmp_path,
        methods,
        epochs=2,
        finetune_epochs=1,
        tasks=cifar_task("vgg16-cifar10", cifar_dir, 0.25),
    )
    dense_macs = build_dense_macs("vgg16", 0.25)
    l1 = rows["filter.l1(target_macs_ratio=0.5, round_to=4)"]
    assert_ok(l1)
    assert l1["metrics"]["macs"] == pytest.approx(0.5 * dense_macs, rel=0.02)
    assert all(count % 4 == 0 for count in hidden_filters(l1).values()), hidden_filters(l1)
    bn_scale = rows["filter.bn_scale(target_macs_ratio=0.6)"]
    assert_ok(bn_scale)
    assert bn_scale["metrics"]["macs"] == pytest.approx(0.6 * dense_macs, rel=0.02)


@pytest.mark.slow
def test_resnet_macs_target_round_to_and_parity(cifar_dir: str, tmp_path: Path) -> None:
    methods = [{"name": "filter.fpgm", "params": {"target_macs_ratio": 0.6, "round_to": 4}}]
    rows = run_suite(
        tmp_path,
        methods,
        epochs=2,
        finetune_epochs=1,
        tasks=cifar_task("resnet56-cifar10", cifar_dir, 0.5),
    )
    row = rows["filter.fpgm(target_macs_ratio=0.6, round_to=4)"]
    assert_ok(row)
    assert row["metrics"]["macs"] == pytest.approx(
        0.6 * build_dense_macs("resnet56", 0.5), rel=0.02
    )
    assert all(count % 4 == 0 for count in hidden_filters(row).values()), hidden_filters(row)


def test_bn_scale_rejects_model_without_batchnorm(tmp_path: Path) -> None:
    rows = run_suite(
        tmp_path, [{"name": "filter.bn_scale"}], epochs=2, finetune_epochs=1, train_limit=100
    )
    (row,) = rows.values()
    assert row["status"] == "failed"
    assert "BatchNorm" in row["reason"]


def build_dense_macs(model: str, width_mult: float) -> int:
    from benchmark.measure.complexity import count_complexity

    return count_complexity(
        build_model(model, width_mult=width_mult), torch.zeros(1, 3, 32, 32)
    ).macs
