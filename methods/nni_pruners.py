"""Adapters for the channel pruners of NNI 3.0 (Microsoft Neural Network Intelligence).

NNI computes the masks, and :func:`methods.removal.remove_filters` (Torch-Pruning's
dependency graph) removes the masked channels physically. NNI's own ``ModelSpeedup`` is not
used, because on torch 2.13 it fails in its ``concrete_trace`` with an AttributeError.

Each pruner masks the same fraction ``sparse_ratio`` of the output channels of every conv
and linear layer except the final classifier, ranked by:

- ``nni.l1`` and ``nni.l2``: the L1 or L2 norm of each filter (``L1NormPruner``,
  ``L2NormPruner``; Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017);
- ``nni.fpgm``: the distance to the layer's geometric median (``FPGMPruner``; He et al.,
  CVPR 2019);
- ``nni.taylor``: the first-order Taylor term ``|w * dL/dw|`` summed over each filter,
  from the gradients of ``training_steps`` batches (``TaylorPruner``; Molchanov et al.,
  CVPR 2019);
- ``nni.slim``: BatchNorm scaling factors trained for ``training_steps`` batches under an L1
  penalty of weight ``regular_scale`` (``SlimPruner``; Liu et al., "Learning Efficient
  Convolutional Networks through Network Slimming", ICCV 2017). Only layers followed by a
  BatchNorm are pruned.

NNI runs on a copy of the dense model with a learning rate of zero for its weights, so
Taylor and Slim read gradients without changing the model. Those batches are therefore not
charged to the budget. Slim trains only its auxiliary scaling factors, which departs from
Liu et al., who train the whole network with the L1 penalty.

Channels coupled across a residual addition go only when every layer writing the tensor
has them masked (see :mod:`methods.removal`). NNI masks each layer on its own, so on
residual networks fewer channels go than masked; the report's ``kept_coupled`` counts them.

Install the optional dependency with ``pip install 'compressbench[nni]'``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from benchmark.errors import MethodError
from benchmark.measure.complexity import count_complexity, filters_per_layer
from methods.base import Family, Method, RunContext
from methods.registry import register
from methods.removal import final_layers, following_batchnorms, remove_filters
from methods.targets import TargetParams, bisect_amount, resolve_target, target_report

__all__ = [
    "NNIGradientParams",
    "NNIPruning",
    "NNIPruningParams",
    "NNISlimParams",
    "plan_from_masks",
]

logger = logging.getLogger(__name__)

INSTALL_HINT = "install the optional dependency: pip install 'compressbench[nni]'"
# The largest per-layer sparse ratio a target search tries.
_MAX_SPARSE_RATIO = 0.9


@dataclass(frozen=True)
class NNIPruningParams(TargetParams):
    """Parameters of the NNI pruner adapters. At most one target may be set."""

    amount_field: ClassVar[str] = "sparse_ratio"

    # Fraction of each layer's output channels that NNI masks, e.g. 0.5.
    sparse_ratio: float | None = None
    # Whether hidden linear layers lose neurons too, besides the filters of conv layers.
    prune_linear: bool = True


@dataclass(frozen=True)
class NNIGradientParams(NNIPruningParams):
    """Parameters of NNI pruners that read gradients."""

    # Training batches whose gradients NNI collects, without changing the weights.
    training_steps: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.training_steps < 1:
            raise ValueError(
                f"training_steps = {self.training_steps} is invalid; expected 1 or more"
            )


@dataclass(frozen=True)
class NNISlimParams(NNIGradientParams):
    """Parameters of NNI's network slimming pruner."""

    # Weight of the L1 penalty on the BatchNorm scaling factors.
    regular_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.regular_scale < 0:
            raise ValueError(f"regular_scale = {self.regular_scale} is invalid; expected 0 or more")


class NNIPruning(Method):
    """NNI masks the channels, Torch-Pruning removes them, the harness fine-tunes."""

    family = Family.PRUNING
    Params = NNIPruningParams
    start_from = "dense"
    requires = ("nni",)
    install_hint = INSTALL_HINT
    #: NNI's pruner class, in ``nni.compression.pruning``.
    pruner_class: ClassVar[str] = ""

    def op_types(self) -> list[str]:
        """Return the module types NNI masks."""
        return ["Conv2d", "Linear"] if self.params.prune_linear else ["Conv2d"]

    def build_pruner(
        self, model: nn.Module, config_list: list[dict[str, Any]], ctx: RunContext
    ) -> Any:
        """Return the NNI pruner bound to ``model``. Gradient pruners also get an evaluator."""
        from nni.compression import pruning

        return getattr(pruning, self.pruner_class)(model, config_list)

    def mask_owners(self, model: nn.Module, example: torch.Tensor) -> dict[str, str]:
        """Map each masked module name to the conv or linear layer whose channels it masks."""
        return {name: name for name in filters_per_layer(model)}

    def after_training(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        params: NNIPruningParams = self.params
        example = ctx.example_input(1)
        dense = count_complexity(model, example)
        target = resolve_target(params, ctx.references, dense.macs)
        owners = self.mask_owners(model, example)

        excluded = sorted(final_layers(model, example))

        def plan_at(ratio: float) -> dict[str, list[int]]:
            # A fresh pruner per ratio, because Taylor's gradient buffers do not outlive compress().
            config = [
                {"op_types": self.op_types(), "exclude_op_names": excluded, "sparse_ratio": ratio}
            ]
            pruner = self.build_pruner(copy.deepcopy(model), config, ctx)
            _, masks = pruner.compress()
            pruner.unwrap_model()
            plan = plan_from_masks(masks, owners)
            if not plan:
                raise MethodError(
                    f"{self.name}: NNI found no {'/'.join(self.op_types())} layer to prune "
                    "in this model"
                )
            return plan

        counted: dict[tuple, int] = {}

        def count_plan(plan: dict[str, list[int]]) -> int:
            # Neighbouring ratios often give the same masks, so counts are cached per plan.
            key = tuple(sorted((name, tuple(indices)) for name, indices in plan.items()))
            if key not in counted:
                pruned, _ = remove_filters(copy.deepcopy(model), example, plan)
                counted[key] = target.count(count_complexity(pruned, example), nonzero=False)
            return counted[key]

        ratio, evaluations = target.ratio, 0
        if target.kind != "amount":
            total = dense.macs if target.kind == "macs" else dense.params
            found = bisect_amount(
                lambda r: count_plan(plan_at(r)),
                total * target.ratio,
                _MAX_SPARSE_RATIO,
                params.tolerance,
                max_evaluations=16,
            )
            ratio, evaluations = found.amount, found.evaluations
        plan = plan_at(ratio)

        model, removal = remove_filters(model, example, plan)
        self._record(ctx, model, example, target, dense, ratio, evaluations, removal.as_dict())
        return model

    def _record(
        self,
        ctx: RunContext,
        model: nn.Module,
        example: torch.Tensor,
        target: Any,
        dense: Any,
        ratio: float,
        evaluations: int,
        removal: dict[str, Any],
    ) -> None:
        report = target_report(
            target,
            dense,
            count_complexity(model, example),
            nonzero=False,
            tolerance=self.params.tolerance,
        )
        if report.get("met") is False:
            logger.warning(
                "%s missed its %s target by %+.1f%%", self.name, target.kind, 100 * report["error"]
            )
        ctx.diagnostics["pruning"] = {
            "method": self.name,
            "nni_pruner": self.pruner_class,
            "sparse_ratio": ratio,
            "evaluations": evaluations,
            "removal": removal,
            "target": report,
        }


def plan_from_masks(
    masks: dict[str, dict[str, torch.Tensor | None]], owners: dict[str, str]
) -> dict[str, list[int]]:
    """Return the output channels whose weight mask is all zero, per conv or linear layer.

    ``owners`` maps a masked module (a BatchNorm for Slim) to the layer whose channels go.
    """
    plan = {}
    for module_name, targets in masks.items():
        mask = targets.get("weight")
        owner = owners.get(module_name)
        if mask is None or owner is None:
            continue
        zero = mask.reshape(mask.shape[0], -1).abs().sum(dim=1) == 0
        plan[owner] = [int(i) for i in torch.nonzero(zero).flatten()]
    return plan


class _GradientPruning(NNIPruning):
    """NNI pruners that need an evaluator: gradients from training batches, weights frozen."""

    Params = NNIGradientParams

    def pruner_options(self) -> dict[str, Any]:
        return {"training_steps": self.params.training_steps}

    def build_pruner(
        self, model: nn.Module, config_list: list[dict[str, Any]], ctx: RunContext
    ) -> Any:
        import nni
        from nni.compression import pruning
        from nni.compression.utils import TorchEvaluator

        def training_func(
            model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None
        ):
            model.train()
            for step, batch in enumerate(_cycle(ctx)):
                if max_steps is not None and step >= max_steps:
                    break
                loss = training_step(batch, model)
                optimizers.zero_grad()
                loss.backward()
                optimizers.step()

        def training_step(batch, model):
            return nn.functional.cross_entropy(model(batch[0]), batch[1])

        # A learning rate of zero lets NNI read gradients while the weights stay as trained.
        optimizer = nni.trace(torch.optim.SGD)(model.parameters(), lr=0.0)
        evaluator = TorchEvaluator(training_func, optimizer, training_step)
        return getattr(pruning, self.pruner_class)(
            model, config_list, evaluator, **self.pruner_options()
        )


def _cycle(ctx: RunContext) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from ctx.train_batches()


@register
class NNIL1Norm(NNIPruning):
    name = "nni.l1"
    pruner_class = "L1NormPruner"
    summary = (
        "NNI 3.0 L1NormPruner masks, removed with Torch-Pruning (Li et al., ICLR 2017), fine-tuned"
    )


@register
class NNIL2Norm(NNIPruning):
    name = "nni.l2"
    pruner_class = "L2NormPruner"
    summary = "NNI 3.0 L2NormPruner masks, removed with Torch-Pruning, fine-tuned"


@register
class NNIFPGM(NNIPruning):
    name = "nni.fpgm"
    pruner_class = "FPGMPruner"
    summary = (
        "NNI 3.0 FPGMPruner masks, removed with Torch-Pruning (He et al., CVPR 2019), fine-tuned"
    )


@register
class NNITaylor(_GradientPruning):
    name = "nni.taylor"
    pruner_class = "TaylorPruner"
    summary = "NNI 3.0 TaylorPruner masks removed with Torch-Pruning (Molchanov et al., CVPR 2019)"


@register
class NNISlim(_GradientPruning):
    name = "nni.slim"
    requires_batchnorm = True
    pruner_class = "SlimPruner"
    Params = NNISlimParams
    summary = "NNI 3.0 SlimPruner masks on BatchNorm factors (Liu et al., ICCV 2017), removed"

    def op_types(self) -> list[str]:
        return ["BatchNorm2d"]

    def pruner_options(self) -> dict[str, Any]:
        return {
            "training_steps": self.params.training_steps,
            "regular_scale": self.params.regular_scale,
        }

    def mask_owners(self, model: nn.Module, example: torch.Tensor) -> dict[str, str]:
        return {
            batchnorm: layer for layer, batchnorm in following_batchnorms(model, example).items()
        }
