"""Regulariser baselines: penalty values and gradients, parameters, hooks, and whole runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from support import tiny_suite, write_cifar_folder
from torch import nn

from benchmark.budget import Budget, BudgetLedger
from benchmark.errors import MethodError
from benchmark.runner import SuiteRunner
from benchmark.tasks.models import VGG16, LeNet5, LeNet5BN
from methods.base import Family, RunContext, parse_params
from methods.registry import get_method
from methods.regularisers import (
    FilterRegulariser,
    group_hoyer_square,
    group_lasso,
    hoyer_square,
    l1_penalty,
    l2_penalty,
)

PENALTIES = {
    "l1": l1_penalty,
    "l2": l2_penalty,
    "group_lasso": group_lasso,
    "hoyer_square": hoyer_square,
    "group_hs": group_hoyer_square,
}
BASELINES = ("l1", "l2", "group_lasso", "hoyer_square", "group_hs", "slimming")


def _away_from_zero(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Float64 values with |w| in [0.1, 1.1], where |w| is differentiable."""
    generator = torch.Generator().manual_seed(seed)
    magnitude = torch.rand(shape, generator=generator, dtype=torch.float64) + 0.1
    sign = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0).double()
    return magnitude * sign


# -- values and gradients ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PENALTIES))
@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (5, 6)])
def test_penalty_gradient_finite_difference(name: str, shape: tuple[int, ...]) -> None:
    weight = _away_from_zero(shape, seed=len(shape)).requires_grad_(True)
    penalty = PENALTIES[name]
    assert torch.autograd.gradcheck(lambda w: penalty(w, 1e-3), (weight,), eps=1e-6, atol=1e-6)


def test_penalty_values_by_hand() -> None:
    weight = torch.tensor([[1.0, -2.0], [0.0, 3.0]], dtype=torch.float64)
    squared = 1 + 4 + 0 + 9
    assert l1_penalty(weight).item() == pytest.approx(6.0)
    assert l2_penalty(weight).item() == pytest.approx(0.5 * squared)
    assert group_lasso(weight).item() == pytest.approx(math.sqrt(5) + 3)
    assert hoyer_square(weight, 0.0).item() == pytest.approx(36 / squared)

    rows = math.sqrt(5) + 3  # filter norms: ‖(1, -2)‖ and ‖(0, 3)‖
    columns = 1 + math.sqrt(13)  # input-channel norms: ‖(1, 0)‖ and ‖(-2, 3)‖
    assert group_hoyer_square(weight, 0.0).item() == pytest.approx((rows**2 + columns**2) / squared)


def test_group_hs_conv_input_channels() -> None:
    weight = torch.zeros(2, 3, 1, 1, dtype=torch.float64)
    weight[0, 0] = 3.0
    weight[1, 0] = 4.0
    weight[1, 2] = 12.0
    squared = 9 + 16 + 144
    filters = 3 + math.sqrt(16 + 144)
    channels = 5 + 12
    expected = (filters**2 + channels**2) / squared
    assert group_hoyer_square(weight, 0.0).item() == pytest.approx(expected)


def test_hoyer_measures_scale_invariant() -> None:
    weight = _away_from_zero((6, 2, 3, 3), seed=3)
    for penalty in (hoyer_square, group_hoyer_square):
        assert penalty(weight * 50, 0.0).item() == pytest.approx(penalty(weight, 0.0).item())


def test_hoyer_square_bounds() -> None:
    one_hot = torch.zeros(10, dtype=torch.float64)
    one_hot[3] = 2.0
    assert hoyer_square(one_hot, 0.0).item() == pytest.approx(1.0)
    assert hoyer_square(torch.ones(10, dtype=torch.float64), 0.0).item() == pytest.approx(10.0)


# -- registry and parameters ------------------------------------------------------------------


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_contract(name: str) -> None:
    method_cls = get_method(name)
    assert issubclass(method_cls, FilterRegulariser)
    assert method_cls.family is Family.REGULARISER
    assert method_cls.start_from == "scratch"
    assert method_cls.main_checkpoint == "last"
    assert method_cls.uses_finetune
    assert method_cls.summary


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"layers": "linear"}, "layers"),
        ({"weighting": "square"}, "weighting"),
        ({"tau": 1.5}, "tau"),
        ({"lam": -1.0}, "lam"),
        ({"eps": -1e-8}, "eps"),
        ({"absolute_threshold": -0.1}, "absolute_threshold"),
        ({"absolute_threshold": "big"}, "absolute_threshold"),
        ({"lambda": 0.1}, "unknown parameter"),
    ],
)
def test_params_rejected(values: dict[str, object], match: str) -> None:
    with pytest.raises(MethodError, match=match):
        parse_params(get_method("group_lasso"), values, "suite.toml: methods[0]")


def test_params_accept_integer_threshold() -> None:
    params = parse_params(get_method("l1"), {"absolute_threshold": 1, "lam": 0}, "suite.toml")
    assert params.absolute_threshold == 1
    assert params.lam == 0.0


@pytest.mark.parametrize("name", BASELINES)
def test_search_space_in_range(name: str) -> None:
    optuna = pytest.importorskip("optuna")
    method_cls = get_method(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    low, high = method_cls.lam_range
    for _ in range(5):
        trial = study.ask()
        values = method_cls.search_space(trial)
        assert set(values) == {"lam", "tau"}
        assert low <= values["lam"] <= high
        assert 1e-3 <= values["tau"] <= 1e-1
        parse_params(method_cls, values, "optuna")
        study.tell(trial, 0.0)


# -- hooks on a stub harness ---------------------------------------------------------------------


class _StubHarness:
    """The two harness services the regulariser hooks use: example inputs and validation."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.inputs = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0))

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return self.inputs[:batch_size].clone()

    def evaluate(self, model: nn.Module, split: str = "val") -> float:
        return 0.5


def _context(tmp_path: Path, shape: tuple[int, ...]) -> RunContext:
    budget = Budget(epochs=2, finetune_epochs=1)
    return RunContext(
        task_name="stub",
        num_classes=10,
        input_shape=shape,
        seed=0,
        device=torch.device("cpu"),
        budget=budget,
        ledger=BudgetLedger(budget),
        workdir=tmp_path,
        _harness=_StubHarness(shape),
    )


def _method(name: str, **values: object) -> FilterRegulariser:
    method_cls = get_method(name)
    return method_cls(parse_params(method_cls, values, "test"))


def test_layers_conv_excludes_linear(tmp_path: Path) -> None:
    method = _method("l1")
    ctx = _context(tmp_path, (1, 28, 28))
    method.before_training(LeNet5(), ctx)
    assert ctx.diagnostics["penalised_layers"] == ["features.0", "features.2"]


def test_layers_conv_linear_excludes_classifier(tmp_path: Path) -> None:
    method = _method("l1", layers="conv+linear")
    ctx = _context(tmp_path, (1, 28, 28))
    method.before_training(LeNet5(), ctx)
    assert ctx.diagnostics["penalised_layers"] == ["features.0", "features.2", "classifier.1"]


def test_penalty_sums_layers_with_weighting(tmp_path: Path) -> None:
    model = LeNet5()
    ctx = _context(tmp_path, (1, 28, 28))
    plain = _method("group_lasso", lam=0.5)
    weighted = _method("group_lasso", lam=0.5, weighting="per_filter_count")
    plain.before_training(model, ctx)
    weighted.before_training(model, ctx)
    conv1, conv2 = model.features[0].weight, model.features[2].weight

    expected_plain = 0.5 * (group_lasso(conv1) + group_lasso(conv2))
    expected_weighted = 0.5 * (group_lasso(conv1) / 20 + group_lasso(conv2) / 50)
    assert plain.penalty(model, ctx).item() == pytest.approx(expected_plain.item(), rel=1e-6)
    assert weighted.penalty(model, ctx).item() == pytest.approx(expected_weighted.item(), rel=1e-6)


def test_penalty_off_while_finetuning(tmp_path: Path) -> None:
    method = _method("l2")
    ctx = _context(tmp_path, (1, 28, 28))
    model = method.before_training(LeNet5(), ctx)
    ctx.phase = "finetune"
    assert method.penalty(model, ctx) is None


def test_after_training_removes_small_filters(tmp_path: Path) -> None:
    method = _method("group_lasso")
    ctx = _context(tmp_path, (1, 28, 28))
    model = method.before_training(LeNet5(), ctx)
    with torch.no_grad():
        model.features[0].weight[:15] *= 1e-4
        model.features[2].weight[10:] = 0.0

    method.after_epoch(model, 0, ctx)
    model = method.after_training(model, ctx)

    assert ctx.diagnostics["alive_filters"][0]["filters"] == {"features.0": 5, "features.2": 10}
    assert ctx.diagnostics["final_filters"]["features.0"] == 5
    assert ctx.diagnostics["final_filters"]["features.2"] == 10
    assert ctx.diagnostics["threshold"] == {
        "rule": "relative_to_layer_max",
        "tau": 0.01,
        "score": "filter_l2_norm",
    }
    assert model.features[2].in_channels == 5
    assert model.classifier[1].in_features == 10 * 4 * 4
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_absolute_threshold_recorded(tmp_path: Path) -> None:
    method = _method("l1", absolute_threshold=1e9)
    ctx = _context(tmp_path, (1, 28, 28))
    model = method.before_training(LeNet5(), ctx)
    model = method.after_training(model, ctx)
    assert ctx.diagnostics["threshold"]["rule"] == "absolute"
    assert ctx.diagnostics["threshold"]["value"] == 1e9
    assert ctx.diagnostics["final_filters"]["features.0"] == 1
    assert ctx.diagnostics["final_filters"]["features.2"] == 1


def test_slimming_thresholds_batchnorm_scales(tmp_path: Path) -> None:
    method = _method("slimming", lam=0.1)
    ctx = _context(tmp_path, (3, 32, 32))
    model = method.before_training(VGG16(width_mult=0.125).eval(), ctx)
    with torch.no_grad():
        model.features[1].weight[:3] = 1e-4  # γ of the first conv's BatchNorm
    gammas = sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert method.penalty(model, ctx).item() == pytest.approx(0.1 * gammas.item(), rel=1e-6)

    model = method.after_training(model, ctx)
    assert ctx.diagnostics["threshold"]["score"] == "batchnorm_abs_gamma"
    assert model.features[0].out_channels == 8 - 3
    assert model.features[1].num_features == 8 - 3


def test_slimming_penalises_lenet5_bn(tmp_path: Path) -> None:
    method = _method("slimming")
    ctx = _context(tmp_path, (1, 28, 28))
    method.before_training(LeNet5BN(), ctx)
    assert ctx.diagnostics["penalised_layers"] == ["features.0", "features.3"]
    assert get_method("slimming").requires_batchnorm


def test_slimming_rejects_model_without_batchnorm(tmp_path: Path) -> None:
    method = _method("slimming")
    with pytest.raises(MethodError, match="needs a BatchNorm"):
        method.before_training(LeNet5(), _context(tmp_path, (1, 28, 28)))


# -- whole runs through the harness ------------------------------------------------------------


def _rows(output: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((output / "rows").glob("*.json"))]


def test_suite_rows_have_diagnostics(tmp_path: Path) -> None:
    methods = [
        {"name": "group_hs", "params": {"lam": 0.1}},
        {"name": "l1", "params": {"absolute_threshold": 0.05}},
    ]
    suite = tiny_suite(tmp_path, methods, epochs=3, finetune_epochs=1, train_limit=200)
    counts = SuiteRunner(suite, tmp_path / "out").run()
    assert counts == {"ok": 2, "failed": 0, "skipped": 0, "skipped_failed": 0}

    for row in _rows(tmp_path / "out"):
        diagnostics = row["diagnostics"]
        assert [entry["phase"] for entry in diagnostics["alive_filters"]] == [
            "main",
            "main",
            "finetune",
        ]
        assert diagnostics["final_filters"] == row["metrics"]["filters"]
        assert "threshold" in diagnostics
        assert row["budget_consumed"]["epochs"] == 3
        assert row["export"]["parity"]["passed"]


def test_slimming_suite_on_vgg(tmp_path: Path) -> None:
    cifar = write_cifar_folder(tmp_path / "cifar", per_batch=20).parent
    methods = [{"name": "slimming", "params": {"lam": 1e-3}}]
    suite = tiny_suite(
        tmp_path,
        methods,
        epochs=2,
        finetune_epochs=1,
        tasks=[
            {
                "name": "vgg16-cifar10",
                "data_dir": str(cifar),
                "model_options": {"width_mult": 0.125},
            }
        ],
    )
    counts = SuiteRunner(suite, tmp_path / "out").run()
    row = _rows(tmp_path / "out")[0]
    assert counts["ok"] == 1, row.get("reason")
    assert row["diagnostics"]["threshold"]["score"] == "batchnorm_abs_gamma"
    assert len(row["diagnostics"]["penalised_layers"]) == 13
