"""Knowledge distillation under the suite budget: Hinton students and distillation fine-tuning.

Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", arXiv:1503.02531
(2015). The student minimises, per batch,

    L = (1 − α) · CE(z_s, y) + α · T² · KL(softmax(z_t / T) ‖ softmax(z_s / T))

where ``z_s`` and ``z_t`` are the student's and the teacher's logits, ``CE`` is the task loss
at temperature 1 and the KL divergence is averaged over the batch. The factor T² keeps the
gradient of the soft-target term at the same scale as the hard-target term when T changes,
because that gradient scales as 1/T². Defaults: T = 4, α = 0.9.

α rises linearly from 0 over the student's first ``warmup_epochs`` epochs (2 for
``distill``, at most all of the student's epochs). The gradient of the soft-target term
with respect to the student's logits is α · T · (softmax(z_s / T) − softmax(z_t / T)),
several times that of the task loss while a fresh student disagrees with a confident
teacher. Without the ramp, LeNet-5 students diverged in their first epoch under the default
suite's SGD settings (learning rate 0.02, momentum 0.9) for each of 3 seeds.

Three registered methods share this loss:

- ``distill``: a narrower student trained from scratch against the task's dense model. The
  teacher is trained once per task, training settings, seed and epoch count, cached with the
  shared dense checkpoints, and its epochs are charged to every run that uses it (ledger kind
  ``"teacher"``). ``teacher_share`` of the budget's epochs goes to the teacher and the rest
  to the student, so teacher and student together spend exactly the suite budget.
- ``student.scratch``: the same student architecture without a teacher, trained on the task
  loss for the whole budget. It is the row that shows what distillation adds.
- ``distill.finetune``: the fine-tuning phase of another method with the distillation loss,
  taught by the uncompressed model. It is meant as the last stage of a pipeline such as
  ``pipeline = ["l1l2.across", "distill.finetune"]``.

Student architectures come from a width multiplier, explicit per-layer widths, or
``match = "<method>"``: the per-layer widths of another method's compressed model for the
same task and seed, read from that method's result row.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import MethodError
from benchmark.measure.complexity import filters_per_layer
from benchmark.tasks.models import MODELS
from benchmark.tasks.registry import TASKS
from methods.base import Batch, Family, Method, RunContext
from methods.registry import register

if TYPE_CHECKING:
    import optuna

__all__ = [
    "AlphaWarmup",
    "Distill",
    "DistillFinetune",
    "DistillParams",
    "FinetuneParams",
    "StudentParams",
    "StudentScratch",
    "distillation_loss",
    "resolve_student_widths",
    "soft_target_loss",
    "split_budget",
    "width_layer_names",
]

logger = logging.getLogger(__name__)


# -- the loss ------------------------------------------------------------------------------


def soft_target_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Return T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)), averaged over the batch."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    divergence = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return divergence * temperature**2


def distillation_loss(
    task_loss: torch.Tensor,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Combine the task loss and the soft-target loss: (1 − α) · task_loss + α · T² · KL."""
    soft = soft_target_loss(student_logits, teacher_logits, temperature)
    return (1.0 - alpha) * task_loss + alpha * soft


def _check_loss_params(temperature: float, alpha: float, warmup_epochs: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not warmup_epochs >= 0.0:
        raise ValueError(f"warmup_epochs must be 0 or more, got {warmup_epochs}")


def _suggest_loss_params(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "temperature": trial.suggest_float("temperature", 1.0, 20.0, log=True),
        "alpha": trial.suggest_float("alpha", 0.1, 1.0),
    }


class AlphaWarmup:
    """The weight α of the soft-target term, rising linearly from 0 over the first samples.

    ``value`` is called once per training batch. It returns ``alpha · min(1, seen / ramp)``,
    where ``seen`` counts the training samples so far, this batch included. A ramp of 0
    samples returns ``alpha`` from the first batch.
    """

    def __init__(self, alpha: float, ramp_samples: float = 0.0) -> None:
        self.alpha = alpha
        self.ramp_samples = ramp_samples
        self.seen = 0

    def value(self, batch_size: int) -> float:
        self.seen += batch_size
        if self.ramp_samples <= 0:
            return self.alpha
        return self.alpha * min(1.0, self.seen / self.ramp_samples)


def _warmup_for(params: Any, epochs: int, ctx: RunContext) -> AlphaWarmup:
    """Return the α schedule of a student that trains for ``epochs`` epochs."""
    ramp_epochs = min(params.warmup_epochs, epochs)
    if ramp_epochs <= 0.0:
        return AlphaWarmup(params.alpha)
    train_size = sum(len(targets) for _, targets in ctx.train_batches())
    return AlphaWarmup(params.alpha, ramp_epochs * train_size)


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


# -- parameters ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StudentParams:
    """The student architecture; ``match`` overrides ``widths``, which overrides ``width_mult``."""

    # Scales every width of the task's model (filters, hidden neurons), rounded, at least 1.
    width_mult: float = 0.5
    # Explicit widths in the order of the model's ``widths`` option (LeNet-5: conv1, conv2, fc1).
    widths: tuple[int, ...] = ()
    # Suite method name whose compressed model, for the same task and seed, sets the widths.
    match: str = ""

    def __post_init__(self) -> None:
        if not self.width_mult > 0:
            raise ValueError(f"width_mult must be positive, got {self.width_mult}")
        if any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in self.widths):
            raise ValueError(f"widths must be positive integers, got {list(self.widths)}")
        if self.widths and self.match:
            raise ValueError(
                f"give widths or match, not both: widths = {list(self.widths)}, "
                f"match = {self.match!r}"
            )


@dataclass(frozen=True)
class DistillParams(StudentParams):
    """Parameters of the ``distill`` student."""

    # Softmax temperature T of both teacher and student in the soft-target term.
    temperature: float = 4.0
    # Weight α of the soft-target term; the task loss gets 1 − α.
    alpha: float = 0.9
    # Share of the budget's epochs spent training the teacher, rounded to whole epochs.
    teacher_share: float = 0.5
    # Epochs over which α rises linearly from 0, at most the student's epochs; 0 starts at α.
    warmup_epochs: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_loss_params(self.temperature, self.alpha, self.warmup_epochs)
        if not 0.0 < self.teacher_share < 1.0:
            raise ValueError(
                f"teacher_share must be strictly between 0 and 1, got {self.teacher_share}"
            )


@dataclass(frozen=True)
class FinetuneParams:
    """Parameters of the ``distill.finetune`` stage."""

    # Softmax temperature T of both teacher and student in the soft-target term.
    temperature: float = 4.0
    # Weight α of the soft-target term; the task loss gets 1 − α.
    alpha: float = 0.9
    # Epochs over which α rises linearly from 0, at most the fine-tuning epochs; 0 starts at α.
    warmup_epochs: float = 0.0

    def __post_init__(self) -> None:
        _check_loss_params(self.temperature, self.alpha, self.warmup_epochs)


# -- the budget split and the student architecture -----------------------------------------


def split_budget(epochs: int, teacher_share: float) -> tuple[int, int]:
    """Split ``epochs`` into (teacher, student) epochs, each at least 1.

    The teacher gets ``teacher_share · epochs`` rounded half up, so a share of 0.5 splits a
    12-epoch budget 6 + 6 and a share of 0.75 splits it 9 + 3.
    """
    if epochs < 2:
        raise MethodError(
            f"distillation needs a budget of at least 2 epochs (teacher and student), got {epochs}"
        )
    teacher = min(max(math.floor(teacher_share * epochs + 0.5), 1), epochs - 1)
    return teacher, epochs - teacher


def width_layer_names(ctx: RunContext) -> list[str]:
    """Return, for each entry of the task model's ``widths`` option, the layer it sizes.

    Builds the model once with distinct probe widths (num_classes + 1, num_classes + 2, ...)
    and takes, for each entry, the first conv or linear layer in model order with that many
    outputs. This covers every model family that takes ``widths``, residual ones included.
    """
    definition = TASKS.get(ctx.task_name)
    if definition is None or definition.model not in MODELS:
        raise MethodError(
            f"task {ctx.task_name!r} has no registered model family, so the student's widths "
            "cannot be resolved"
        )
    count = len(MODELS[definition.model].default_widths)
    probe = [ctx.num_classes + 1 + index for index in range(count)]

    with torch.random.fork_rng(devices=[]):
        filters = filters_per_layer(ctx.build_model(widths=probe))
    names = []
    for index, width in enumerate(probe):
        name = next((layer for layer, outputs in filters.items() if outputs == width), None)
        if name is None:
            raise MethodError(
                f"{definition.model}: no layer has the {width} outputs set by widths[{index}], so "
                "student widths cannot be mapped to layers"
            )
        names.append(name)
    return names


def resolve_student_widths(
    params: StudentParams, model: nn.Module, ctx: RunContext, names: list[str]
) -> tuple[list[int], str]:
    """Return the student's ``widths`` and where they come from.

    ``model`` is the task's freshly built dense model, whose widths ``width_mult`` scales.
    ``names`` are the layers that the ``widths`` entries size, from :func:`width_layer_names`.
    """
    if params.match:
        return _matched_widths(params.match, names, model, ctx), f"match={params.match}"
    if params.widths:
        if len(params.widths) != len(names):
            raise MethodError(
                f"widths = {list(params.widths)} has {len(params.widths)} entries; the model of "
                f"task {ctx.task_name!r} expects {len(names)}, one each for {', '.join(names)}"
            )
        return list(params.widths), "widths"
    dense = filters_per_layer(model)
    # Rounded like the model families round their own width_mult.
    widths = [max(1, int(round(dense[name] * params.width_mult))) for name in names]
    return widths, f"width_mult={params.width_mult}"


def _matched_widths(match: str, names: list[str], model: nn.Module, ctx: RunContext) -> list[int]:
    reference = ctx.references.get(match)
    if reference is None:
        known = ", ".join(sorted(ctx.references)) or "none"
        raise MethodError(
            f"match = {match!r}: no finished ok result of that method for task "
            f"{ctx.task_name!r}, seed {ctx.seed} and this budget (finished: {known}); check "
            "that it ran without failing"
        )
    filters = reference.get("metrics", {}).get("filters")
    if not filters:
        raise MethodError(
            f"match = {match!r}: its result row stores no per-layer filters under metrics.filters"
        )

    if all(name in filters for name in names):
        return [int(filters[name]) for name in names]

    # A method that wraps layers renames them; the layer order still identifies them.
    own_layers = list(filters_per_layer(model))
    if len(own_layers) != len(filters):
        raise MethodError(
            f"match = {match!r}: its model has layers {list(filters)}, which neither contain "
            f"{names} nor number {len(own_layers)} like the task's model"
        )
    matched = list(filters.values())
    return [int(matched[own_layers.index(name)]) for name in names]


# -- students trained from scratch ---------------------------------------------------------


class _Student(Method):
    """A narrower model trained from scratch; subclasses decide what teaches it."""

    family = Family.DISTILLATION
    Params = StudentParams
    start_from = "scratch"
    uses_finetune = False

    def build_student(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        """Build the student from freshly seeded weights and record its architecture."""
        names = width_layer_names(ctx)
        widths, source = resolve_student_widths(self.params, model, ctx, names)
        # The same seed whatever ran before, so a distilled student and its undistilled
        # counterpart start from identical weights.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            student = ctx.build_model(widths=widths)
        ctx.diagnostics["student"] = {
            "widths": widths,
            "source": source,
            "dense_widths": [filters_per_layer(model)[name] for name in names],
            "params": sum(p.numel() for p in student.parameters()),
        }
        logger.info("built %s student with widths %s (%s)", self.name, widths, source)
        return student


@register
class Distill(_Student):
    """Train a narrower student with Hinton distillation from the task's dense model.

    The teacher takes ``teacher_share`` of the budget's epochs (charged as ``"teacher"``) and
    the student the rest, in the main phase, with the main learning rate and schedule.
    """

    name = "distill"
    Params = DistillParams
    summary = (
        "Hinton distillation into a narrower student, teacher epochs in the budget "
        "(Hinton et al., 2015)"
    )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.teacher: nn.Module | None = None
        self.alpha = AlphaWarmup(self.params.alpha)

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        return _suggest_loss_params(trial)

    def before_training(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        teacher_epochs, student_epochs = split_budget(ctx.budget.epochs, self.params.teacher_share)
        if ctx.ledger.epochs_left - teacher_epochs < 1:
            raise MethodError(
                f"a teacher of {teacher_epochs} epochs leaves no epoch for the student: "
                f"{ctx.ledger.epochs_left:g} of {ctx.budget.epochs} budget epochs are left; "
                "lower teacher_share"
            )
        self.teacher = _frozen(ctx.teacher_model(teacher_epochs))
        ctx.diagnostics["teacher"] = {
            "epochs": teacher_epochs,
            "val_metric": ctx.evaluate(self.teacher, "val"),
            "is_shared_dense_checkpoint": teacher_epochs == ctx.budget.pretrain_epochs,
        }
        ctx.diagnostics["student_budget_epochs"] = student_epochs
        self.alpha = _warmup_for(self.params, student_epochs, ctx)
        return self.build_student(model, ctx)

    def loss(self, task_loss: torch.Tensor, batch: Batch, ctx: RunContext) -> torch.Tensor:
        return _distill_step(self.teacher, self.alpha, self.params.temperature, task_loss, batch)

    def after_training(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        self.teacher = None  # free the teacher's memory before measurement
        return model


@register
class StudentScratch(_Student):
    """Train the ``distill`` student's architecture without a teacher, for the whole budget.

    Given the same ``width_mult``, ``widths`` or ``match``, it builds the same architecture
    from the same initial weights as ``distill``. With no teacher to pay for, every budget
    epoch goes to the student, so the pair compares distillation with plain training at
    equal cost.
    """

    name = "student.scratch"
    summary = (
        "the distill student's architecture trained on the task loss alone, for the whole budget"
    )

    def before_training(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        return self.build_student(model, ctx)


def _distill_step(
    teacher: nn.Module | None,
    alpha: AlphaWarmup,
    temperature: float,
    task_loss: torch.Tensor,
    batch: Batch,
) -> torch.Tensor:
    weight = alpha.value(len(batch.targets))
    if teacher is None or weight == 0.0:
        return task_loss
    with torch.no_grad():
        teacher_logits = teacher(batch.inputs)
    return distillation_loss(task_loss, batch.outputs, teacher_logits, temperature, weight)


# -- distillation as a fine-tuning phase ---------------------------------------------------


@register
class DistillFinetune(Method):
    """Fine-tune a compressed model with distillation from the model before compression.

    As the last stage of a pipeline, the earlier stages compress and this stage changes only
    the fine-tuning loss. The teacher is the model that the compression step received: the
    shared dense checkpoint when the pipeline starts from it, or the weights after the last
    main-phase epoch when it trains from scratch. Those epochs are already in the run's
    budget, so the teacher costs no extra epochs. On its own, the stage fine-tunes the dense
    checkpoint against itself.
    """

    name = "distill.finetune"
    family = Family.DISTILLATION
    Params = FinetuneParams
    start_from = "dense"
    uses_finetune = True
    summary = (
        "fine-tuning with Hinton distillation from the uncompressed model, as a pipeline stage "
        "after pruning"
    )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.teacher: nn.Module | None = None
        self.teacher_source = ""
        self.alpha = AlphaWarmup(self.params.alpha)

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        return _suggest_loss_params(trial)

    def before_training(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        self.teacher = copy.deepcopy(model)
        self.teacher_source = "start weights"
        return model

    def after_epoch(self, model: nn.Module, epoch: int, ctx: RunContext) -> None:
        # NOTE: when the main phase keeps its best validation epoch rather than its last one,
        # the teacher is the last epoch, which may differ from the model that was compressed.
        # Forward hooks on the model are copied too and also run on teacher forwards.
        if ctx.phase == "main":
            self.teacher = copy.deepcopy(model)
            self.teacher_source = f"main-phase epoch {epoch + 1}"

    def before_finetune(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        if self.teacher is None:
            raise MethodError(
                "distill.finetune has no teacher: before_training was not called for this run"
            )
        self.teacher = _frozen(self.teacher)
        ctx.diagnostics["teacher"] = {
            "source": self.teacher_source,
            "val_metric": ctx.evaluate(self.teacher, "val"),
            "params": sum(p.numel() for p in self.teacher.parameters()),
        }
        # The harness fine-tunes for every whole epoch left in the budget.
        self.alpha = _warmup_for(self.params, math.floor(ctx.ledger.epochs_left + 1e-9), ctx)
        return model

    def loss(self, task_loss: torch.Tensor, batch: Batch, ctx: RunContext) -> torch.Tensor:
        if batch.phase != "finetune":
            return task_loss
        return _distill_step(self.teacher, self.alpha, self.params.temperature, task_loss, batch)

    def after_finetune(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        self.teacher = None
        return model
