"""The only training loop of CompressBench, and the harness object that runs one method.

Methods never write their own loop: they hook into :meth:`Harness.train_phase` through the
hooks of :class:`methods.base.Method`, and every epoch they cause is charged to the run's
:class:`~benchmark.budget.BudgetLedger`.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from benchmark.budget import Budget, BudgetLedger
from benchmark.errors import ConfigError, TrainingDivergedError
from benchmark.tasks.registry import Task
from methods.base import Batch, Method, RunContext

__all__ = ["Harness", "RunOutcome", "TrainingConfig", "resolve_device", "seed_everything"]

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "step")


@dataclass(frozen=True)
class TrainingConfig:
    """Optimiser and loop settings shared by every method of a suite."""

    optimizer: str = "sgd"  # "sgd" (with momentum) or "adam"
    lr: float = 0.01  # learning rate of the main phase (Caffe LeNet-5 uses 0.01)
    momentum: float = 0.9  # SGD momentum; ignored by Adam
    weight_decay: float = 0.0  # decoupled from method penalties; 0 keeps regularisers comparable
    batch_size: int = 64
    schedule: str = "cosine"  # per-epoch schedule of each phase: constant, cosine or step
    step_size: int = 10  # epochs between decays of the step schedule
    gamma: float = 0.1  # decay factor of the step schedule
    finetune_lr: float = 0.001  # learning rate of fine-tuning phases
    eval_batch_size: int = 1000
    threads: int = 0  # torch intra-op threads; 0 keeps PyTorch's default
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"
    progress: bool = True  # show a progress bar per epoch

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("lr", "finetune_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("batch_size", "eval_batch_size", "step_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.threads < 0:
            raise ValueError(f"threads must be 0 (PyTorch's default) or a positive count, got {self.threads}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def identity(self) -> dict[str, Any]:
        """Return the settings that change results (not threads, device or progress bars)."""
        values = asdict(self)
        for key in ("threads", "device", "progress", "eval_batch_size"):
            values.pop(key)
        return values


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device = 'cuda' but PyTorch finds no CUDA device; use 'auto' or 'cpu'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed PyTorch's generators and request deterministic kernels (exact on CPU)."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@dataclass
class RunOutcome:
    """The final model of one run and what the loop recorded on the way."""

    model: nn.Module
    context: RunContext
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0


class Harness:
    """Trains one method on one task with one seed, under one budget."""

    def __init__(
        self,
        task: Task,
        method: Method,
        budget: Budget,
        training: TrainingConfig,
        seed: int,
        workdir: Path,
        cache_dir: Path,
        references: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.task = task
        self.method = method
        self.budget = budget
        self.training = training
        self.seed = seed
        self.workdir = Path(workdir)
        self.cache_dir = Path(cache_dir)
        self.device = resolve_device(training.device)
        self.ledger = BudgetLedger(budget)
        self.history: list[dict[str, Any]] = []
        self.test_reads = 0
        # The metric object of the latest evaluation, with its summary().
        self.last_metric: Any = None
        self._references = references or {}
        # Keys of the dense checkpoints whose epochs this run has been charged for.
        self._charged_checkpoints: set[str] = set()
        self._data_on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._hooks = {hook: method.overrides(hook) for hook in ("loss", "penalty", "after_step", "after_epoch")}

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> RunOutcome:
        """Run the method's lifecycle and return the final model (not yet measured)."""
        started = time.perf_counter()
        if self.training.threads:
            torch.set_num_threads(self.training.threads)
        seed_everything(self.seed)
        ctx = self.new_context()
        method = self.method

        if method.start_from == "dense":
            model = self.dense_model(ctx)
        elif method.start_from == "scratch":
            model = self.task.build_model().to(self.device)
        else:
            raise ConfigError(
                f"method {method.name!r} has start_from = {method.start_from!r}; expected 'scratch' or 'dense'"
            )

        model = method.before_training(model, ctx).to(self.device)
        model = self.train_phase(model, self._main_epochs(), "main", ctx, checkpoint=method.main_checkpoint)
        model = method.after_training(model, ctx).to(self.device)

        ctx.phase = "finetune"
        model = method.before_finetune(model, ctx).to(self.device)
        finetune_epochs = int(math.floor(self.ledger.epochs_left + 1e-9)) if method.uses_finetune else 0
        model = self.train_phase(model, finetune_epochs, "finetune", ctx)
        model = method.after_finetune(model, ctx).to(self.device)
        return RunOutcome(model, ctx, self.history, time.perf_counter() - started)

    def _main_epochs(self) -> int:
        """Return the main-phase epochs: what before_training left, less the fine-tuning epochs.

        Methods that start from the dense checkpoint have no main phase. A scratch method
        whose before_training charged epochs (a distillation teacher) gets that much less.
        """
        if self.method.start_from == "dense":
            return 0
        reserved = self.budget.finetune_epochs if self.method.uses_finetune else 0
        return int(math.floor(self.ledger.epochs_left + 1e-9)) - reserved

    def new_context(self) -> RunContext:
        return RunContext(
            task_name=self.task.name,
            num_classes=self.task.num_classes,
            input_shape=self.task.input_shape,
            seed=self.seed,
            device=self.device,
            budget=self.budget,
            ledger=self.ledger,
            workdir=self.workdir,
            references=self._references,
            _harness=self,
        )

    # -- the training loop -----------------------------------------------------------------

    def train_phase(
        self, model: nn.Module, epochs: int, phase: str, ctx: RunContext, checkpoint: str = "best_val"
    ) -> nn.Module:
        """Train ``model`` for ``epochs`` epochs with the method's hooks; charge the budget.

        ``checkpoint = "best_val"`` returns the weights of the epoch with the best validation
        metric, ``"last"`` those of the final epoch.
        """
        if epochs <= 0:
            return model
        if checkpoint not in ("best_val", "last"):
            raise ConfigError(f"checkpoint must be 'best_val' or 'last', got {checkpoint!r}")
        self.ledger.charge_epochs(epochs, "main" if phase == "main" else "finetune")
        ctx.phase = phase
        lr = self.training.lr if phase == "main" else self.training.finetune_lr
        model = model.to(self.device)
        optimizer = self._optimizer(model, lr)
        scheduler = self._scheduler(optimizer, epochs)

        best_metric, best_state = -math.inf, None
        for epoch in range(epochs):
            record = self._train_epoch(model, optimizer, epoch, phase, ctx)
            scheduler.step()
            record["val_metric"] = self.evaluate(model, "val")
            self.history.append(record)
            logger.info(
                "%s %s epoch %d/%d: loss %.4f, val %s %.4f (%.1f s)",
                self.method.name,
                phase,
                epoch + 1,
                epochs,
                record["loss"],
                self.task.definition.metric,
                record["val_metric"],
                record["seconds"],
            )
            if self._hooks["after_epoch"]:
                self.method.after_epoch(model, epoch, ctx)
            if checkpoint == "best_val" and record["val_metric"] > best_metric:
                best_metric, best_state = record["val_metric"], copy.deepcopy(model.state_dict())

        if best_state is not None:
            model.load_state_dict(best_state)
        return model

    def _train_epoch(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, phase: str, ctx: RunContext
    ) -> dict[str, Any]:
        started = time.perf_counter()
        train_x, train_y = self._split_tensors("train")
        generator = torch.Generator().manual_seed(self.seed * 100_003 + len(self.history))
        order = torch.randperm(len(train_y), generator=generator).to(train_x.device)
        batch_size = self.training.batch_size
        steps = math.ceil(len(train_y) / batch_size)
        hooks, method, task = self._hooks, self.method, self.task

        model.train()
        total_loss = torch.zeros((), device=train_x.device)
        bar = tqdm(
            total=steps,
            desc=f"{method.name} {phase} {epoch + 1}",
            leave=False,
            unit="step",
            disable=not self.training.progress,
        )
        for step in range(steps):
            index = order[step * batch_size : (step + 1) * batch_size]
            inputs = task.augment(train_x.index_select(0, index), generator)
            targets = train_y.index_select(0, index)
            outputs = model(inputs)
            loss = task.loss(outputs, targets)
            if hooks["loss"]:
                loss = method.loss(loss, Batch(inputs, targets, outputs, step, epoch, phase), ctx)
            if hooks["penalty"]:
                penalty = method.penalty(model, ctx)
                if penalty is not None:
                    loss = loss + penalty

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if hooks["after_step"]:
                with torch.no_grad():
                    method.after_step(model, ctx)
            total_loss += loss.detach()
            bar.update()
        bar.close()

        mean_loss = float(total_loss) / steps
        if not math.isfinite(mean_loss):
            raise TrainingDivergedError(
                f"training loss became {mean_loss} in {phase} epoch {epoch + 1} of method "
                f"{method.name!r}; lower the learning rate or the penalty strength"
            )
        return {"phase": phase, "epoch": epoch + 1, "loss": mean_loss, "seconds": time.perf_counter() - started}

    def _optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        if self.training.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=self.training.weight_decay)
        return torch.optim.SGD(params, lr=lr, momentum=self.training.momentum, weight_decay=self.training.weight_decay)

    def _scheduler(self, optimizer: torch.optim.Optimizer, epochs: int):
        if self.training.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        if self.training.schedule == "step":
            return torch.optim.lr_scheduler.StepLR(optimizer, self.training.step_size, self.training.gamma)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    # -- data access for methods -----------------------------------------------------------

    def _split_tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in self._data_on_device:
            data = self.task.data
            x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
            self._data_on_device[split] = (x.to(self.device), y.to(self.device))
        return self._data_on_device[split]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str = "val") -> float:
        """Return the task metric on the training or validation split."""
        if split not in ("train", "val"):
            raise ValueError(
                f"split {split!r} is not available to methods; the test split is read once, "
                "by the harness, for the final figures"
            )
        return self._score(model, *self._split_tensors(split))

    @torch.no_grad()
    def final_test_metric(self, model: nn.Module) -> float:
        """Return the test metric; the harness calls this once per run."""
        self.test_reads += 1
        return self._score(model, *self._split_tensors("test"))

    def _score(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        was_training = model.training
        model.eval()
        metric = self.task.new_metric()
        size = self.training.eval_batch_size
        for start in range(0, len(y), size):
            metric.update(model(x[start : start + size]), y[start : start + size])
        model.train(was_training)
        # Kept so the evaluation can store every figure of the final test metric (per-class IoU).
        self.last_metric = metric
        return metric.compute()

    def train_batches(self, batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self._split_tensors("train")
        size = batch_size or self.training.batch_size
        generator = torch.Generator().manual_seed(self.seed + 7)
        order = torch.randperm(len(y), generator=generator).to(x.device)
        for start in range(0, len(y), size):
            index = order[start : start + size]
            yield x.index_select(0, index), y.index_select(0, index)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return self._split_tensors("train")[0][:batch_size].clone()

    def build_model(self, **model_options: Any) -> nn.Module:
        return self.task.build_model(**model_options).to(self.device)

    # -- the shared dense checkpoint -------------------------------------------------------

    def dense_model(self, ctx: RunContext) -> nn.Module:
        """Return the shared dense model of this task and seed, training it on first use.

        The checkpoint is cached under ``cache_dir/dense`` by a hash of everything that
        determines it, and a file lock lets concurrent workers train it only once. Its
        epochs are charged to every run that uses it, once per run.
        """
        return self._cached_dense_model(self.budget.pretrain_epochs, "pretrain")

    def teacher_model(self, ctx: RunContext, epochs: int) -> nn.Module:
        """Return the task's dense model trained for ``epochs`` epochs, as a distillation teacher.

        Teachers share the cache of :meth:`dense_model`, so a teacher trained for the
        pre-training epochs is the shared dense checkpoint itself. Its epochs are charged to
        this run once, as ``"teacher"``, unless the run has already paid for that checkpoint.
        """
        return self._cached_dense_model(epochs, "teacher")

    def _cached_dense_model(self, epochs: int, kind: str) -> nn.Module:
        if epochs < 1:
            raise ConfigError(f"a dense checkpoint needs at least 1 training epoch, got {epochs}")
        key = self._dense_key(epochs)
        if key not in self._charged_checkpoints:
            self.ledger.charge_epochs(epochs, kind)
            self._charged_checkpoints.add(key)

        path = self.cache_dir / "dense" / f"{key}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path.with_suffix(".lock")):
            if not path.exists():
                self._train_dense_checkpoint(path, epochs)
        model = self.task.build_model()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        # Training the checkpoint reseeds the generators; reseeding here makes what follows
        # identical whether the checkpoint was cached or trained just now.
        seed_everything(self.seed + 1)
        logger.info("loaded dense checkpoint %s (%d epochs, charged as %s)", path.name, epochs, kind)
        return model.to(self.device)

    def _dense_key(self, epochs: int) -> str:
        identity = {
            "task": self.task.spec.identity(),
            "training": self.training.identity(),
            "seed": self.seed,
            "epochs": epochs,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def _train_dense_checkpoint(self, path: Path, epochs: int) -> None:
        from methods.dense import Dense

        logger.info("training a dense checkpoint for %d epochs", epochs)
        harness = Harness(
            self.task, Dense(), Budget(epochs=epochs), self.training, self.seed, self.workdir, self.cache_dir
        )
        outcome = harness.run()
        partial = path.with_name(path.name + ".partial")
        torch.save(outcome.model.cpu().state_dict(), partial)
        os.replace(partial, path)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
