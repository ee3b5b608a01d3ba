"""Parameter, MAC and filter counts of a model, measured with forward hooks.

Counting rules, per output element of each layer:

- Conv2d: ``C_in / groups * k_h * k_w`` multiply-accumulates (MACs), plus nothing for the
  bias. Nonzero MACs count only the nonzero weights of each filter.
- Linear: ``in_features`` MACs per output.
- BatchNorm: one MAC per output element, since inference applies ``y = a * x + b``.
  (ONNX Runtime folds BN into the preceding convolution, but the count stays comparable
  across models with and without BN.)

Pooling, activations and additions are not counted, as in most pruning papers. Shapes are
read from the model itself, so physically pruned layers are counted at their new size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["Complexity", "LayerCount", "count_complexity", "filters_per_layer", "prunable_layers"]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class LayerCount:
    """Counts for one conv, linear or BN layer."""

    name: str
    kind: str
    filters: int
    params: int
    nonzero_params: int
    macs: int
    nonzero_macs: int


@dataclass
class Complexity:
    """Whole-model counts; ``layers`` keeps one entry per conv, linear and BN layer."""

    params: int
    nonzero_params: int
    macs: int
    nonzero_macs: int
    layers: list[LayerCount] = field(default_factory=list)

    def filters(self) -> dict[str, int]:
        """Return the output filters (conv) or neurons (linear) per layer, in model order."""
        return {layer.name: layer.filters for layer in self.layers if layer.kind in ("conv", "linear")}

    def as_dict(self) -> dict[str, object]:
        return {
            "params": self.params,
            "nonzero_params": self.nonzero_params,
            "macs": self.macs,
            "nonzero_macs": self.nonzero_macs,
            "filters": self.filters(),
        }


def prunable_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Yield the conv and linear layers, in definition order, with their names."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            yield name, module


def filters_per_layer(model: nn.Module) -> dict[str, int]:
    """Return the output channels of each conv and the output neurons of each linear layer."""
    return {
        name: module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
        for name, module in prunable_layers(model)
    }


@torch.no_grad()
def count_complexity(model: nn.Module, example_input: torch.Tensor) -> Complexity:
    """Count parameters and MACs of ``model`` for one sample shaped like ``example_input``.

    The batch dimension of ``example_input`` is ignored: MACs are per sample.
    """
    sample = example_input[:1]
    layer_counts: dict[str, LayerCount] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear) + _BATCH_NORMS):
            handles.append(module.register_forward_hook(_make_hook(name, layer_counts)))

    was_training = model.training
    model.eval()
    try:
        model(sample)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    params = sum(p.numel() for p in model.parameters())
    nonzero_params = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    layers = list(layer_counts.values())
    return Complexity(
        params=params,
        nonzero_params=nonzero_params,
        macs=sum(layer.macs for layer in layers),
        nonzero_macs=sum(layer.nonzero_macs for layer in layers),
        layers=layers,
    )


def _make_hook(name: str, sink: dict[str, LayerCount]):
    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        count = _count_layer(name, module, output)
        previous = sink.get(name)
        if previous is not None:  # a layer called twice (weight sharing) costs twice
            count.macs += previous.macs
            count.nonzero_macs += previous.nonzero_macs
        sink[name] = count

    return hook


def _count_layer(name: str, module: nn.Module, output: torch.Tensor) -> LayerCount:
    own_params = list(module.parameters(recurse=False))
    params = sum(p.numel() for p in own_params)
    nonzero_params = sum(int(torch.count_nonzero(p)) for p in own_params)

    if isinstance(module, nn.Conv2d):
        positions = output.shape[2] * output.shape[3]  # output pixels per filter
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        macs = module.out_channels * positions * per_output
        nonzero_macs = int(torch.count_nonzero(module.weight)) * positions
        return LayerCount(name, "conv", module.out_channels, params, nonzero_params, macs, nonzero_macs)

    if isinstance(module, nn.Linear):
        rows = output.numel() // module.out_features  # 1 for (batch, features) outputs
        macs = rows * module.in_features * module.out_features
        nonzero_macs = rows * int(torch.count_nonzero(module.weight))
        return LayerCount(name, "linear", module.out_features, params, nonzero_params, macs, nonzero_macs)

    elements = output[0].numel()
    return LayerCount(name, "bn", output.shape[1], params, nonzero_params, elements, elements)
