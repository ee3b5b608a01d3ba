"""Sparsity regularisers trained from scratch, then thresholded and pruned filter by filter.

Every method here adds ``λ · Σ_l w_l · R(W_l)`` to the task loss on each main-phase step,
where ``W_l`` is the weight of a penalised layer written as a matrix with one row per output
filter (``N × C·k·k`` for a conv of shape ``(N, C, k, k)``; the weight itself for a linear
layer), and ``w_l`` is 1, or ``1 / N_l`` with ``weighting = "per_filter_count"``. After the
main phase, a filter is removed when its L2 norm is below ``tau`` times the layer's largest
(or below ``absolute_threshold``), physically and through residual and concatenation
couplings, with :mod:`methods.removal`. The suite's fine-tuning epochs then follow without
the penalty.

The penalties of this module (the l1/l2 pseudo-norms live in :mod:`methods.l1l2`):

- ``l1``: ``R(W) = Σ_ij |W_ij|``, the lasso on every weight of the layer
  (Tibshirani, "Regression shrinkage and selection via the lasso", J. R. Stat. Soc. B, 1996).
- ``l2``: ``R(W) = ½ Σ_ij W_ij²``, weight decay written as a penalty, so ``lam`` has the
  meaning of SGD's ``weight_decay`` (Krogh and Hertz, "A simple weight decay can improve
  generalization", NeurIPS 1991).
- ``group_lasso``: ``R(W) = Σ_n ‖W_n‖₂``, the filter-wise group lasso of Structured Sparsity
  Learning (W. Wen, C. Wu, Y. Wang, Y. Chen, H. Li, "Learning Structured Sparsity in Deep
  Neural Networks", NeurIPS 2016).
- ``hoyer_square``: ``R(W) = (Σ_ij |W_ij|)² / (Σ_ij W_ij² + ε)``, and
- ``group_hs``: ``R(W) = (Σ_n ‖W_n‖₂)² / (‖W‖_F² + ε) + (Σ_c ‖W_{:,c}‖₂)² / (‖W‖_F² + ε)``,
  where ``W_{:,c}`` holds every weight that reads input channel ``c``
  (H. Yang, W. Wen, H. Li, "DeepHoyer: Learning Sparser Neural Network with Differentiable
  Scale-Invariant Sparsity Measures", ICLR 2020).
- ``slimming``: ``R = Σ |γ_n|`` over the scale factors of the BatchNorm that follows each
  penalised layer, and filters are thresholded by ``|γ_n|`` rather than by their weight norm
  (Z. Liu, J. Li, Z. Shen, G. Huang, S. Yan, C. Zhang, "Learning Efficient Convolutional
  Networks through Network Slimming", ICCV 2017). It needs BatchNorm layers.

The final classifier is never penalised or thresholded. The default λ of each method comes
from the ``l1l2-sweep`` suite (LeNet-5, MNIST sample, SGD at learning rate 0.01, 12 epochs);
other models, data or learning rates need their own sweep.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from benchmark.errors import MethodError
from methods.base import Family, Method, RunContext
from methods.registry import register
from methods.removal import (
    final_layers,
    following_batchnorms,
    plan_threshold,
    prunable_modules,
    remove_filters,
    threshold_plan,
)

if TYPE_CHECKING:
    import optuna

__all__ = [
    "FilterRegulariser",
    "GroupHoyerSquare",
    "GroupLasso",
    "HoyerSquare",
    "L1",
    "L2",
    "NetworkSlimming",
    "RegulariserParams",
    "group_hoyer_square",
    "group_lasso",
    "hoyer_square",
    "l1_penalty",
    "l2_penalty",
]

logger = logging.getLogger(__name__)

LAYER_CHOICES = ("conv", "conv+linear")
WEIGHTING_CHOICES = ("none", "per_filter_count")
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


# -- penalties on one weight tensor ----------------------------------------------------------


def as_filter_matrix(weight: torch.Tensor) -> torch.Tensor:
    """Return ``weight`` as a matrix with one row per output filter or neuron."""
    return weight.reshape(weight.shape[0], -1)


def l1_penalty(weight: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Return ``Σ |W_ij|``; ``eps`` is unused and accepted for a uniform signature."""
    return weight.abs().sum()


def l2_penalty(weight: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Return ``½ Σ W_ij²``; ``eps`` is unused and accepted for a uniform signature."""
    return 0.5 * weight.pow(2).sum()


def group_lasso(weight: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Return ``Σ_n ‖W_n‖₂`` over output filters; ``eps`` is unused."""
    return as_filter_matrix(weight).norm(dim=1).sum()


def hoyer_square(weight: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Return the Hoyer-Square measure ``(Σ |W_ij|)² / (Σ W_ij² + eps)``."""
    return weight.abs().sum().pow(2) / (weight.pow(2).sum() + eps)


def group_hoyer_square(weight: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Return Group-HS over output filters plus Group-HS over input channels.

    Input-channel groups are the slices ``W[:, c]``; for a grouped convolution these are the
    channel positions within each group.
    """
    squared = weight.pow(2).sum() + eps
    filters = as_filter_matrix(weight).norm(dim=1).sum()
    columns = weight.transpose(0, 1).reshape(weight.shape[1], -1).norm(dim=1).sum()
    return (filters.pow(2) + columns.pow(2)) / squared


# -- parameters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegulariserParams:
    """Parameters shared by every filter-sparsity regulariser."""

    lam: float = 1e-4  # λ: strength of the summed layer penalties added to the task loss
    eps: float = (
        1e-8  # ε: added to the denominators of ratio penalties; unused by l1, l2, group lasso
    )
    layers: str = "conv"  # penalised and thresholded layers: "conv" or "conv+linear"
    weighting: str = "none"  # per-layer factor: "none" (1) or "per_filter_count" (1 / filters)
    tau: float = 1e-2  # remove a filter whose norm is below tau × the layer's largest norm
    absolute_threshold: float | None = None  # when set, remove filters with norm below it instead

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam = {self.lam} is invalid; expected a finite value >= 0")
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"eps = {self.eps} is invalid; expected a finite value >= 0")
        if self.layers not in LAYER_CHOICES:
            raise ValueError(
                f"layers = {self.layers!r} is invalid; expected one of {', '.join(LAYER_CHOICES)}"
            )
        if self.weighting not in WEIGHTING_CHOICES:
            raise ValueError(
                f"weighting = {self.weighting!r} is invalid; "
                f"expected one of {', '.join(WEIGHTING_CHOICES)}"
            )
        if not 0 <= self.tau < 1:
            raise ValueError(f"tau = {self.tau} is invalid; expected a fraction in [0, 1)")
        threshold = self.absolute_threshold
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0
        ):
            raise ValueError(
                f"absolute_threshold = {threshold!r} is invalid; expected a number >= 0"
            )


# -- the shared method ----------------------------------------------------------------------------


class FilterRegulariser(Method):
    """Base class: penalise, record alive filters, threshold, remove, fine-tune.

    A subclass sets :attr:`layer_penalty` (a function of one weight tensor and ``eps``) and
    :attr:`lam_range` (the λ interval Optuna searches, log-uniform). The hooks:

    - ``before_training`` picks the penalised layers: every conv (and, with
      ``layers = "conv+linear"``, linear) layer except the one producing the model output.
    - ``penalty`` returns ``lam · Σ_l w_l · R(W_l)`` in the main phase and nothing while
      fine-tuning, because the removal has already fixed the structure.
    - ``after_epoch`` stores the alive filters per layer (those the threshold would keep).
    - ``after_training`` thresholds, removes physically, and stores the final filters per
      layer, the threshold, and the validation metric before and after removal.
    """

    family = Family.REGULARISER
    start_from = "scratch"
    main_checkpoint = "last"
    uses_finetune = True
    Params: ClassVar[type] = RegulariserParams
    layer_penalty: ClassVar[Any] = None
    lam_range: ClassVar[tuple[float, float]] = (1e-6, 1e-2)

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._layers: dict[str, nn.Module] = {}
        self._example: torch.Tensor | None = None

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest λ log-uniformly in :attr:`lam_range` and τ log-uniformly in [1e-3, 1e-1]."""
        low, high = cls.lam_range
        return {
            "lam": trial.suggest_float("lam", low, high, log=True),
            "tau": trial.suggest_float("tau", 1e-3, 1e-1, log=True),
        }

    # -- hooks -------------------------------------------------------------------------------

    def before_training(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        self._example = ctx.example_input(2)
        self._layers = self.penalised_layers(model, self._example)
        ctx.diagnostics["penalised_layers"] = list(self._layers)
        ctx.diagnostics["alive_filters"] = []
        ctx.diagnostics["penalty"] = []
        return model

    def penalty(self, model: nn.Module, ctx: RunContext) -> torch.Tensor | None:
        if ctx.phase != "main" or self.params.lam == 0:
            return None
        return self.params.lam * self.total_penalty()

    def after_epoch(self, model: nn.Module, epoch: int, ctx: RunContext) -> None:
        with torch.no_grad():
            penalty = float(self.total_penalty())
        alive = self.alive_filters(model)
        ctx.diagnostics["alive_filters"].append(
            {"phase": ctx.phase, "epoch": epoch + 1, "filters": alive}
        )
        ctx.diagnostics["penalty"].append(
            {"phase": ctx.phase, "epoch": epoch + 1, "value": penalty}
        )
        logger.debug("%s epoch %d: alive filters %s", self.name, epoch + 1, alive)

    def after_training(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        plan = self.plan(model)
        val_before = ctx.evaluate(model, "val")
        model, report = remove_filters(model, self._example, plan)
        val_after = ctx.evaluate(model, "val")

        ctx.diagnostics["threshold"] = {
            **plan_threshold(self.params.tau, self.params.absolute_threshold),
            "score": self.score_name,
        }
        ctx.diagnostics["final_filters"] = report.filters_after
        ctx.diagnostics["removal"] = report.as_dict()
        ctx.diagnostics["val_before_removal"] = val_before
        ctx.diagnostics["val_after_removal"] = val_after
        logger.info(
            "%s removed filters: %s -> %s (val %.4f before, %.4f after removal)",
            self.label(),
            sum(report.filters_before.values()),
            sum(report.filters_after.values()),
            val_before,
            val_after,
        )
        return model

    # -- helpers for subclasses --------------------------------------------------------------

    #: What the threshold compares: written into the row's ``threshold`` diagnostics.
    score_name: ClassVar[str] = "filter_l2_norm"

    def penalised_layers(self, model: nn.Module, example: torch.Tensor) -> dict[str, nn.Module]:
        """Return the layers to penalise and threshold, by name; raise if there are none."""
        excluded = final_layers(model, example)
        types = _CONV_TYPES if self.params.layers == "conv" else (*_CONV_TYPES, nn.Linear)
        layers = {
            name: module
            for name, module in prunable_modules(model).items()
            if name not in excluded and isinstance(module, types)
        }
        if not layers:
            raise MethodError(
                f"method {self.name!r} with layers = {self.params.layers!r} finds no layer "
                f"to penalise in {type(model).__name__}; try layers = 'conv+linear'"
            )
        return layers

    def layer_weight(self, module: nn.Module) -> float:
        """Return the per-layer factor ``w_l`` of the chosen weighting."""
        if self.params.weighting == "per_filter_count":
            return 1.0 / module.weight.shape[0]
        return 1.0

    def total_penalty(self) -> torch.Tensor:
        """Return ``Σ_l w_l · R(W_l)`` over the penalised layers (without λ)."""
        penalty_fn = type(self).layer_penalty
        terms = [
            self.layer_weight(module) * penalty_fn(module.weight, self.params.eps)
            for module in self._layers.values()
        ]
        return torch.stack(terms).sum()

    def scores(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """Return the per-filter scores to threshold, or None for the filters' L2 norms."""
        return None

    def plan(self, model: nn.Module) -> dict[str, list[int]]:
        """Return the channels the threshold removes from the penalised layers."""
        return threshold_plan(
            model,
            tau=self.params.tau,
            absolute=self.params.absolute_threshold,
            example_input=self._example,
            scores=self.scores(model),
            layers=list(self._layers),
        )

    def alive_filters(self, model: nn.Module) -> dict[str, int]:
        """Return the filters per penalised layer that the threshold would keep now."""
        plan = self.plan(model)
        return {
            name: module.weight.shape[0] - len(plan.get(name, []))
            for name, module in self._layers.items()
        }


# -- the baselines --------------------------------------------------------------------------------


@dataclass(frozen=True)
class L1Params(RegulariserParams):
    lam: float = 3e-3  # λ: strength of Σ|W| added to the task loss


@register
class L1(FilterRegulariser):
    """Lasso on every weight of the penalised layers."""

    name = "l1"
    Params = L1Params
    layer_penalty = staticmethod(l1_penalty)
    lam_range = (1e-4, 3e-2)
    summary = "L1 (lasso) on all weights, then filter thresholding and removal (Tibshirani 1996)"


@dataclass(frozen=True)
class L2Params(RegulariserParams):
    lam: float = 5e-4  # λ: weight-decay coefficient; the penalty is ½ λ ‖W‖²


@register
class L2(FilterRegulariser):
    """Weight decay as a penalty on the penalised layers."""

    name = "l2"
    Params = L2Params
    layer_penalty = staticmethod(l2_penalty)
    lam_range = (1e-5, 1e-1)
    summary = (
        "L2 weight decay, then filter thresholding and removal (Krogh and Hertz, NeurIPS 1991)"
    )


@dataclass(frozen=True)
class GroupLassoParams(RegulariserParams):
    lam: float = 1e-2  # λ: strength of Σ_n ‖W_n‖₂ added to the task loss


@register
class GroupLasso(FilterRegulariser):
    """Filter-wise group lasso (Structured Sparsity Learning)."""

    name = "group_lasso"
    Params = GroupLassoParams
    layer_penalty = staticmethod(group_lasso)
    lam_range = (1e-5, 1e-1)
    summary = "filter-wise group lasso, SSL (Wen et al., NeurIPS 2016), then filter removal"


@dataclass(frozen=True)
class HoyerSquareParams(RegulariserParams):
    lam: float = 1e-4  # λ: strength of the Hoyer-Square measures added to the task loss


@register
class HoyerSquare(FilterRegulariser):
    """Element-wise Hoyer-Square (DeepHoyer), thresholded per filter."""

    name = "hoyer_square"
    Params = HoyerSquareParams
    layer_penalty = staticmethod(hoyer_square)
    lam_range = (1e-6, 1e-2)
    summary = "Hoyer-Square, DeepHoyer (Yang, Wen, Li, ICLR 2020), then filter removal"


@dataclass(frozen=True)
class GroupHoyerSquareParams(RegulariserParams):
    lam: float = 3e-2  # λ: strength of the Group-HS measures added to the task loss


@register
class GroupHoyerSquare(FilterRegulariser):
    """Group-HS over filters and input channels (DeepHoyer)."""

    name = "group_hs"
    Params = GroupHoyerSquareParams
    layer_penalty = staticmethod(group_hoyer_square)
    lam_range = (1e-4, 1.0)
    summary = "Group-HS, DeepHoyer (Yang, Wen, Li, ICLR 2020), then filter removal"


@dataclass(frozen=True)
class SlimmingParams(RegulariserParams):
    lam: float = 1e-4  # λ: strength of Σ|γ| over the BatchNorm scales


@register
class NetworkSlimming(FilterRegulariser):
    """L1 on BatchNorm scale factors; channels are thresholded by ``|γ|``."""

    name = "slimming"
    requires_batchnorm = True
    Params = SlimmingParams
    lam_range = (1e-6, 1e-2)
    score_name = "batchnorm_abs_gamma"
    requires_batchnorm = True
    summary = "network slimming, L1 on BN scales (Liu et al., ICCV 2017); needs BatchNorm"

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._batchnorms: dict[str, nn.Module] = {}

    def before_training(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        model = super().before_training(model, ctx)
        named = dict(model.named_modules())
        pairs = following_batchnorms(model, self._example)
        self._batchnorms = {
            layer: named[pairs[layer]]
            for layer in self._layers
            if layer in pairs and named[pairs[layer]].weight is not None
        }
        if not self._batchnorms:
            raise MethodError(
                "method 'slimming' needs a BatchNorm with affine scales after the penalised "
                f"layers, and {type(model).__name__} has none; use it on models with BatchNorm "
                "such as lenet5-bn, vgg16 or resnet56"
            )
        # Only layers with a BatchNorm have a scale to penalise and threshold.
        self._layers = {name: self._layers[name] for name in self._batchnorms}
        ctx.diagnostics["penalised_layers"] = list(self._layers)
        return model

    def total_penalty(self) -> torch.Tensor:
        terms = [
            self.layer_weight(self._layers[name]) * batchnorm.weight.abs().sum()
            for name, batchnorm in self._batchnorms.items()
        ]
        return torch.stack(terms).sum()

    def scores(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        return {
            name: batchnorm.weight.detach().abs() for name, batchnorm in self._batchnorms.items()
        }
