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


@dataclass(frozen=True)
class CrashOnceParams:
    # A file path. When the file does not exist yet, the method creates it and kills its own
    # process in the middle of training, as an out-of-memory kill or a lost node would.
    marker: str = ""


class CrashOnce(Method):
    """Dense training whose first attempt dies with SIGKILL; tests executor retries."""

    name = "example.crash_once"
    family = Family.BASELINE
    Params = CrashOnceParams
    uses_finetune = False
    summary = "example plugin: kills its worker process on the first attempt"

    def after_epoch(self, model, epoch, ctx):
        import os
        import signal
        from pathlib import Path

        marker = Path(self.params.marker)
        if self.params.marker and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
