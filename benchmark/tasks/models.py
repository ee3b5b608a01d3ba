"""Model families. Each takes explicit per-layer widths or a width multiplier.

- ``lenet5``: the Caffe LeNet-5 (conv 20@5x5, max-pool, conv 50@5x5, max-pool, fc 500, ReLU,
  fc classes). As in Caffe's ``lenet_train_test.prototxt`` there is no ReLU after the
  convolutions. 431,080 parameters for 28x28 inputs and 10 classes.
- ``lenet5-bn``: the same with BatchNorm after each convolution, for methods that need BN.
- ``vgg16``: VGG-16 for 32x32 inputs (13 conv 3x3 layers with BN and ReLU, five max-pools,
  then fc 512, ReLU, fc classes).
- ``resnet56``: the CIFAR ResNet of He et al. (CVPR 2016) with 3 stages of 9 basic blocks and
  16/32/64 channels. Shortcuts that change shape are 1x1 convolutions with BN (option B),
  so structured pruning can shrink them like any other layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from benchmark.errors import ConfigError

__all__ = ["MODELS", "LeNet5", "LeNet5BN", "ModelFamily", "ResNet56", "VGG16", "build_model", "scaled_widths"]


def scaled_widths(defaults: Sequence[int], widths: Sequence[int] | None, width_mult: float, model: str) -> list[int]:
    """Resolve explicit ``widths`` or scale ``defaults`` by ``width_mult`` (at least 1 each)."""
    if widths is not None:
        widths = list(widths)
        if len(widths) != len(defaults):
            raise ConfigError(
                f"{model}: widths has {len(widths)} entries, expected {len(defaults)} (defaults {list(defaults)})"
            )
        if any(not isinstance(w, int) or w < 1 for w in widths):
            raise ConfigError(f"{model}: widths must be positive integers, got {widths}")
        return widths
    if width_mult <= 0:
        raise ConfigError(f"{model}: width_mult must be positive, got {width_mult}")
    return [max(1, int(round(w * width_mult))) for w in defaults]


class LeNet5(nn.Module):
    """Caffe LeNet-5; ``widths`` = (conv1 filters, conv2 filters, fc1 neurons)."""

    default_widths = (20, 50, 500)

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 28,
        widths: Sequence[int] | None = None,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        c1, c2, f1 = scaled_widths(self.default_widths, widths, width_mult, "lenet5")
        spatial = ((input_size - 4) // 2 - 4) // 2
        if spatial < 1:
            raise ConfigError(f"lenet5: input size {input_size} is too small; expected at least 16")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * spatial * spatial, f1),
            nn.ReLU(inplace=True),
            nn.Linear(f1, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet5BN(LeNet5):
    """LeNet-5 with BatchNorm after each convolution, for methods that act on BN scales."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        conv1, pool1, conv2, pool2 = self.features
        self.features = nn.Sequential(
            conv1, nn.BatchNorm2d(conv1.out_channels), pool1, conv2, nn.BatchNorm2d(conv2.out_channels), pool2
        )


VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512)
# Indices of the conv layers followed by a max-pool.
_VGG16_POOL_AFTER = {1, 3, 6, 9, 12}


class VGG16(nn.Module):
    """VGG-16 with BN for 32x32 inputs; ``widths`` = 13 conv widths, then the fc width."""

    default_widths = VGG16_WIDTHS

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        widths: Sequence[int] | None = None,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        resolved = scaled_widths(self.default_widths, widths, width_mult, "vgg16")
        conv_widths, fc_width = resolved[:13], resolved[13]
        if input_size % 32:
            raise ConfigError(f"vgg16: input size {input_size} must be a multiple of 32")

        layers: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(conv_widths):
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            if index in _VGG16_POOL_AFTER:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers)
        spatial = input_size // 32
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * spatial * spatial, fc_width),
            nn.ReLU(inplace=True),
            nn.Linear(fc_width, num_classes),
        )
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a shortcut; ``inner`` is the first conv's width."""

    def __init__(self, in_channels: int, inner: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, inner, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet56(nn.Module):
    """CIFAR ResNet-56; ``widths`` = 3 stage widths, then 27 inner block widths."""

    blocks_per_stage = 9
    default_widths = (16, 32, 64) + (16,) * 9 + (32,) * 9 + (64,) * 9

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        widths: Sequence[int] | None = None,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        resolved = scaled_widths(self.default_widths, widths, width_mult, "resnet56")
        stage_widths, inner_widths = resolved[:3], resolved[3:]

        self.conv1 = nn.Conv2d(in_channels, stage_widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages = []
        channels = stage_widths[0]
        for stage, width in enumerate(stage_widths):
            blocks = []
            for block in range(self.blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                inner = inner_widths[stage * self.blocks_per_stage + block]
                blocks.append(BasicBlock(channels, inner, width, stride))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _init_conv_bn(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


@dataclass(frozen=True)
class ModelFamily:
    """A model constructor and the input it expects."""

    name: str
    factory: Callable[..., nn.Module]
    default_widths: tuple[int, ...]


MODELS: dict[str, ModelFamily] = {
    "lenet5": ModelFamily("lenet5", LeNet5, LeNet5.default_widths),
    "lenet5-bn": ModelFamily("lenet5-bn", LeNet5BN, LeNet5.default_widths),
    "vgg16": ModelFamily("vgg16", VGG16, VGG16.default_widths),
    "resnet56": ModelFamily("resnet56", ResNet56, ResNet56.default_widths),
}


def build_model(name: str, **options: object) -> nn.Module:
    """Build model family ``name`` with ``options`` (num_classes, widths, width_mult, ...)."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    try:
        return MODELS[name].factory(**options)
    except TypeError as error:
        raise ConfigError(f"invalid options for model {name!r}: {error}") from error
