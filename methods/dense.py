"""The uncompressed baseline: the task's model trained for the whole budget."""

from __future__ import annotations

from methods.base import Family, Method
from methods.registry import register


@register
class Dense(Method):
    """Train the unmodified model for every epoch of the budget; the reference row."""

    name = "dense"
    family = Family.BASELINE
    uses_finetune = False
    summary = "uncompressed baseline, trained for the whole epoch budget"
