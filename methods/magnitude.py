"""Unstructured magnitude pruning: zero the smallest weights, keep them zero while fine-tuning.

Han, Pool, Tran and Dally, "Learning both Weights and Connections for Efficient Neural
Networks", NeurIPS 2015. After dense training, a weight ``w`` of a conv or linear layer is
removed when ``|w| <= t``, and the network is fine-tuned with the removed weights held at
zero: the binary mask ``M = [|W| > t]`` is applied as ``W <- W * M`` after every optimiser
step. Biases and BatchNorm parameters are kept.

- ``scope = "global"`` uses one threshold ``t`` for all layers, so each layer's sparsity
  follows from the distribution of its weights. ``scope = "layer"`` removes the same
  fraction of each layer's weights.
- ``iterative_steps = n`` prunes in ``n`` steps with fine-tuning in between, the removed
  amount growing with the schedule of :func:`methods.targets.schedule_fractions`.
- The amount is a sparsity, or it is searched so that the *nonzero* MACs or parameters meet
  a target (see :mod:`methods.targets`).

The weights stay dense tensors, so the exported ONNX model runs on dense kernels and its
latency does not drop: result rows show nonzero parameters and MACs next to an unchanged
dense latency.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from benchmark.measure.complexity import Complexity, count_complexity, prunable_layers
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

__all__ = ["MagnitudeParams", "MagnitudePruning", "magnitude_masks"]

logger = logging.getLogger(__name__)

# The largest sparsity a search tries, because a model with every weight zero is meaningless.
_MAX_SPARSITY = 0.999


@dataclass(frozen=True)
class MagnitudeParams(ScheduledTargetParams):
    """Parameters of unstructured magnitude pruning. At most one target may be set."""

    amount_field: ClassVar[str] = "sparsity"

    # Fraction of the prunable weights set to zero, e.g. 0.9.
    sparsity: float | None = None
    # How the removed amount grows over the steps: "cubic" or "linear".
    schedule: str = "cubic"
    # Whether the final classifier's weights are pruned too, as Han et al. did.
    prune_classifier: bool = True


@dataclass
class _PrunableWeight:
    """One pruned weight tensor, with the MACs that each of its entries costs per sample."""

    name: str
    weight: nn.Parameter
    macs_per_weight: float


@register
class MagnitudePruning(Method):
    """Han et al.'s magnitude pruning of the dense checkpoint, with masks held in fine-tuning."""

    name = "magnitude"
    family = Family.PRUNING
    Params = MagnitudeParams
    start_from = "dense"
    summary = "unstructured magnitude pruning with fine-tuning (Han et al., NeurIPS 2015)"

    def __init__(self, params: MagnitudeParams | None = None) -> None:
        super().__init__(params)
        self._weights: list[_PrunableWeight] = []
        self._masks: dict[str, torch.Tensor] = {}
        self._dense: Complexity | None = None
        self._target: Target | None = None

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "scope": trial.suggest_categorical("scope", list(SCOPES)),
            "iterative_steps": trial.suggest_int("iterative_steps", 1, 3),
        }

    def after_training(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        params: MagnitudeParams = self.params
        example = ctx.example_input(1)
        self._dense = count_complexity(model, example)
        self._weights = self._prunable_weights(model, example)
        target = resolve_target(params, ctx.references, self._dense.macs)
        self._target = target

        fractions = schedule_fractions(params.iterative_steps, params.schedule)
        between = split_epochs(
            int(math.floor(ctx.ledger.epochs_left + 1e-9)), params.iterative_steps
        )
        steps = []
        for step, fraction in enumerate(fractions, start=1):
            sparsity = self._step_sparsity(target, fraction)
            masks = magnitude_masks([w.weight for w in self._weights], sparsity, params.scope)
            self._masks = {w.name: mask for w, mask in zip(self._weights, masks, strict=True)}
            self.after_step(model, ctx)
            counts = count_complexity(model, example)
            steps.append({"step": step, "sparsity": sparsity, **_ratios(counts, self._dense)})
            logger.info(
                "magnitude step %d/%d: sparsity %.4f, nonzero MACs ratio %.4f",
                step,
                len(fractions),
                sparsity,
                steps[-1]["nonzero_macs_ratio"],
            )
            if step < len(fractions) and between:
                model = ctx.train(model, between)

        ctx.diagnostics["pruning"] = {
            "method": "magnitude",
            "scope": params.scope,
            "steps": steps,
            "epochs_between_steps": between if len(fractions) > 1 else 0,
        }
        self._record(model, ctx, target, example)
        return model

    def after_step(self, model: nn.Module, ctx: RunContext) -> None:
        with torch.no_grad():
            for item in self._weights:
                mask = self._masks.get(item.name)
                if mask is not None:
                    item.weight.mul_(mask)

    def after_finetune(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        self.after_step(model, ctx)
        self._record(model, ctx, self._target, ctx.example_input(1))
        return model

    # -- helpers ---------------------------------------------------------------------------

    def _prunable_weights(self, model: nn.Module, example: torch.Tensor) -> list[_PrunableWeight]:
        skipped = set() if self.params.prune_classifier else final_layers(model, example)
        macs = {layer.name: layer.macs for layer in self._dense.layers}
        return [
            _PrunableWeight(name, module.weight, macs.get(name, 0) / module.weight.numel())
            for name, module in prunable_layers(model)
            if name not in skipped
        ]

    def _step_sparsity(self, target: Target, fraction: float) -> float:
        """Return the sparsity of one step, a share of the final amount or a searched value."""
        if target.kind == "amount":
            return target.ratio * fraction
        dense = self._dense
        total = dense.macs if target.kind == "macs" else dense.params
        target_count = total * (1 - (1 - target.ratio) * fraction)
        count_at = _nonzero_counter(self._weights, dense, target.kind, self.params.scope)
        found = bisect_amount(
            count_at, target_count, _MAX_SPARSITY, self.params.tolerance, max_evaluations=40
        )
        return found.amount

    def _record(
        self, model: nn.Module, ctx: RunContext, target: Target, example: torch.Tensor
    ) -> None:
        achieved = count_complexity(model, example)
        diagnostics = ctx.diagnostics.setdefault("pruning", {})
        diagnostics["layer_sparsity"] = {
            item.name: 1 - int(torch.count_nonzero(item.weight)) / item.weight.numel()
            for item in self._weights
        }
        report = target_report(
            target, self._dense, achieved, nonzero=True, tolerance=self.params.tolerance
        )
        diagnostics["target"] = report
        if report.get("met") is False:
            logger.warning(
                "magnitude pruning missed its %s target by %+.1f%%",
                target.kind,
                100 * report["error"],
            )


def magnitude_masks(weights: list[torch.Tensor], sparsity: float, scope: str) -> list[torch.Tensor]:
    """Return a 0/1 mask per weight tensor that zeroes a ``sparsity`` share of the smallest ``|w|``.

    With ``scope = "global"`` the share is taken over all tensors together, and ties go by
    position. Each tensor keeps at least its largest weight, so no layer is cut off. With
    ``scope = "layer"`` each tensor loses the same share.
    """
    if scope == "layer":
        return [
            _smallest_mask(w.detach().abs().flatten(), round(sparsity * w.numel())).view_as(w)
            for w in weights
        ]

    magnitudes = torch.cat([w.detach().abs().flatten().cpu() for w in weights])
    flat = _smallest_mask(magnitudes, round(sparsity * magnitudes.numel()))
    masks = []
    for w, part in zip(weights, flat.split([w.numel() for w in weights]), strict=True):
        mask = part.clone()
        if not bool(mask.any()):
            mask[int(w.detach().abs().flatten().argmax())] = 1.0
        masks.append(mask.view_as(w).to(w.device))
    return masks


def _smallest_mask(values: torch.Tensor, count: int) -> torch.Tensor:
    mask = torch.ones_like(values)
    if count > 0:
        mask[torch.argsort(values, stable=True)[:count]] = 0.0
    return mask


def _nonzero_counter(weights: list[_PrunableWeight], dense: Complexity, kind: str, scope: str):
    """Return ``count_at(sparsity)``: nonzero MACs or parameters after pruning, computed exactly.

    Each removed weight saves its layer's MACs per weight (the output positions it is
    applied at) or one parameter. The counts assume every kept weight is nonzero.
    """
    sizes = torch.tensor([w.weight.numel() for w in weights], dtype=torch.float64)
    cost = torch.tensor(
        [w.macs_per_weight if kind == "macs" else 1.0 for w in weights], dtype=torch.float64
    )
    full = float((sizes * cost).sum())
    base = (dense.nonzero_macs if kind == "macs" else dense.nonzero_params) - float(
        sum(
            int(torch.count_nonzero(w.weight)) * c
            for w, c in zip(weights, cost.tolist(), strict=True)
        )
    )

    if scope == "layer":

        def count_at(sparsity: float) -> int:
            removed = torch.round(sizes * sparsity)
            return round(base + full - float((removed * cost).sum()))

        return count_at

    magnitudes = torch.cat([w.weight.detach().abs().flatten().cpu() for w in weights])
    owner = torch.repeat_interleave(torch.arange(len(weights)), sizes.long())
    cumulative = torch.cat(
        [
            torch.zeros(1, dtype=torch.float64),
            cost[owner[torch.argsort(magnitudes, stable=True)]].cumsum(0),
        ]
    )

    def count_at(sparsity: float) -> int:
        removed = round(sparsity * magnitudes.numel())
        return round(base + full - float(cumulative[removed]))

    return count_at


def _ratios(counts: Complexity, dense: Complexity) -> dict[str, float]:
    return {
        "nonzero_macs_ratio": counts.nonzero_macs / dense.macs,
        "nonzero_params_ratio": counts.nonzero_params / dense.params,
    }
