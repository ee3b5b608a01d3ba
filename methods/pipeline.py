"""Pipelines: methods chained so that each stage's hooks run in order, e.g. l1/l2 then int8."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from methods.base import Batch, Family, Method, RunContext

__all__ = ["Pipeline"]


class Pipeline(Method):
    """Run several methods as one: hooks are chained in stage order.

    The first stage decides the start weights. Fine-tuning happens when any stage uses it.
    Penalties add up. The export of the last stage that writes its own file wins, so
    ``l1l2.across`` then ``int8.static`` exports the quantised, filter-pruned model.
    """

    family = Family.BASELINE

    def __init__(self, stages: list[Method]) -> None:
        super().__init__(None)
        if len(stages) < 2:
            raise ValueError("a pipeline needs at least two stages")
        self.stages = stages
        first = stages[0]
        # Instance attributes shadow the class attributes the harness reads.
        self.name = "+".join(stage.name for stage in stages)  # type: ignore[misc]
        self.family = stages[-1].family  # type: ignore[misc]
        self.start_from = first.start_from  # type: ignore[misc]
        self.uses_finetune = any(stage.uses_finetune for stage in stages)  # type: ignore[misc]
        self.main_checkpoint = (  # type: ignore[misc]
            "last" if any(stage.main_checkpoint == "last" for stage in stages) else "best_val"
        )

    def label(self) -> str:
        return "+".join(stage.label() for stage in self.stages)

    def overrides(self, hook: str) -> bool:
        return any(stage.overrides(hook) for stage in self.stages)

    def before_training(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        for stage in self.stages:
            model = stage.before_training(model, ctx)
        return model

    def loss(self, task_loss: torch.Tensor, batch: Batch, ctx: RunContext) -> torch.Tensor:
        for stage in self.stages:
            task_loss = stage.loss(task_loss, batch, ctx)
        return task_loss

    def penalty(self, model: nn.Module, ctx: RunContext) -> torch.Tensor | None:
        total = None
        for stage in self.stages:
            value = stage.penalty(model, ctx)
            if value is not None:
                total = value if total is None else total + value
        return total

    def after_step(self, model: nn.Module, ctx: RunContext) -> None:
        for stage in self.stages:
            stage.after_step(model, ctx)

    def after_epoch(self, model: nn.Module, epoch: int, ctx: RunContext) -> None:
        for stage in self.stages:
            stage.after_epoch(model, epoch, ctx)

    def after_training(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        for stage in self.stages:
            model = stage.after_training(model, ctx)
        return model

    def before_finetune(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        for stage in self.stages:
            model = stage.before_finetune(model, ctx)
        return model

    def after_finetune(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        for stage in self.stages:
            model = stage.after_finetune(model, ctx)
        return model

    def export(self, model: nn.Module, path: Path, ctx: RunContext) -> bool:
        return any(stage.export(model, path, ctx) for stage in reversed(self.stages))

    def describe(self) -> dict[str, Any]:
        return {"stages": [stage.name for stage in self.stages]}
