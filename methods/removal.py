"""Threshold filters by their norm, mask them, and remove them physically.

These are the three steps every structured method here shares:

1. :func:`threshold_plan` chooses, per conv or linear layer, the output channels whose L2
   filter norm ``‖W[n]‖₂`` is below ``tau * max_n ‖W[n]‖₂`` (or below an absolute value).
   The final classifier is never planned, and every layer keeps at least one filter.
2. :func:`mask_filters` zeroes the planned filters in place: the conv or linear weights and
   bias, and the scale and shift of the BatchNorm that reads the layer's output. This is the
   *masked network*: each planned channel outputs exactly zero.
3. :func:`remove_filters` deletes the planned channels with Torch-Pruning's
   ``DependencyGraph``: the layer loses output channels, its BatchNorm loses the matching
   channels, and every consumer loses the matching input channels, through flattening,
   residual additions and concatenations alike. The result computes what the masked
   network computes, with fewer parameters and MACs, and exports to a smaller ONNX file.

Coupled channels: when several producers feed one tensor (the two sides of a residual
addition, say), a channel of that tensor can go only if every producer has it in its plan.
Otherwise the surviving producers' contributions would be lost and the output would change.
Such channels are kept, and the report lists how many were kept for this reason.

Exactness holds when a zero channel reaches the next conv or linear layer only through
operations that map zero to zero (ReLU, pooling, addition, concatenation, flattening). A
BatchNorm placed *after* an addition or concatenation turns a zero channel into a constant,
so removal there changes the output; :func:`remove_filters` measures the difference and
stores it in the report rather than assuming it is zero.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from benchmark.errors import MethodError

__all__ = [
    "RemovalReport",
    "filter_norms",
    "final_layers",
    "following_batchnorms",
    "mask_filters",
    "plan_threshold",
    "prunable_modules",
    "remove_filters",
    "threshold_plan",
]

logger = logging.getLogger(__name__)

_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class RemovalReport:
    """Diagnostics of :func:`remove_filters`: channels removed per layer and the output error."""

    # Output channels before and after removal, per conv or linear layer.
    filters_before: dict[str, int] = field(default_factory=dict)
    filters_after: dict[str, int] = field(default_factory=dict)
    # Output-channel indices removed, per layer, in the indexing of the unpruned layer.
    removed: dict[str, list[int]] = field(default_factory=dict)
    # Planned channels kept because another producer of the same tensor still needs them.
    kept_coupled: dict[str, int] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0
    # Largest |pruned - masked| output difference on the example input (float32).
    max_abs_diff: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "filters_before": self.filters_before,
            "filters_after": self.filters_after,
            "removed": {name: len(indices) for name, indices in self.removed.items()},
            "kept_coupled": self.kept_coupled,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "max_abs_diff": self.max_abs_diff,
        }


# -- layer discovery ---------------------------------------------------------------------


def prunable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Return the conv and linear layers of ``model`` by name, in definition order."""
    return {
        name: module for name, module in model.named_modules() if isinstance(module, _LAYER_TYPES)
    }


def _out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


@torch.no_grad()
def _trace_layers(
    model: nn.Module, example_input: torch.Tensor
) -> tuple[list[str], dict[str, str], torch.Tensor]:
    """Run ``model`` once in eval mode and record the call order and BatchNorm inputs.

    Returns the conv or linear layer names in call order, a map from each conv or linear
    name to the BatchNorm that reads its output tensor directly, and the model output.
    """
    layers = prunable_modules(model)
    names = {module: name for name, module in model.named_modules()}
    order: list[str] = []
    producer_of: dict[int, str] = {}
    batchnorm_of: dict[str, str] = {}

    def after_layer(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        name = names[module]
        order.append(name)
        producer_of[id(output)] = name

    def after_batchnorm(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        producer = producer_of.get(id(inputs[0]))
        if producer is not None:
            batchnorm_of.setdefault(producer, names[module])

    handles = [module.register_forward_hook(after_layer) for module in layers.values()]
    handles += [
        module.register_forward_hook(after_batchnorm)
        for module in model.modules()
        if isinstance(module, _BATCH_NORMS)
    ]
    was_training = model.training
    model.eval()
    try:
        output = model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return order, batchnorm_of, output


def final_layers(model: nn.Module, example_input: torch.Tensor | None = None) -> set[str]:
    """Return the names of the layers that produce the model output; these keep all channels.

    With ``example_input`` the model is traced and the last conv or linear layer called is
    taken; without it, the last one defined. Models with several heads need the tracing.
    """
    layers = prunable_modules(model)
    if not layers:
        return set()
    if example_input is None:
        return {list(layers)[-1]}
    order, _, _ = _trace_layers(model, example_input)
    return {order[-1]} if order else {list(layers)[-1]}


def following_batchnorms(
    model: nn.Module, example_input: torch.Tensor | None = None
) -> dict[str, str]:
    """Map each conv or linear layer name to the BatchNorm applied directly to its output.

    With ``example_input`` the pairing is traced exactly. Without it, a BatchNorm is paired
    with the conv or linear layer defined just before it when their channel counts agree,
    which holds for Sequential conv-BN stacks and the usual ``convN``/``bnN`` attributes.
    """
    if example_input is not None:
        return _trace_layers(model, example_input)[1]

    pairs: dict[str, str] = {}
    previous: tuple[str, nn.Module] | None = None
    for name, module in model.named_modules():
        if isinstance(module, _LAYER_TYPES):
            previous = (name, module)
        elif isinstance(module, _BATCH_NORMS) and previous is not None:
            if module.num_features == _out_channels(previous[1]):
                pairs[previous[0]] = name
            previous = None
    return pairs


# -- the plan ------------------------------------------------------------------------------


@torch.no_grad()
def filter_norms(model: nn.Module, layers: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Return the L2 norm of each output filter (row of the weight matrix) per layer."""
    modules = prunable_modules(model)
    chosen = list(modules) if layers is None else list(layers)
    return {
        name: modules[name].weight.detach().flatten(1).norm(dim=1).float().cpu() for name in chosen
    }


def threshold_plan(
    model: nn.Module,
    tau: float = 1e-2,
    absolute: float | None = None,
    example_input: torch.Tensor | None = None,
    *,
    scores: Mapping[str, torch.Tensor] | None = None,
    layers: Iterable[str] | None = None,
) -> dict[str, list[int]]:
    """Plan which output channels to remove: those with a small filter norm.

    A channel of layer ``l`` is planned when its score is below ``tau * max(score_l)``, or
    below ``absolute`` when that is given. The score is the L2 filter norm unless ``scores``
    supplies one tensor per layer (network slimming passes ``|gamma|`` of the BatchNorm).
    The layers that produce the model output are excluded (see :func:`final_layers`), and
    each layer keeps at least its highest-scoring channel. ``layers`` restricts the plan to
    the named layers. Returns the planned indices per layer, in ascending order, for every
    considered layer, so an empty list means "nothing to remove".
    """
    if absolute is None and not 0 <= tau < 1:
        raise MethodError(f"tau = {tau} is invalid; expected a fraction in [0, 1)")
    if absolute is not None and absolute < 0:
        raise MethodError(f"absolute threshold = {absolute} is invalid; expected a value >= 0")

    modules = prunable_modules(model)
    excluded = final_layers(model, example_input)
    chosen = [name for name in (modules if layers is None else layers) if name not in excluded]
    unknown = [name for name in chosen if name not in modules]
    if unknown:
        raise MethodError(f"layer {unknown[0]!r} is not a conv or linear layer of the model")

    values = dict(scores) if scores is not None else filter_norms(model, chosen)
    plan: dict[str, list[int]] = {}
    for name in chosen:
        if name not in values:
            continue
        score = values[name].detach().float().cpu().abs()
        cutoff = absolute if absolute is not None else tau * float(score.max())
        below = score < cutoff
        if bool(below.all()):
            below[int(score.argmax())] = False
        plan[name] = [int(i) for i in torch.nonzero(below).flatten()]
    return plan


def plan_threshold(tau: float, absolute: float | None) -> dict[str, Any]:
    """Describe the threshold rule for a result row."""
    if absolute is not None:
        return {"rule": "absolute", "value": absolute}
    return {"rule": "relative_to_layer_max", "tau": tau}


# -- masking -------------------------------------------------------------------------------


@torch.no_grad()
def mask_filters(
    model: nn.Module, plan: Mapping[str, Iterable[int]], example_input: torch.Tensor | None = None
) -> nn.Module:
    """Zero the planned filters in place and return ``model``.

    Zeroes the weight rows and bias entries of each planned output channel, and the scale
    and shift of the BatchNorm that reads the layer's output (see
    :func:`following_batchnorms`), so each planned channel outputs zero in eval mode and in
    train mode alike.
    """
    modules = prunable_modules(model)
    named = dict(model.named_modules())
    batchnorms = following_batchnorms(model, example_input)
    for name, indices in plan.items():
        index = _index_tensor(indices, name, modules)
        if index.numel() == 0:
            continue
        layer = modules[name]
        layer.weight.index_fill_(0, index.to(layer.weight.device), 0.0)
        if layer.bias is not None:
            layer.bias.index_fill_(0, index.to(layer.bias.device), 0.0)
        bn_name = batchnorms.get(name)
        if bn_name is not None:
            batchnorm = named[bn_name]
            if batchnorm.weight is not None:
                batchnorm.weight.index_fill_(0, index.to(batchnorm.weight.device), 0.0)
                batchnorm.bias.index_fill_(0, index.to(batchnorm.bias.device), 0.0)
    return model


def _index_tensor(
    indices: Iterable[int], name: str, modules: Mapping[str, nn.Module]
) -> torch.Tensor:
    if name not in modules:
        raise MethodError(f"plan names {name!r}, which is not a conv or linear layer of the model")
    index = torch.as_tensor(sorted(set(int(i) for i in indices)), dtype=torch.long)
    channels = _out_channels(modules[name])
    if index.numel() and (int(index[0]) < 0 or int(index[-1]) >= channels):
        raise MethodError(
            f"plan for {name!r} names channel indices outside 0..{channels - 1}: {index.tolist()}"
        )
    return index


# -- physical removal ----------------------------------------------------------------------


def remove_filters(
    model: nn.Module,
    example_input: torch.Tensor,
    plan: Mapping[str, Iterable[int]],
) -> tuple[nn.Module, RemovalReport]:
    """Mask the planned filters, then remove them physically; return the model and a report.

    The model is changed in place (Torch-Pruning replaces the parameters of each layer)
    and returned. Channels are removed group by group, where a group is every layer that
    Torch-Pruning's dependency graph couples to one producer's output channels. Within a
    group, a channel goes only when every conv or linear producer in the group has it in
    ``plan``. The report's ``max_abs_diff`` compares the pruned model with the masked one
    on ``example_input`` in eval mode.
    """
    import torch_pruning as tp

    modules = prunable_modules(model)
    protected = final_layers(model, example_input)
    clash = sorted(protected & {name for name, indices in plan.items() if list(indices)})
    if clash:
        raise MethodError(f"plan removes channels of {clash[0]!r}, which produces the model output")

    mask_filters(model, plan, example_input)
    report = RemovalReport(
        filters_before={name: _out_channels(m) for name, m in modules.items()},
        params_before=sum(p.numel() for p in model.parameters()),
    )
    was_training = model.training
    model.eval()
    with torch.no_grad():
        masked_output = model(example_input).detach().clone()

    # A tuple, because Torch-Pruning calls model(*example_inputs) first, which would split a
    # bare tensor along the batch axis.
    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=(example_input,), verbose=False
    )
    names = {module: name for name, module in modules.items()}
    planned = {name: set(int(i) for i in indices) for name, indices in plan.items()}
    ignored = [modules[name] for name in protected]
    removals = _group_removals(graph, names, planned, ignored, report)
    for root, root_indices in removals:
        group = graph.get_pruning_group(
            root, graph.get_pruner_of_module(root).prune_out_channels, root_indices
        )
        group.prune(record_history=False)

    with torch.no_grad():
        pruned_output = model(example_input)
    model.train(was_training)
    report.max_abs_diff = _max_abs_diff(pruned_output, masked_output)
    report.filters_after = {name: _out_channels(m) for name, m in prunable_modules(model).items()}
    report.params_after = sum(p.numel() for p in model.parameters())
    logger.info(
        "removed filters: %d -> %d parameters, max output difference to the masked network %.3g",
        report.params_before,
        report.params_after,
        report.max_abs_diff,
    )
    return model, report


def _group_removals(
    graph: Any,
    names: Mapping[nn.Module, str],
    planned: Mapping[str, set[int]],
    ignored: list[nn.Module],
    report: RemovalReport,
) -> list[tuple[nn.Module, list[int]]]:
    """Return (root layer, root channel indices) to remove, one entry per coupled group.

    Computed before any pruning, so the indices of every group refer to the unpruned model.
    Groups do not share output channels, so pruning one leaves the others' indices valid.
    """
    removals = []
    # Groups whose output channels include an ignored layer's are skipped by Torch-Pruning.
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=_LAYER_TYPES):
        producers = []  # (layer name, local indices, root indices)
        for item in group:
            module, handler = item.dep.target.module, item.dep.handler
            if isinstance(module, _LAYER_TYPES) and graph.is_out_channel_pruning_fn(handler):
                producers.append((names.get(module), list(item.idxs), list(item.root_idxs)))
        if not producers or any(name is None for name, _, _ in producers):
            continue

        removable: set[int] | None = None
        for name, local, root in producers:
            planned_here = planned.get(name, set())
            chosen = {r for i, r in zip(local, root, strict=True) if i in planned_here}
            removable = chosen if removable is None else removable & chosen
        removable = removable or set()

        for name, local, root in producers:
            gone = sorted(i for i, r in zip(local, root, strict=True) if r in removable)
            if gone:
                report.removed[name] = gone
            kept = len(planned.get(name, set()) - set(gone))
            if kept:
                report.kept_coupled[name] = kept
        if removable:
            removals.append((group[0].dep.target.module, sorted(removable)))
    return removals


def _max_abs_diff(actual: Any, expected: Any) -> float:
    if isinstance(actual, torch.Tensor):
        if actual.shape != expected.shape:
            raise MethodError(
                f"filter removal changed the output shape from {tuple(expected.shape)} "
                f"to {tuple(actual.shape)}"
            )
        return float((actual.float() - expected.float()).abs().max()) if actual.numel() else 0.0
    if isinstance(actual, (tuple, list)):
        return max(
            (_max_abs_diff(a, e) for a, e in zip(actual, expected, strict=True)), default=0.0
        )
    if isinstance(actual, dict):
        return max((_max_abs_diff(actual[k], expected[k]) for k in expected), default=0.0)
    return 0.0
