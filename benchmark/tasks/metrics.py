"""Task metrics, accumulated batch by batch so large splits never need all outputs at once."""

from __future__ import annotations

import torch

__all__ = ["METRICS", "Accuracy", "Metric"]


class Metric:
    """Accumulates a metric over batches; :meth:`compute` returns the value in [0, 1]."""

    name = ""

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement update()")

    def compute(self) -> float:
        raise NotImplementedError(f"{type(self).__name__} must implement compute()")

    def summary(self) -> dict[str, object]:
        """Return every figure of the metric for the result row; by default only compute()."""
        return {self.name: self.compute()}


class Accuracy(Metric):
    """Top-1 accuracy of class logits."""

    name = "accuracy"

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.correct += int((outputs.argmax(dim=1) == targets).sum())
        self.total += int(targets.numel())

    def compute(self) -> float:
        if self.total == 0:
            raise ValueError("accuracy of an empty split is undefined")
        return self.correct / self.total


METRICS: dict[str, type[Metric]] = {"accuracy": Accuracy}
