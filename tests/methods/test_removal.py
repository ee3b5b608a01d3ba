"""Thresholding, masking and physical filter removal on LeNet-5, VGG-16 and ResNet-56."""

from __future__ import annotations

import copy
from pathlib import Path

import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from benchmark.errors import MethodError
from benchmark.measure.export import export_onnx, run_onnx
from benchmark.tasks.models import VGG16, LeNet5, ResNet56
from methods.removal import (
    final_layers,
    following_batchnorms,
    mask_filters,
    prunable_modules,
    remove_filters,
    threshold_plan,
)

TOLERANCE = 1e-5


def _randomise_batchnorms(model: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial statistics, so a wrong channel shows in the output."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.rand(size, generator=generator) * 2 - 1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(size, generator=generator) * 2 - 1)


def _random_plan(
    model: nn.Module, example: torch.Tensor, fraction: float, seed: int
) -> dict[str, list[int]]:
    """Plan a random subset of each layer's channels, different for every layer."""
    generator = torch.Generator().manual_seed(seed)
    excluded = final_layers(model, example)
    plan = {}
    for name, module in prunable_modules(model).items():
        if name in excluded:
            continue
        channels = module.weight.shape[0]
        count = min(channels - 1, int(channels * fraction))
        plan[name] = sorted(torch.randperm(channels, generator=generator)[:count].tolist())
    return plan


MODELS = {
    "lenet5": (lambda: LeNet5(), (1, 28, 28)),
    "vgg16": (lambda: VGG16(width_mult=0.125), (3, 32, 32)),
    "resnet56": (lambda: ResNet56(width_mult=0.25), (3, 32, 32)),
}


@pytest.fixture(params=sorted(MODELS))
def model_case(request: pytest.FixtureRequest) -> tuple[str, nn.Module, torch.Tensor]:
    factory, shape = MODELS[request.param]
    torch.manual_seed(0)
    model = factory().eval()
    _randomise_batchnorms(model, torch.Generator().manual_seed(1))
    return request.param, model, torch.randn(2, *shape)


# -- threshold_plan ----------------------------------------------------------------------------


def test_plan_relative_threshold() -> None:
    model = LeNet5()
    with torch.no_grad():
        model.features[0].weight[[3, 7]] *= 1e-3  # far below 1e-2 of the largest norm
    plan = threshold_plan(model, tau=1e-2)
    assert plan["features.0"] == [3, 7]
    assert plan["features.2"] == []
    assert plan["classifier.1"] == []


def test_plan_excludes_final_layer() -> None:
    model = LeNet5()
    with torch.no_grad():
        model.classifier[3].weight[0] = 0.0
    plan = threshold_plan(model, example_input=torch.randn(1, 1, 28, 28))
    assert "classifier.3" not in plan
    assert final_layers(model) == {"classifier.3"}


def test_plan_keeps_one_filter() -> None:
    model = LeNet5()
    with torch.no_grad():
        model.features[0].weight.mul_(1e-6)
        model.features[0].weight[5] *= 10
    plan = threshold_plan(model, absolute=1.0)
    assert len(plan["features.0"]) == 19
    assert 5 not in plan["features.0"]


def test_plan_absolute_threshold() -> None:
    model = LeNet5()
    norms = model.features[0].weight.detach().flatten(1).norm(dim=1)
    cutoff = float(norms.median())
    plan = threshold_plan(model, absolute=cutoff)
    assert plan["features.0"] == [int(i) for i in torch.nonzero(norms < cutoff).flatten()]


def test_plan_uses_given_scores() -> None:
    model = LeNet5()
    scores = {"features.0": torch.linspace(0, 1, 20)}
    plan = threshold_plan(model, tau=0.1, scores=scores)
    assert plan == {"features.0": [0, 1]}


@pytest.mark.parametrize("tau", [-0.1, 1.0])
def test_plan_rejects_bad_tau(tau: float) -> None:
    with pytest.raises(MethodError, match="tau"):
        threshold_plan(LeNet5(), tau=tau)


# -- mask_filters --------------------------------------------------------------------------------


def test_mask_zeroes_weights_bias_and_batchnorm() -> None:
    model = VGG16(width_mult=0.125)
    mask_filters(model, {"features.0": [1, 2], "classifier.1": [0]})
    assert torch.count_nonzero(model.features[0].weight[[1, 2]]) == 0
    assert torch.count_nonzero(model.features[0].weight[0]) > 0
    assert torch.count_nonzero(model.features[1].weight[[1, 2]]) == 0
    assert torch.count_nonzero(model.features[1].bias[[1, 2]]) == 0
    assert torch.count_nonzero(model.classifier[1].weight[0]) == 0
    assert model.classifier[1].bias[0] == 0


def test_mask_rejects_unknown_layer() -> None:
    with pytest.raises(MethodError, match="not a conv or linear layer"):
        mask_filters(LeNet5(), {"features.1": [0]})


def test_mask_rejects_out_of_range_index() -> None:
    with pytest.raises(MethodError, match="outside"):
        mask_filters(LeNet5(), {"features.0": [20]})


def test_batchnorm_pairing_traced_matches_order() -> None:
    model = ResNet56(width_mult=0.25)
    traced = following_batchnorms(model, torch.randn(1, 3, 32, 32))
    assert traced["layer2.0.shortcut.0"] == "layer2.0.shortcut.1"
    assert traced["layer1.0.conv2"] == "layer1.0.bn2"
    assert following_batchnorms(model) == traced


# -- remove_filters ------------------------------------------------------------------------------


def test_removal_matches_masked_network(model_case: tuple[str, nn.Module, torch.Tensor]) -> None:
    name, model, example = model_case
    plan = _random_plan(model, example, fraction=0.5, seed=2)
    masked = mask_filters(copy.deepcopy(model), plan, example)

    pruned, report = remove_filters(model, example, plan)
    fresh = torch.randn(8, *example.shape[1:], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        difference = (pruned.eval()(fresh) - masked.eval()(fresh)).abs().max().item()

    assert difference <= TOLERANCE, f"{name}: pruned and masked outputs differ by {difference}"
    assert report.max_abs_diff <= TOLERANCE
    assert report.params_after < report.params_before


def test_removal_shrinks_layers(model_case: tuple[str, nn.Module, torch.Tensor]) -> None:
    name, model, example = model_case
    plan = _random_plan(model, example, fraction=0.5, seed=2)
    _, report = remove_filters(model, example, plan)
    for layer, indices in report.removed.items():
        assert report.filters_after[layer] == report.filters_before[layer] - len(indices)
    assert sum(report.filters_after.values()) < sum(report.filters_before.values())
    for layer in final_layers(model, example):
        assert report.filters_after[layer] == report.filters_before[layer]


def test_removal_plain_layers_fully(model_case: tuple[str, nn.Module, torch.Tensor]) -> None:
    """Layers outside residual additions lose every planned channel."""
    name, model, example = model_case
    plan = _random_plan(model, example, fraction=0.5, seed=2)
    _, report = remove_filters(model, example, plan)
    for layer, indices in plan.items():
        if layer.endswith(".conv1") or name != "resnet56":
            assert report.removed.get(layer, []) == indices, layer
            assert layer not in report.kept_coupled


def test_residual_channel_needs_every_producer() -> None:
    torch.manual_seed(0)
    model = ResNet56(width_mult=0.25).eval()
    example = torch.randn(2, 3, 32, 32)
    # Stage 1's stream (4 channels) is written by the stem conv and every block's conv2.
    producers = ["conv1"] + [f"layer1.{block}.conv2" for block in range(9)]
    plan = {name: [0, 1] for name in producers}
    plan["layer1.4.conv2"] = [1]  # only channel 1 is planned by every producer

    masked = mask_filters(copy.deepcopy(model), plan, example)
    pruned, report = remove_filters(model, example, plan)

    assert report.filters_after["conv1"] == 3
    assert report.removed["conv1"] == [1]
    assert report.kept_coupled["conv1"] == 1
    assert pruned.layer1[0].conv1.in_channels == 3
    with torch.no_grad():
        assert (pruned(example) - masked(example)).abs().max() <= TOLERANCE


class _Concat(nn.Module):
    """Two branches joined by torch.cat, then a conv: the skip pattern of U-Nets."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 6, 3, padding=1)
        self.right = nn.Conv2d(3, 5, 3, padding=1)
        self.merge = nn.Conv2d(11, 4, 1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        joined = torch.relu(torch.cat([self.left(x), self.right(x)], dim=1))
        return self.head(self.merge(joined).mean(dim=(2, 3)))


def test_removal_through_concatenation() -> None:
    torch.manual_seed(0)
    model = _Concat().eval()
    example = torch.randn(2, 3, 8, 8)
    plan = {"left": [0, 4], "right": [1, 2, 3], "merge": [2]}
    masked = mask_filters(copy.deepcopy(model), plan, example)

    pruned, report = remove_filters(model, example, plan)

    assert pruned.merge.in_channels == 6
    assert pruned.merge.out_channels == 3
    assert pruned.head.in_features == 3
    with torch.no_grad():
        assert (pruned(example) - masked(example)).abs().max() <= TOLERANCE


def test_removal_rejects_final_layer_plan() -> None:
    model = LeNet5()
    with pytest.raises(MethodError, match="model output"):
        remove_filters(model, torch.randn(1, 1, 28, 28), {"classifier.3": [0]})


def test_onnx_has_reduced_channels(
    model_case: tuple[str, nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    name, model, example = model_case
    plan = _random_plan(model, example, fraction=0.5, seed=2)
    pruned, report = remove_filters(model, example, plan)
    path = tmp_path / f"{name}.onnx"
    export_onnx(pruned, example[:1], path)

    graph = onnx.load(str(path)).graph
    shapes = {init.name: tuple(numpy_helper.to_array(init).shape) for init in graph.initializer}
    conv_weights = [n.input[1] for n in graph.node if n.op_type == "Conv"]
    exported = [shapes[weight][0] for weight in conv_weights]
    expected = [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)]

    assert exported == expected
    assert sum(exported) < sum(
        report.filters_before[n]
        for n, m in prunable_modules(pruned).items()
        if isinstance(m, nn.Conv2d)
    )
    with torch.no_grad():
        reference = pruned.eval()(example[:1]).numpy()
    assert abs(run_onnx(path, example[:1]) - reference).max() <= 1e-4
