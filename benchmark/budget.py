"""The suite budget and the ledger that charges every training epoch of a run against it."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmark.errors import BudgetError

__all__ = ["Budget", "BudgetLedger", "EPOCH_KINDS"]

# Kinds of epoch in the ledger. "pretrain" is the shared dense checkpoint, "teacher" a
# distillation teacher, "tuning" the training inside hyperparameter trials or search trials.
EPOCH_KINDS = ("pretrain", "main", "finetune", "teacher", "tuning", "final")


@dataclass(frozen=True)
class Budget:
    """The resources that every method of a suite gets, identically."""

    # Total passes over the training split that lead to a final model, every phase counted.
    epochs: int
    # The part of `epochs` spent fine-tuning after compression; the same for every method.
    finetune_epochs: int = 0
    # Optuna trials a method may spend tuning its hyperparameters; 0 disables tuning.
    tuning_trials: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if not 0 <= self.finetune_epochs < self.epochs:
            raise ValueError(
                f"finetune_epochs must be in [0, epochs - 1] = [0, {self.epochs - 1}], "
                f"got {self.finetune_epochs}"
            )
        if self.tuning_trials < 0:
            raise ValueError(f"tuning_trials must be 0 or more, got {self.tuning_trials}")

    @property
    def pretrain_epochs(self) -> int:
        """Epochs of the shared dense checkpoint: the budget less fine-tuning."""
        return self.epochs - self.finetune_epochs

    def as_dict(self) -> dict[str, int]:
        return {
            "epochs": self.epochs,
            "finetune_epochs": self.finetune_epochs,
            "tuning_trials": self.tuning_trials,
        }


@dataclass
class BudgetLedger:
    """Counts the epochs and trials a run consumes and rejects what exceeds the budget."""

    budget: Budget
    epochs_by_kind: dict[str, float] = field(default_factory=dict)
    trials: int = 0

    @property
    def epochs(self) -> float:
        return sum(self.epochs_by_kind.values())

    @property
    def epochs_left(self) -> float:
        return self.budget.epochs - self.epochs

    def charge_epochs(self, epochs: float, kind: str) -> None:
        """Record ``epochs`` of kind ``kind``; raise :class:`BudgetError` past the budget.

        Fractions are allowed for proxies that train on part of the training split.
        """
        if kind not in EPOCH_KINDS:
            raise ValueError(f"unknown epoch kind {kind!r}; expected one of {', '.join(EPOCH_KINDS)}")
        if epochs < 0:
            raise ValueError(f"cannot charge a negative number of epochs: {epochs}")
        # A small tolerance absorbs the rounding of fractional proxy epochs.
        if self.epochs + epochs > self.budget.epochs + 1e-9:
            raise BudgetError(
                f"training {epochs:g} more {kind} epochs would exceed the budget: "
                f"{self.epochs:g} of {self.budget.epochs} epochs are already consumed "
                f"({self.describe()})"
            )
        self.epochs_by_kind[kind] = self.epochs_by_kind.get(kind, 0) + epochs

    def charge_trial(self) -> None:
        """Record one tuning trial; raise :class:`BudgetError` past the tuning budget."""
        if self.trials + 1 > self.budget.tuning_trials:
            raise BudgetError(
                f"tuning trial {self.trials + 1} exceeds the budget of "
                f"{self.budget.tuning_trials} trials"
            )
        self.trials += 1

    def describe(self) -> str:
        parts = [f"{kind} {count:g}" for kind, count in self.epochs_by_kind.items() if count]
        return ", ".join(parts) or "nothing"

    def as_dict(self) -> dict[str, object]:
        return {
            "epochs": round(self.epochs, 6),
            "epochs_by_kind": {k: round(v, 6) for k, v in self.epochs_by_kind.items()},
            "tuning_trials": self.trials,
        }
