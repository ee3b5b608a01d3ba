"""Structured filter pruning with Torch-Pruning's importance criteria.

Each method scores the output channels of every prunable group, removes the lowest-scoring
channels physically, and fine-tunes the smaller model. A *group* is everything that
Torch-Pruning's ``DependencyGraph`` couples to one layer's output channels (Fang et al.,
"DepGraph: Towards Any Structural Pruning", CVPR 2023). It contains the layer, its
BatchNorm and the input channels of its consumers. Across a residual addition it also
contains every other layer that writes the same tensor.
The final classifier's outputs are never pruned.

Criteria, one registered method each (Torch-Pruning 1.6 ``tp.importance`` classes):

- ``filter.l1``: the L1 norm of each filter, ``sum |W[n]|`` of the group's first layer
  (Li, Kadav, Durdanovic, Samet and Graf, "Pruning Filters for Efficient ConvNets",
  ICLR 2017). ``MagnitudeImportance(p=1, group_reduction="first")``.
- ``filter.bn_scale``: ``|gamma|`` of the BatchNorm after each layer (Liu et al., "Learning
  Efficient Convolutional Networks through Network Slimming", ICCV 2017), without the
  sparsity training. Layers without a BatchNorm are not pruned. ``BNScaleImportance``.
- ``filter.fpgm``: the summed distance of each filter to the others of its layer, so filters
  near the geometric median go first (He, Liu, Wang, Hu and Yang, "Filter Pruning via
  Geometric Median", CVPR 2019). ``FPGMImportance``.
- ``filter.taylor``: ``sum |w * dL/dw|`` over each filter, a first-order estimate of the loss
  change on removal (Molchanov, Mallya, Tyree, Frosio and Kautz, "Importance Estimation for
  Neural Network Pruning", CVPR 2019). Gradients come from a few training batches that are
  not charged to the budget, because they do not update the weights. ``TaylorImportance``.
- ``filter.lamp``: the layer-adaptive magnitude score ``w_u^2 / sum_{v >= u} w_v^2`` over the
  sorted squared filter norms of a layer (Lee, Park, Mo, Ahn and Shin, "Layer-adaptive
  Sparsity for the Magnitude-based Pruning", ICLR 2021). ``LAMPImportance``.
- ``filter.random``: uniform random scores, the control every criterion should beat.

With ``scope = "global"`` the scores are divided by their layer mean (LAMP normalises its
own way) and ranked across all groups. With ``scope = "layer"`` each group loses the same
fraction of its channels. Either way a group keeps at least ``1 - max_layer_ratio`` of
its dense channels and, with ``round_to = r``, a multiple of ``r`` channels. The amount
removed is ``pruning_ratio`` (a fraction of the dense channels) or is found by bisection so
that the pruned model meets a MACs or parameter target (see :mod:`methods.targets`).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch_pruning as tp
from torch import nn

from benchmark.errors import MethodError
from benchmark.measure.complexity import Complexity, count_complexity, filters_per_layer
from methods.base import Family, Method, RunContext
from methods.registry import register
from methods.removal import final_layers
from methods.targets import (
    SCOPES,
    ScheduledTargetParams,
    Target,
    bisect_amount,
    resolve_target,
    schedule_fractions,
    split_epochs,
    target_report,
)

if TYPE_CHECKING:
    import optuna

__all__ = [
    "FilterPruning",
    "FilterPruningParams",
    "GroupScores",
    "TaylorParams",
    "apply_plan",
    "plan_removal",
    "round_channels",
    "score_groups",
]

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class FilterPruningParams(ScheduledTargetParams):
    """Parameters of structured filter pruning. At most one target may be set."""

    amount_field: ClassVar[str] = "pruning_ratio"

    # Fraction of the dense filters (conv output channels, hidden neurons) removed, e.g. 0.5.
    pruning_ratio: float | None = None
    # Pruned groups keep a multiple of this many channels (4, 8 or 16 suit SIMD); 1 disables it.
    round_to: int = 1
    # The largest fraction of a group's dense channels that may be removed.
    max_layer_ratio: float = 0.9
    # Whether hidden linear layers lose neurons too, besides the filters of conv layers.
    prune_linear: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.round_to < 1:
            raise ValueError(
                f"round_to = {self.round_to} is invalid; expected 1 (no rounding) or more, e.g. 8"
            )
        if not 0 < self.max_layer_ratio < 1:
            raise ValueError(
                f"max_layer_ratio = {self.max_layer_ratio} is invalid; "
                "expected a fraction in (0, 1)"
            )


@dataclass(frozen=True)
class TaylorParams(FilterPruningParams):
    """Parameters of Taylor filter pruning."""

    # Training batches whose gradients are summed for the scores, not charged to the budget.
    taylor_batches: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.taylor_batches < 1:
            raise ValueError(
                f"taylor_batches = {self.taylor_batches} is invalid; expected 1 or more"
            )


@dataclass
class GroupScores:
    """The channel scores of one prunable group, named by its root layer."""

    root: str
    scores: torch.Tensor
    # Output channels of the root layer in the dense model, which ratios refer to.
    dense_channels: int

    @property
    def channels(self) -> int:
        return len(self.scores)


class FilterPruning(Method):
    """Score filters with a Torch-Pruning criterion, remove the weakest, fine-tune."""

    family = Family.PRUNING
    Params = FilterPruningParams
    start_from = "dense"
    #: Name of the criterion in result rows.
    criterion: ClassVar[str] = ""

    def __init__(self, params: FilterPruningParams | None = None) -> None:
        super().__init__(params)
        self._dense_filters: dict[str, int] = {}

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "scope": trial.suggest_categorical("scope", list(SCOPES)),
            "iterative_steps": trial.suggest_int("iterative_steps", 1, 3),
        }

    def importance(self) -> Any:
        """Return the Torch-Pruning importance object, which each criterion subclass defines."""
        raise NotImplementedError(f"{type(self).__name__} must implement importance()")

    def prepare_scores(self, model: nn.Module, ctx: RunContext) -> None:
        """Prepare the model before scoring, e.g. accumulate gradients. The default does nothing."""

    def after_training(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        params: FilterPruningParams = self.params
        example = ctx.example_input(1)
        dense = count_complexity(model, example)
        self._dense_filters = filters_per_layer(model)
        target = resolve_target(params, ctx.references, dense.macs)

        fractions = schedule_fractions(params.iterative_steps, params.schedule)
        between = split_epochs(
            int(math.floor(ctx.ledger.epochs_left + 1e-9)), params.iterative_steps
        )
        steps = []
        for step, fraction in enumerate(fractions, start=1):
            model, record = self._prune_step(model, ctx, example, target, fraction, dense)
            steps.append({"step": step, **record})
            if step < len(fractions) and between:
                model = ctx.train(model, between)

        achieved = count_complexity(model, example)
        report = target_report(target, dense, achieved, nonzero=False, tolerance=params.tolerance)
        if report.get("met") is False:
            logger.warning(
                "%s missed its %s target by %+.1f%%", self.name, target.kind, 100 * report["error"]
            )
        ctx.diagnostics["pruning"] = {
            "method": self.name,
            "criterion": self.criterion,
            "scope": params.scope,
            "round_to": params.round_to,
            "steps": steps,
            "epochs_between_steps": between if len(fractions) > 1 else 0,
            "filters_before": self._dense_filters,
            "filters_after": filters_per_layer(model),
            "target": report,
        }
        return model

    def _prune_step(
        self,
        model: nn.Module,
        ctx: RunContext,
        example: torch.Tensor,
        target: Target,
        fraction: float,
        dense: Complexity,
    ) -> tuple[nn.Module, dict[str, Any]]:
        """Score the current model, choose the amount for this step, and prune in place."""
        params: FilterPruningParams = self.params
        groups = self._score(model, ctx, example)

        def count_plan(plan: dict[str, list[int]]) -> int:
            pruned = apply_plan(copy.deepcopy(model), example, plan)
            return target.count(count_complexity(pruned, example), nonzero=False)

        def costs_of(plan: dict[str, list[int]]) -> dict[str, tuple[float, float]]:
            return channel_costs(
                apply_plan(copy.deepcopy(model), example, plan), example, [g.root for g in groups]
            )

        def plan_at(amount: float) -> dict[str, list[int]]:
            return plan_removal(
                groups, amount, params.scope, params.round_to, params.max_layer_ratio
            )

        evaluations = 0
        if target.kind == "amount":
            amount = target.ratio * fraction
            plan = plan_at(amount)
        else:
            total = dense.macs if target.kind == "macs" else dense.params
            target_count = total * (1 - (1 - target.ratio) * fraction)
            found = bisect_amount(
                lambda a: count_plan(plan_at(a)),
                target_count,
                params.max_layer_ratio,
                params.tolerance,
            )
            amount = found.amount
            plan, refinements = refine_plan(
                groups,
                plan_at(amount),
                count_plan,
                costs_of,
                target_count,
                target.kind,
                params.round_to,
                params.max_layer_ratio,
                params.tolerance,
            )
            evaluations = found.evaluations + refinements

        model = apply_plan(model, example, plan)
        counts = count_complexity(model, example)
        logger.info(
            "%s: removed %d channels at amount %.4f, MACs ratio %.4f",
            self.name,
            sum(len(v) for v in plan.values()),
            amount,
            counts.macs / dense.macs,
        )
        return model, {
            "amount": amount,
            "evaluations": evaluations,
            "removed": {name: len(indices) for name, indices in plan.items() if indices},
            "macs_ratio": counts.macs / dense.macs,
            "params_ratio": counts.params / dense.params,
        }

    def _score(self, model: nn.Module, ctx: RunContext, example: torch.Tensor) -> list[GroupScores]:
        self.prepare_scores(model, ctx)
        try:
            groups = score_groups(
                model, example, self.importance(), self.params.prune_linear, self._dense_filters
            )
        finally:
            model.zero_grad(set_to_none=True)
        if not groups:
            raise MethodError(
                f"{self.name}: the {self.criterion} criterion scores no layer of this model; "
                + (
                    "it needs BatchNorm layers after the convolutions"
                    if self.criterion == "bn_scale"
                    else "the model has no prunable conv or linear layer besides the classifier"
                )
            )
        return groups


def score_groups(
    model: nn.Module,
    example: torch.Tensor,
    importance: Any,
    prune_linear: bool,
    dense_filters: dict[str, int],
) -> list[GroupScores]:
    """Score every prunable group of ``model``, leaving out groups the criterion cannot score."""
    modules = dict(model.named_modules())
    names = {module: name for name, module in modules.items()}
    ignored = [modules[name] for name in final_layers(model, example)]
    roots = (nn.Conv2d, nn.Linear) if prune_linear else (nn.Conv2d,)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=(example,), verbose=False)

    groups = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=roots):
        root = names[group[0].dep.target.module]
        scores = importance(group)
        if scores is None:
            continue
        groups.append(
            GroupScores(root, scores.detach().float().cpu(), dense_filters.get(root, len(scores)))
        )
    return groups


def channel_costs(
    model: nn.Module, example: torch.Tensor, roots: list[str]
) -> dict[str, tuple[float, float]]:
    """Estimate the MACs and parameters one more removed channel of each root's group saves.

    The estimate sums, over the layers the group shrinks, each layer's count divided by its
    width. It is exact for one channel. It ignores that removing many channels of two
    neighbouring groups saves less than the sum, which is why each estimate is checked by an
    exact count.
    """
    modules = dict(model.named_modules())
    names = {module: name for name, module in modules.items()}
    layers = {layer.name: layer for layer in count_complexity(model, example).layers}
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=(example,), verbose=False)
    costs = {}
    for root in roots:
        module = modules[root]
        channels = graph.get_out_channels(module)
        group = graph.get_pruning_group(
            module, graph.get_pruner_of_module(module).prune_out_channels, list(range(channels))
        )
        costs[root] = _channel_cost(graph, group, names, layers, channels)
    return costs


def _channel_cost(
    graph: Any, group: Any, names: dict, layers: dict, channels: int
) -> tuple[float, float]:
    """Estimate the MACs and parameters one channel of ``group`` costs in the layers it touches."""
    macs = params = 0.0
    for item in group:
        module = item.dep.target.module
        layer = layers.get(names.get(module, ""))
        if layer is None:
            continue
        if graph.is_out_channel_pruning_fn(item.dep.handler):
            width = graph.get_out_channels(module)
        else:
            width = graph.get_in_channels(module)
        if not width:
            continue
        share = len(item.idxs) / width / channels
        macs += layer.macs * share
        params += layer.params * share
    return macs, params


def round_channels(keep: int, channels: int, round_to: int, minimum: int = 1) -> int:
    """Round a kept channel count to the nearest multiple of ``round_to`` within ``channels``.

    The result is rounded up instead when the nearest multiple is below ``minimum``, and a
    group with fewer channels than ``round_to`` keeps them all, since no multiple fits.
    """
    if round_to <= 1:
        return keep
    rounded = max(round_to, int(math.floor(keep / round_to + 0.5)) * round_to)
    if rounded < minimum:
        rounded = math.ceil(minimum / round_to) * round_to
    if rounded > channels:
        rounded = channels // round_to * round_to
    return rounded if rounded > 0 else channels


def plan_removal(
    groups: list[GroupScores], amount: float, scope: str, round_to: int, max_layer_ratio: float
) -> dict[str, list[int]]:
    """Return the channel indices to remove per group root for a fraction ``amount`` of channels.

    ``amount`` counts from the dense model, so in later iterative steps it includes what the
    earlier steps removed.
    """
    if scope == "layer":
        keep = {g.root: round(g.dense_channels * (1 - amount)) for g in groups}
    else:
        keep = _global_keep(groups, amount)

    plan = {}
    for g in groups:
        floor = max(1, math.ceil(g.dense_channels * (1 - max_layer_ratio)))
        kept = min(g.channels, max(floor, keep[g.root]))
        kept = round_channels(kept, g.channels, round_to, minimum=floor)
        order = torch.argsort(g.scores, stable=True)
        plan[g.root] = sorted(int(i) for i in order[: g.channels - kept])
    return plan


def _global_keep(groups: list[GroupScores], amount: float) -> dict[str, int]:
    """Return the channels each group keeps when the lowest scores of all groups go first.

    Removal stops when ``(1 - amount)`` of the dense channel total is left.
    """
    dense_total = sum(g.dense_channels for g in groups)
    current = sum(g.channels for g in groups)
    remove = max(0, current - round(dense_total * (1 - amount)))
    owner = torch.cat([torch.full((g.channels,), i) for i, g in enumerate(groups)])
    scores = torch.cat([g.scores for g in groups])
    chosen = owner[torch.argsort(scores, stable=True)[:remove]]
    removed = torch.bincount(chosen, minlength=len(groups)).tolist()
    return {g.root: g.channels - removed[i] for i, g in enumerate(groups)}


def refine_plan(
    groups: list[GroupScores],
    plan: dict[str, list[int]],
    count_plan: Any,
    costs_of: Any,
    target_count: float,
    kind: str,
    round_to: int,
    max_layer_ratio: float,
    tolerance: float,
    attempts: int = 6,
) -> tuple[dict[str, list[int]], int]:
    """Close the gap between a plan's count and ``target_count`` by moving a few channels.

    Ranking channels globally moves the count in steps of whole channels, and one channel of
    an early conv layer can cost several percent of the MACs. This step removes further
    lowest-scoring channels, or restores the highest-scoring removed ones, in the groups
    whose channel cost fits the gap best, until the exact count ``count_plan(plan)`` is
    within a quarter of ``tolerance``. Returns the best plan seen and the number of counts
    taken.
    """
    best, best_count = plan, count_plan(plan)
    evaluations = 1
    for _ in range(attempts):
        gap = best_count - target_count
        if abs(gap) <= target_count * tolerance / 4:
            break
        costs = {root: cost[0 if kind == "macs" else 1] for root, cost in costs_of(best).items()}
        candidate = _shift_channels(groups, best, gap, costs, round_to, max_layer_ratio)
        if candidate is None:
            break
        count = count_plan(candidate)
        evaluations += 1
        if abs(count - target_count) >= abs(best_count - target_count):
            break
        best, best_count = candidate, count
    return best, evaluations


def _shift_channels(
    groups: list[GroupScores],
    plan: dict[str, list[int]],
    gap: float,
    costs: dict[str, float],
    round_to: int,
    max_layer_ratio: float,
) -> dict[str, list[int]] | None:
    """Return ``plan`` with channels removed (``gap > 0``) or restored (``gap < 0``)."""
    unit = max(1, round_to)
    shifted = {root: list(indices) for root, indices in plan.items()}
    remaining = abs(gap)
    changed = False
    # Coarsest group first, so the fewest channels leave the criterion's ranking. A group
    # whose unit would overshoot by more than the gap is skipped in favour of finer ones.
    for g in sorted(groups, key=lambda g: costs[g.root], reverse=True):
        cost = costs[g.root] * unit
        if cost <= 0 or g.channels < unit:
            continue
        needed_units = int(math.floor(remaining / cost + 0.5))
        if needed_units == 0:
            continue
        removed = set(shifted[g.root])
        order = torch.argsort(g.scores, stable=True).tolist()
        if gap > 0:
            min_keep = max(unit, math.ceil(g.dense_channels * (1 - max_layer_ratio) / unit) * unit)
            units = min(needed_units, max(0, (g.channels - len(removed) - min_keep) // unit))
            extra = [i for i in order if i not in removed][: units * unit]
            shifted[g.root] = sorted(removed | set(extra))
        else:
            units = min(needed_units, len(removed) // unit)
            restored = [i for i in reversed(order) if i in removed][: units * unit]
            shifted[g.root] = sorted(removed - set(restored))
        changed = changed or units > 0
        remaining -= units * cost
    return shifted if changed else None


def apply_plan(model: nn.Module, example: torch.Tensor, plan: dict[str, list[int]]) -> nn.Module:
    """Remove the planned output channels of each group root in place, with their whole group."""
    if not any(plan.values()):
        return model
    modules = dict(model.named_modules())
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=(example,), verbose=False)
    # Each group's root indices refer to the unpruned model. Groups share no output channels,
    # so pruning one group leaves the root indices of the others valid.
    for root, indices in plan.items():
        if not indices:
            continue
        module = modules[root]
        group = graph.get_pruning_group(
            module, graph.get_pruner_of_module(module).prune_out_channels, indices
        )
        group.prune(record_history=False)
    return model


# -- the criteria --------------------------------------------------------------------------


@register
class L1FilterPruning(FilterPruning):
    name = "filter.l1"
    criterion = "l1"
    summary = "filter pruning by L1 norm (Li et al., ICLR 2017), fine-tuned"

    def importance(self) -> Any:
        return tp.importance.MagnitudeImportance(p=1, group_reduction="first", normalizer="mean")


@register
class BNScaleFilterPruning(FilterPruning):
    name = "filter.bn_scale"
    requires_batchnorm = True
    criterion = "bn_scale"
    summary = "channel pruning by BatchNorm |gamma| (Liu et al., ICCV 2017), fine-tuned"

    def importance(self) -> Any:
        return tp.importance.BNScaleImportance()


@register
class FPGMFilterPruning(FilterPruning):
    name = "filter.fpgm"
    criterion = "fpgm"
    summary = "filter pruning via geometric median (He et al., CVPR 2019), fine-tuned"

    def importance(self) -> Any:
        return tp.importance.FPGMImportance(p=2)


@register
class TaylorFilterPruning(FilterPruning):
    name = "filter.taylor"
    criterion = "taylor"
    Params = TaylorParams
    summary = (
        "filter pruning by first-order Taylor importance (Molchanov et al., CVPR 2019), fine-tuned"
    )

    def importance(self) -> Any:
        return tp.importance.TaylorImportance()

    def prepare_scores(self, model: nn.Module, ctx: RunContext) -> None:
        """Sum the loss gradients of ``taylor_batches`` training batches into ``.grad``.

        The model runs in eval mode, so BatchNorm statistics stay as trained.
        """
        was_training = model.training
        model.eval()
        model.zero_grad(set_to_none=True)
        batches = 0
        with torch.enable_grad():
            for inputs, targets in ctx.train_batches():
                loss = nn.functional.cross_entropy(model(inputs), targets)
                loss.backward()
                batches += 1
                if batches >= self.params.taylor_batches:
                    break
        model.train(was_training)


@register
class LAMPFilterPruning(FilterPruning):
    name = "filter.lamp"
    criterion = "lamp"
    summary = (
        "filter pruning by layer-adaptive magnitude scores (Lee et al., ICLR 2021), fine-tuned"
    )

    def importance(self) -> Any:
        return tp.importance.LAMPImportance(p=2)


@register
class RandomFilterPruning(FilterPruning):
    name = "filter.random"
    criterion = "random"
    summary = "filter pruning with random scores, the control for the other criteria, fine-tuned"

    def importance(self) -> Any:
        return tp.importance.RandomImportance()
