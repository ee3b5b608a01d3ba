"""The l1/l2 filter-sparsity regulariser, in three variants.

Source: A. Berthelier, Y. Yan, T. Chateau, C. Blanc, S. Duffner, C. Garcia, "Learning Sparse
Filters in Deep Convolutional Neural Networks with a l1/l2 Pseudo-Norm", Pattern Recognition,
ICPR International Workshops and Challenges, 2021 (arXiv 2007.10022, 2020). A penalty on the
ratio of the l1 and l2 norms of the filter coefficients concentrates each layer's information
in few filters, so the filters left with small values can be removed without retraining.

Write a layer's weight as a matrix ``W`` with one row per output filter: ``N × C·k·k`` for a
conv of shape ``(N, C, k, k)``, and the weight itself (one row per neuron) for a linear
layer. The training loss is ``task loss + λ · Σ_l w_l · R(W_l)``, where ``w_l`` is 1 or
``1 / N_l`` (``weighting``). The source leaves the axis of the ratio open, so three variants
are implemented:

- ``l1l2.across`` (default):
  ``R(W) = Σ_j ‖W[:, j]‖₁ / (‖W[:, j]‖₂ + ε)``, one ratio per coefficient position ``j``,
  taken across the filters. It is invariant to scaling the layer (for ε = 0) and smallest
  when few filters carry each coefficient, which empties whole filters.
- ``l1l2.within``: ``R(W) = Σ_n ‖W[n, :]‖₁ / (‖W[n, :]‖₂ + ε)``, one ratio per filter over
  its own coefficients: sparsity inside each filter.
- ``l1l2.norms``: ``R(W) = ‖v‖₁ / (‖v‖₂ + ε)`` with ``v_n = ‖W[n, :]‖₂``: the ratio over
  the vector of filter norms, a scale-invariant group sparsity measure.

After the main phase, a filter is removed when ``‖W[n, :]‖₂ < τ · max_m ‖W[m, :]‖₂`` (or
below ``absolute_threshold``), physically, as for every regulariser of
:mod:`methods.regularisers`, whose base class runs the training, the per-epoch alive-filter
counts, the removal and the fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.registry import register
from methods.regularisers import FilterRegulariser, RegulariserParams, as_filter_matrix

__all__ = [
    "L1L2Across",
    "L1L2Norms",
    "L1L2NormsParams",
    "L1L2Params",
    "L1L2Within",
    "l1l2_across",
    "l1l2_norms",
    "l1l2_within",
]


def l1l2_across(weight: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Return ``Σ_j ‖W[:, j]‖₁ / (‖W[:, j]‖₂ + eps)``: ratios across filters, per coefficient."""
    matrix = as_filter_matrix(weight)
    return (matrix.abs().sum(dim=0) / (matrix.norm(dim=0) + eps)).sum()


def l1l2_within(weight: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Return ``Σ_n ‖W[n, :]‖₁ / (‖W[n, :]‖₂ + eps)``: one ratio per filter."""
    matrix = as_filter_matrix(weight)
    return (matrix.abs().sum(dim=1) / (matrix.norm(dim=1) + eps)).sum()


def l1l2_norms(weight: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Return ``‖v‖₁ / (‖v‖₂ + eps)`` for the vector ``v`` of filter L2 norms."""
    norms = as_filter_matrix(weight).norm(dim=1)
    return norms.sum() / (norms.norm() + eps)


@dataclass(frozen=True)
class L1L2Params(RegulariserParams):
    """Parameters of the l1/l2 regularisers."""

    lam: float = 3e-2  # λ: strength of the summed l1/l2 ratios added to the task loss
    eps: float = 1e-8  # ε: added to each ratio's l2 denominator, so empty groups stay finite


@dataclass(frozen=True)
class L1L2NormsParams(L1L2Params):
    """Parameters of ``l1l2.norms``: one ratio per layer, so a larger default λ."""

    lam: float = 3e-1  # λ: strength of the summed per-layer l1/l2 ratios of filter norms


@register
class L1L2Across(FilterRegulariser):
    """l1/l2 across filters, per coefficient position: the default variant."""

    name = "l1l2.across"
    Params = L1L2Params
    layer_penalty = staticmethod(l1l2_across)
    lam_range = (1e-3, 3e-1)
    summary = "l1/l2 across filters per coefficient (Berthelier et al., ICPR workshops 2020)"


@register
class L1L2Within(FilterRegulariser):
    """l1/l2 over each filter's own coefficients."""

    name = "l1l2.within"
    Params = L1L2Params
    layer_penalty = staticmethod(l1l2_within)
    lam_range = (1e-3, 3e-1)
    summary = "l1/l2 within each filter (Berthelier et al., ICPR workshops 2020)"


@register
class L1L2Norms(FilterRegulariser):
    """l1/l2 over the vector of filter norms."""

    name = "l1l2.norms"
    Params = L1L2NormsParams
    layer_penalty = staticmethod(l1l2_norms)
    lam_range = (1e-2, 3.0)
    summary = "l1/l2 over the filter norms (Berthelier et al., ICPR workshops 2020)"
