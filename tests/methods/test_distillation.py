"""Tests of Hinton distillation: the loss, the budget split, the teacher cache and students."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from support import tiny_suite
from torch import nn

from benchmark.budget import Budget
from benchmark.errors import MethodError
from benchmark.measure.complexity import filters_per_layer
from benchmark.results import ResultStore
from benchmark.runner import SuiteRunner
from benchmark.tasks.models import MODELS, build_model
from benchmark.tasks.registry import TASKS, TaskSpec, load_task
from benchmark.training import Harness, TrainingConfig
from methods.base import Batch, parse_params
from methods.distillation import (
    AlphaWarmup,
    Distill,
    DistillFinetune,
    DistillParams,
    StudentParams,
    StudentScratch,
    distillation_loss,
    soft_target_loss,
    split_budget,
    width_layer_names,
)

# -- the loss ------------------------------------------------------------------------------


def test_loss_matches_hand_computed_value() -> None:
    # Row 1 at T = 2: the teacher's softmax([0, 1]) is (1 - s, s) and the student's
    # softmax([1, 0]) is (s, 1 - s), with s = e / (1 + e). Their log-ratios are -1 and +1, so
    # KL = (1 - s)(-1) + s(+1) = 2s - 1 = tanh(1/2) = 0.46211716. Row 2 has equal logits and
    # a KL of 0, so the batch mean is 0.23105858, and T² = 4 makes it 0.92423431.
    student = torch.tensor([[2.0, 0.0], [0.5, -0.5]])
    teacher = torch.tensor([[0.0, 2.0], [0.5, -0.5]])
    task_loss = torch.tensor(0.3)

    soft = soft_target_loss(student, teacher, temperature=2.0)
    total = distillation_loss(task_loss, student, teacher, temperature=2.0, alpha=0.25)

    assert soft.item() == pytest.approx(0.92423431, abs=1e-6)
    # 0.75 * 0.3 + 0.25 * 0.92423431
    assert total.item() == pytest.approx(0.45605858, abs=1e-6)


def test_loss_alpha_ends() -> None:
    student = torch.tensor([[1.0, -1.0, 0.0]])
    teacher = torch.tensor([[0.0, 3.0, -2.0]])
    task_loss = torch.tensor(1.7)

    only_task = distillation_loss(task_loss, student, teacher, temperature=4.0, alpha=0.0)
    only_soft = distillation_loss(task_loss, student, teacher, temperature=4.0, alpha=1.0)

    assert only_task.item() == pytest.approx(1.7)
    assert only_soft.item() == pytest.approx(soft_target_loss(student, teacher, 4.0).item())


def test_loss_zero_for_identical_logits() -> None:
    logits = torch.randn(5, 10)
    assert soft_target_loss(logits, logits.clone(), temperature=4.0).item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_distill_defaults() -> None:
    params = DistillParams()
    assert params.temperature == 4.0
    assert params.alpha == 0.9
    assert params.teacher_share == 0.5
    assert params.warmup_epochs == 2.0


def test_alpha_warmup_ramps_linearly() -> None:
    ramp = AlphaWarmup(0.9, ramp_samples=100)
    assert ramp.value(25) == pytest.approx(0.225)
    assert ramp.value(25) == pytest.approx(0.45)
    assert ramp.value(50) == pytest.approx(0.9)
    assert ramp.value(50) == pytest.approx(0.9)


def test_alpha_warmup_without_ramp() -> None:
    assert AlphaWarmup(0.9).value(1) == 0.9


def test_loss_hook_leaves_teacher_gradients() -> None:
    method = Distill()
    teacher = nn.Linear(4, 3).requires_grad_(False)
    method.teacher = teacher
    student = nn.Linear(4, 3)
    inputs = torch.randn(6, 4)
    outputs = student(inputs)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    task_loss = nn.functional.cross_entropy(outputs, targets)

    loss = method.loss(task_loss, Batch(inputs, targets, outputs, 0, 0, "main"), ctx=None)
    loss.backward()

    expected = distillation_loss(task_loss, outputs, teacher(inputs), 4.0, 0.9)
    assert loss.item() == pytest.approx(expected.item())
    assert teacher.weight.grad is None
    assert student.weight.grad is not None


# -- parameters and the budget split -------------------------------------------------------


@pytest.mark.parametrize(
    ("epochs", "share", "expected"),
    [
        (12, 0.5, (6, 6)),
        (12, 0.75, (9, 3)),
        (3, 0.5, (2, 1)),
        (2, 0.01, (1, 1)),
        (10, 0.99, (9, 1)),
    ],
)
def test_split_budget(epochs: int, share: float, expected: tuple[int, int]) -> None:
    assert split_budget(epochs, share) == expected


def test_split_budget_rejects_one_epoch() -> None:
    with pytest.raises(MethodError, match="at least 2 epochs"):
        split_budget(1, 0.5)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"alpha": 1.5}, "alpha"),
        ({"temperature": 0.0}, "temperature"),
        ({"teacher_share": 1.0}, "teacher_share"),
        ({"warmup_epochs": -1.0}, "warmup_epochs"),
        ({"width_mult": -0.5}, "width_mult"),
        ({"widths": [4, 0, 8]}, "widths"),
        ({"widths": [4, 8, 16], "match": "filter.l1"}, "match"),
    ],
)
def test_params_reject_invalid(values: dict, field: str) -> None:
    with pytest.raises(MethodError, match=field):
        parse_params(Distill, values, "test")


# -- students ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lenet_task():
    return load_task(TaskSpec("lenet5-mnist-sample", train_limit=100))


def _context(task, tmp_path: Path, method, references=None):
    harness = Harness(
        task,
        method,
        Budget(epochs=4, finetune_epochs=1),
        TrainingConfig(progress=False),
        seed=3,
        workdir=tmp_path / "work",
        cache_dir=tmp_path / "cache",
        references=references,
    )
    return harness.new_context()


def _widths(model: nn.Module) -> list[int]:
    filters = filters_per_layer(model)
    return [filters["features.0"], filters["features.2"], filters["classifier.1"]]


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_width_layers_round_trip(model_name: str) -> None:
    task_name = next(name for name, task in TASKS.items() if task.model == model_name)
    size = 28 if model_name == "lenet5" else 32

    def build(**options):
        return build_model(model_name, num_classes=10, in_channels=1, input_size=size, **options)

    ctx = SimpleNamespace(task_name=task_name, num_classes=10, build_model=build)
    names = width_layer_names(ctx)
    widths = [3 + (index * 7) % 11 for index in range(len(MODELS[model_name].default_widths))]
    filters = filters_per_layer(build(widths=widths))

    assert [filters[name] for name in names] == widths


def test_match_copies_reference_widths(lenet_task, tmp_path: Path) -> None:
    reference = {
        "metrics": {
            "filters": {"features.0": 7, "features.2": 13, "classifier.1": 90, "classifier.3": 10}
        }
    }
    method = StudentScratch(StudentParams(match="filter.l1"))
    ctx = _context(lenet_task, tmp_path, method, {"filter.l1": reference})

    student = method.build_student(lenet_task.build_model(), ctx)

    assert _widths(student) == [7, 13, 90]
    assert filters_per_layer(student)["classifier.3"] == 10
    assert ctx.diagnostics["student"]["source"] == "match=filter.l1"
    assert ctx.diagnostics["student"]["dense_widths"] == [20, 50, 500]


def test_match_renamed_layers_by_position(lenet_task, tmp_path: Path) -> None:
    renamed = {"a.conv": 5, "b.conv": 11, "c.fc": 64, "d.fc": 10}
    method = Distill(DistillParams(match="wrapped"))
    ctx = _context(lenet_task, tmp_path, method, {"wrapped": {"metrics": {"filters": renamed}}})

    student = method.build_student(lenet_task.build_model(), ctx)

    assert _widths(student) == [5, 11, 64]


def test_match_missing_reference(lenet_task, tmp_path: Path) -> None:
    method = StudentScratch(StudentParams(match="filter.l1"))
    ctx = _context(lenet_task, tmp_path, method, {})
    with pytest.raises(MethodError, match="no finished ok result"):
        method.build_student(lenet_task.build_model(), ctx)


def test_width_mult_scales_dense_widths(lenet_task, tmp_path: Path) -> None:
    method = StudentScratch(StudentParams(width_mult=0.25))
    ctx = _context(lenet_task, tmp_path, method)
    student = method.build_student(lenet_task.build_model(), ctx)
    assert _widths(student) == [5, 12, 125]  # 20, 50, 500 times 0.25, rounded half to even


def test_explicit_widths(lenet_task, tmp_path: Path) -> None:
    method = StudentScratch(StudentParams(widths=(3, 6, 32)))
    ctx = _context(lenet_task, tmp_path, method)
    assert _widths(method.build_student(lenet_task.build_model(), ctx)) == [3, 6, 32]


def test_explicit_widths_wrong_length(lenet_task, tmp_path: Path) -> None:
    method = StudentScratch(StudentParams(widths=(3, 6)))
    ctx = _context(lenet_task, tmp_path, method)
    with pytest.raises(MethodError, match="expects 3"):
        method.build_student(lenet_task.build_model(), ctx)


def test_paired_students_start_equal(lenet_task, tmp_path: Path) -> None:
    distilled, scratch = Distill(), StudentScratch()
    torch.manual_seed(0)
    first = distilled.build_student(
        lenet_task.build_model(), _context(lenet_task, tmp_path, distilled)
    )
    torch.manual_seed(1)  # a different global state must not change the student's weights
    second = scratch.build_student(
        lenet_task.build_model(), _context(lenet_task, tmp_path, scratch)
    )

    first_state, second_state = first.state_dict(), second.state_dict()
    assert list(first_state) == list(second_state)
    for name, tensor in first_state.items():
        assert torch.equal(tensor, second_state[name]), name


def test_finetune_teacher_from_last_main_epoch(lenet_task, tmp_path: Path) -> None:
    method = DistillFinetune()
    ctx = _context(lenet_task, tmp_path, method)
    model = lenet_task.build_model()

    method.before_training(model, ctx)
    with torch.no_grad():
        model.classifier[3].bias.fill_(1.0)
    ctx.phase = "main"
    method.after_epoch(model, 1, ctx)
    method.before_finetune(model, ctx)

    assert method.teacher_source == "main-phase epoch 2"
    assert torch.equal(method.teacher.classifier[3].bias, torch.ones(10))
    assert not method.teacher.training
    assert ctx.diagnostics["teacher"]["source"] == "main-phase epoch 2"


def test_finetune_loss_only_in_finetune_phase(lenet_task, tmp_path: Path) -> None:
    method = DistillFinetune()
    ctx = _context(lenet_task, tmp_path, method)
    model = lenet_task.build_model()
    method.before_training(model, ctx)
    method.before_finetune(model, ctx)
    inputs = ctx.example_input(4)
    outputs = model(inputs) + 1.0  # differ from the teacher so the soft term is nonzero
    task_loss = torch.tensor(0.5)
    targets = torch.zeros(4, dtype=torch.long)

    main = method.loss(task_loss, Batch(inputs, targets, outputs, 0, 0, "main"), ctx)
    finetune = method.loss(task_loss, Batch(inputs, targets, outputs, 0, 0, "finetune"), ctx)

    assert main.item() == pytest.approx(0.5)
    assert not math.isclose(finetune.item(), 0.5)


# -- the teacher cache, end to end ---------------------------------------------------------


def test_teacher_trained_once_and_charged_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainings: list[int] = []
    train_checkpoint = Harness._train_dense_checkpoint

    def counting(self: Harness, path: Path, epochs: int) -> None:
        trainings.append(epochs)
        train_checkpoint(self, path, epochs)

    monkeypatch.setattr(Harness, "_train_dense_checkpoint", counting)
    methods = [
        {"name": "distill"},
        {"name": "distill", "params": {"temperature": 2.0}},
        {"name": "student.scratch"},
        {"pipeline": ["l1l2.across", "distill.finetune"]},
    ]
    # 3 epochs with 1 of fine-tuning: the teacher's share of 0.5 gives it 2 epochs.
    suite = tiny_suite(tmp_path, methods, epochs=3, finetune_epochs=1, train_limit=200)

    counts = SuiteRunner(suite, tmp_path / "out").run()
    rows = {row["label"]: row for row in ResultStore(tmp_path / "out").rows()}

    assert counts["ok"] == 4, {label: row["reason"] for label, row in rows.items()}
    assert trainings == [2]
    for label in ("distill", "distill(temperature=2.0)"):
        consumed = rows[label]["budget_consumed"]
        assert consumed["epochs_by_kind"] == {"teacher": 2, "main": 1}, label
        assert consumed["epochs"] == 3, label
        assert rows[label]["diagnostics"]["teacher"]["epochs"] == 2, label
    assert rows["student.scratch"]["budget_consumed"]["epochs_by_kind"] == {"main": 3}
    pipeline = rows["l1l2.across+distill.finetune"]
    assert pipeline["budget_consumed"]["epochs_by_kind"] == {"main": 2, "finetune": 1}
    assert pipeline["diagnostics"]["teacher"]["source"] == "main-phase epoch 2"
