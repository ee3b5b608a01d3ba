"""Model families and their complexity counts."""

from __future__ import annotations

import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.measure.complexity import count_complexity, filters_per_layer
from benchmark.tasks.models import MODELS, VGG16, LeNet5, build_model

INPUTS = {"lenet5": (1, 28), "lenet5-bn": (1, 28), "vgg16": (3, 32), "resnet56": (3, 32)}


def test_lenet5_counts_by_hand() -> None:
    counts = count_complexity(LeNet5(), torch.zeros(1, 1, 28, 28))
    # conv1 20x1x5x5+20, conv2 50x20x5x5+50, fc 800x500+500, fc 500x10+10
    assert counts.params == 520 + 25_050 + 400_500 + 5_010
    # conv1: 24x24 outputs x 20 filters x 25; conv2: 8x8 x 50 x (20x25); fc1 800x500; fc2 500x10
    assert counts.macs == 288_000 + 1_600_000 + 400_000 + 5_000
    assert counts.filters() == {"features.0": 20, "features.2": 50, "classifier.1": 500, "classifier.3": 10}


def test_vgg16_counts_by_hand() -> None:
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    sizes = [32, 32, 16, 16, 8, 8, 8, 4, 4, 4, 2, 2, 2]
    conv = 0
    bn = 0
    channels = 3
    for width, size in zip(widths, sizes, strict=False):
        conv += size * size * width * channels * 9
        bn += size * size * width
        channels = width
    fc = 512 * 512 + 512 * 10
    counts = count_complexity(VGG16(), torch.zeros(1, 3, 32, 32))
    assert counts.macs == conv + bn + fc
    assert conv == 313_196_544


def test_nonzero_counts_follow_zeros() -> None:
    model = LeNet5()
    with torch.no_grad():
        model.features[0].weight[:10] = 0  # half of conv1's filters
    counts = count_complexity(model, torch.zeros(1, 1, 28, 28))
    assert counts.nonzero_macs == counts.macs - 10 * 25 * 24 * 24
    assert counts.nonzero_params == counts.params - 10 * 25


def test_pruned_shapes_counted() -> None:
    small = LeNet5(widths=(5, 10, 100))
    counts = count_complexity(small, torch.zeros(1, 1, 28, 28))
    assert counts.macs == 24 * 24 * 5 * 25 + 8 * 8 * 10 * 5 * 25 + 160 * 100 + 100 * 10


@pytest.mark.parametrize("name", sorted(MODELS))
def test_family_forward_and_widths(name: str) -> None:
    channels, size = INPUTS[name]
    defaults = MODELS[name].default_widths
    widths = [max(1, w // 8) for w in defaults]
    model = build_model(name, num_classes=7, in_channels=channels, input_size=size, widths=widths)
    assert model(torch.zeros(2, channels, size, size)).shape == (2, 7)
    conv_widths = [w for layer, w in filters_per_layer(model).items()]
    assert conv_widths[0] == widths[0]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_family_width_mult(name: str) -> None:
    channels, size = INPUTS[name]
    half = build_model(name, in_channels=channels, input_size=size, width_mult=0.5)
    full = build_model(name, in_channels=channels, input_size=size)
    half_params = sum(p.numel() for p in half.parameters())
    full_params = sum(p.numel() for p in full.parameters())
    assert half_params < 0.5 * full_params


def test_widths_length_checked() -> None:
    with pytest.raises(ConfigError, match="expected 3"):
        LeNet5(widths=(1, 2))


def test_unknown_model_lists_known() -> None:
    with pytest.raises(ConfigError, match="lenet5"):
        build_model("alexnet")
