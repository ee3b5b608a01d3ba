"""A third-party method: train a LeNet at half width. It proves the entry point works."""

from __future__ import annotations

from dataclasses import dataclass

from methods.base import Family, Method


@dataclass(frozen=True)
class HalfWidthParams:
    # Width multiplier applied to every layer of the task's model.
    width_mult: float = 0.5


class HalfWidth(Method):
    """Replace the task's model by the same family at a smaller width, trained from scratch."""

    name = "example.halfwidth"
    family = Family.BASELINE
    Params = HalfWidthParams
    uses_finetune = False
    summary = "example plugin: the task's model at a width multiplier"

    def before_training(self, model, ctx):
        return ctx.build_model(width_mult=self.params.width_mult)
