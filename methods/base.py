"""The method plugin contract: the base class that every compression method implements.

The harness owns the model, the data, the optimiser and the training loop. For one run it
calls the hooks of a :class:`Method` in this order::

    model = method.before_training(model, ctx)          # once, after the start weights are set
    for each epoch of the main phase:
        for each batch:
            loss = method.loss(task_loss, batch, ctx)   # default: the task loss
            loss = loss + method.penalty(model, ctx)    # default: no penalty
            backward, optimiser step
            method.after_step(model, ctx)               # masks, proximal updates
        method.after_epoch(model, epoch, ctx)           # diagnostics, schedules
    model = method.after_training(model, ctx)           # compress: remove filters, apply masks
    model = method.before_finetune(model, ctx)          # fake quantisation, masks to keep
    fine-tuning phase, with the same per-step hooks
    model = method.after_finetune(model, ctx)           # make masks permanent, fold
    method.export(model, path, ctx)                     # optional own ONNX export

Every hook has a default that leaves the model unchanged, so a method implements only the
hooks it needs. Hooks run in the harness process, in the thread that trains, one run at a
time, so a method instance may keep state between hooks. A method instance serves exactly
one run.

The start weights come from :attr:`Method.start_from`. With ``"scratch"``, a freshly
initialised model trains for the whole main phase. With ``"dense"``, the run loads the
suite's shared dense checkpoint, pays its pre-training epochs, and has no main phase.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from benchmark.errors import MethodError

if TYPE_CHECKING:
    import optuna

    from benchmark.budget import Budget, BudgetLedger

__all__ = [
    "Batch",
    "Family",
    "Method",
    "NoParams",
    "RunContext",
    "parse_params",
]


class Family(str, enum.Enum):
    """The family a method belongs to; reports group rows by it."""

    BASELINE = "baseline"
    REGULARISER = "regulariser"
    PRUNING = "pruning"
    QUANTISATION = "quantisation"
    DISTILLATION = "distillation"
    SEARCH = "search"


@dataclass(frozen=True)
class NoParams:
    """Parameters of a method that takes none."""


@dataclass
class Batch:
    """One training batch, as passed to the loss hook."""

    inputs: torch.Tensor
    targets: torch.Tensor
    outputs: torch.Tensor
    step: int
    epoch: int
    phase: str


@dataclass
class RunContext:
    """Services the harness provides to a method during one run.

    Methods call these functions instead of touching data or optimisers themselves, so the
    budget is charged and the test split stays sealed.
    """

    task_name: str
    num_classes: int
    input_shape: tuple[int, ...]
    seed: int
    device: torch.device
    budget: Budget
    ledger: BudgetLedger
    workdir: Path
    # Finished ok rows of the same task, seed and budget, filled by the runner for parameters
    # such as ``match = "l1l2.across"``. Keys are row labels, and bare method names, which
    # resolve to the row with default parameters when there is one.
    references: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Free-form facts a method wants in its result row: thresholds, per-epoch filter counts.
    diagnostics: dict[str, Any] = field(default_factory=dict)
    # The phase being trained: "main" or "finetune"; hooks may read it.
    phase: str = "main"
    # The suite's ONNX export settings, ``opset`` and ``dynamic_batch``, set by the harness
    # before it calls :meth:`Method.export`, so a method's own file matches the others.
    export_options: dict[str, Any] = field(default_factory=dict)
    _harness: Any = None

    def train(self, model: nn.Module, epochs: int, phase: str = "finetune") -> nn.Module:
        """Train ``model`` with the harness loop for ``epochs`` epochs, charged to the budget.

        The method's per-step hooks run as in any phase. Raises
        :class:`~benchmark.errors.BudgetError` when the budget has fewer epochs left.
        """
        return self._harness.train_phase(model, epochs, phase, self)

    def evaluate(self, model: nn.Module, split: str = "val") -> float:
        """Return the task metric of ``model`` on the training or validation split.

        The test split is reserved for the final figures and raises ``ValueError`` here.
        """
        return self._harness.evaluate(model, split)

    def train_batches(self, batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield one shuffled pass of training batches without charging the budget.

        For calibration and importance estimation only: a method that updates weights with
        these batches must use :meth:`train` instead.
        """
        return self._harness.train_batches(batch_size)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """Return real training inputs of the task's shape, for tracing and export."""
        return self._harness.example_input(batch_size)

    def dense_model(self) -> nn.Module:
        """Return a copy of the shared dense model, charging its epochs to this run once."""
        return self._harness.dense_model(self)

    def teacher_model(self, epochs: int) -> nn.Module:
        """Return the task's dense model trained for ``epochs`` epochs, as a distillation teacher.

        Cached like :meth:`dense_model`, per task, training settings, seed and epochs. Its
        epochs are charged to this run once, as ``"teacher"``, unless the run already paid
        for the same checkpoint as its start weights.
        """
        return self._harness.teacher_model(self, epochs)

    def build_model(self, **model_options: Any) -> nn.Module:
        """Build a freshly initialised model of the task's family, e.g. with other widths."""
        return self._harness.build_model(**model_options)


class Method:
    """Base class of compression methods.

    Subclasses set the class attributes and override the hooks they need. Register a
    subclass with :func:`methods.registry.register`, or expose it through the entry-point
    group ``compressbench.methods``.
    """

    #: Unique name; variants are spelt ``family.variant``, for example ``l1l2.across``.
    name: ClassVar[str] = ""
    family: ClassVar[Family] = Family.BASELINE
    #: A dataclass of typed parameters with defaults, one comment per field.
    Params: ClassVar[type] = NoParams
    #: ``"scratch"`` or ``"dense"``; see the module docstring.
    start_from: ClassVar[str] = "scratch"
    #: Whether the suite's fine-tuning epochs are spent after :meth:`after_training`. When
    #: False, the main phase gets the whole budget.
    uses_finetune: ClassVar[bool] = True
    #: Which main-phase weights go on to compression: ``"best_val"`` keeps the epoch with
    #: the best validation metric, ``"last"`` the final epoch. Regularisers want ``"last"``
    #: because sparsity grows with training.
    main_checkpoint: ClassVar[str] = "best_val"
    #: Importable modules the method needs; when one is missing the method is listed as
    #: unavailable with :attr:`install_hint`.
    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""
    #: Whether the method needs BatchNorm layers (network slimming, BN-scale importance).
    #: The conformance tests then use ``lenet5bn-mnist-sample``.
    requires_batchnorm: ClassVar[bool] = False
    #: One line for ``compressbench list``, naming the paper (authors, venue, year) it implements.
    summary: ClassVar[str] = ""

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()

    # -- description --------------------------------------------------------------------

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Return whether the method can run here, and why not."""
        for module in cls.requires:
            if importlib.util.find_spec(module) is None:
                return False, f"needs the Python module {module!r}; {cls.install_hint}".rstrip("; ")
        return True, ""

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest values for the hyperparameters Optuna may tune; none by default."""
        return {}

    def label(self) -> str:
        """Return the row label: the name, plus parameters that differ from the defaults.

        Parameters named in ``labelled_params`` (the runner sets it to the swept ones) appear
        even at their default value, so every point of a sweep carries its value.
        """
        changed = params_changed(self.params)
        for key in getattr(self, "labelled_params", ()):
            changed.setdefault(key, getattr(self.params, key))
        changed = {f.name: changed[f.name] for f in dataclasses.fields(self.params) if f.name in changed}
        if not changed:
            return self.name
        inner = ", ".join(f"{key}={value}" for key, value in changed.items())
        return f"{self.name}({inner})"

    # -- lifecycle hooks; each default leaves the model unchanged ------------------------

    def before_training(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        """Called once before the main phase; may wrap or replace the model."""
        return model

    def loss(self, task_loss: torch.Tensor, batch: Batch, ctx: RunContext) -> torch.Tensor:
        """Called on every step; returns the loss to minimise. Distillation overrides it."""
        return task_loss

    def penalty(self, model: nn.Module, ctx: RunContext) -> torch.Tensor | None:
        """Called on every step of every phase; a returned tensor is added to the loss.

        Read ``ctx.phase`` to penalise only the main phase, as the built-in regularisers do.
        """
        return None

    def after_step(self, model: nn.Module, ctx: RunContext) -> None:
        """Called after every optimiser step, under ``torch.no_grad()``."""

    def after_epoch(self, model: nn.Module, epoch: int, ctx: RunContext) -> None:
        """Called after every epoch of every phase, after validation."""

    def after_training(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        """Called once after the main phase; returns the compressed model."""
        return model

    def before_finetune(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        """Called once before the fine-tuning phase, even when it has zero epochs."""
        return model

    def after_finetune(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        """Called once after the fine-tuning phase; returns the final model."""
        return model

    def export(self, model: nn.Module, path: Path, ctx: RunContext) -> bool:
        """Write the deployed ONNX model to ``path`` and return True, or return False.

        When a method writes its own file (a quantised model, say), the harness measures
        accuracy by running that file in ONNX Runtime. By default the harness exports the
        PyTorch model itself.
        """
        return False

    # -- helpers for hooks ---------------------------------------------------------------

    def overrides(self, hook: str) -> bool:
        """Return whether this method overrides ``hook``; the loop skips unused hooks."""
        return getattr(type(self), hook) is not getattr(Method, hook)


def params_changed(params: Any) -> dict[str, Any]:
    """Return the fields of a parameter dataclass that differ from their defaults."""
    if not dataclasses.is_dataclass(params):
        return {}
    default = type(params)()
    return {
        f.name: getattr(params, f.name)
        for f in dataclasses.fields(params)
        if getattr(params, f.name) != getattr(default, f.name)
    }


def parse_params(method_cls: type[Method], values: Mapping[str, Any], where: str) -> Any:
    """Build ``method_cls.Params`` from a mapping, checking names and types.

    ``where`` names the suite file and key in error messages. Integers are accepted for
    float fields; every other mismatch raises :class:`~benchmark.errors.MethodError`.
    """
    params_cls = method_cls.Params
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        allowed = ", ".join(sorted(fields)) or "none"
        raise MethodError(
            f"{where}: unknown parameter {unknown[0]!r} for method {method_cls.name!r}; "
            f"allowed parameters: {allowed}"
        )

    converted: dict[str, Any] = {}
    defaults = params_cls()
    for key, value in values.items():
        converted[key] = _coerce(value, getattr(defaults, key), f"{where}.{key}", method_cls.name)

    try:
        return params_cls(**converted)
    except (TypeError, ValueError) as error:
        raise MethodError(f"{where}: invalid parameters for method {method_cls.name!r}: {error}") from error


def _coerce(value: Any, default: Any, where: str, method: str) -> Any:
    if default is None or isinstance(default, bool):
        if isinstance(default, bool) and not isinstance(value, bool):
            raise MethodError(f"{where}: expected true or false for method {method!r}, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    if not isinstance(value, type(default)):
        raise MethodError(
            f"{where}: expected {type(default).__name__} for method {method!r}, "
            f"got {type(value).__name__} {value!r}"
        )
    return value
