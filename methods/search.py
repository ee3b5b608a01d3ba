"""Hardware-aware architecture search over per-layer widths, with Optuna.

``nas.widths`` searches the widths of the task's own model family and retrains the selected
architecture from scratch:

- LeNet-5: the 3 widths (conv1 filters, conv2 filters, fc1 neurons);
- VGG-16: the 13 conv widths and the fc width;
- ResNet-56: the 3 stage widths and one inner width per stage, shared by its 9 blocks.

Depth and kernel size are not searched: the model constructors take widths only.

Each trial samples one architecture and measures its cost: MACs (as counted by
:mod:`benchmark.measure.complexity`), or the p50 latency of its ONNX export on a profiling
device. An architecture over the optional cost cap is recorded as infeasible without
training. The others train a short proxy (a few epochs on a fixed subset of the training
split) and are scored on the validation split. The study maximises the validation metric and
minimises the cost. Its sampler is NSGA-II (Deb et al., IEEE Transactions on Evolutionary
Computation, 2002) from four populations' worth of trials on, and Optuna's multi-objective
TPE below that. The cap reaches the sampler as a constraint.

Selection: among the feasible trials on the Pareto front, the cheapest one whose validation
metric is within ``accuracy_tolerance`` of the best feasible one. That architecture is then
trained from scratch by the harness's main phase.

Budget: the trials spend ``search_epochs`` of the suite's epochs (charged as "tuning"), split
evenly, and the final training gets the rest (charged as "main"), so the run consumes at
most the suite's budget like any other method.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from benchmark.budget import Budget
from benchmark.errors import MethodError
from benchmark.measure.complexity import count_complexity
from benchmark.tasks.models import VGG16, LeNet5, ResNet56
from methods.base import Family, Method, RunContext
from methods.registry import register

if TYPE_CHECKING:
    import optuna

    from benchmark.studies import ProxyTrainer

__all__ = ["WidthSearch", "WidthSearchParams", "WidthSearchStudy", "width_groups"]

logger = logging.getLogger(__name__)

OBJECTIVES = ("macs", "latency")
SAMPLERS = ("auto", "tpe", "nsga2")


@dataclass(frozen=True)
class WidthGroup:
    """One searched width: its parameter name and the ``widths`` entries it sets."""

    name: str
    indices: tuple[int, ...]
    reference: int


def width_groups(model: nn.Module) -> tuple[list[int], list[WidthGroup]]:
    """Return the ``widths`` of ``model`` as its constructor takes them, and the searched groups.

    Raises :class:`~benchmark.errors.MethodError` for a model family without a search space.
    """
    if isinstance(model, LeNet5):
        widths = [
            model.features[0].out_channels,
            model.features[2].out_channels,
            model.classifier[1].out_features,
        ]
        names = ("conv1", "conv2", "fc1")
        return widths, [WidthGroup(name, (i,), widths[i]) for i, name in enumerate(names)]

    if isinstance(model, VGG16):
        convs = [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)]
        widths = convs + [model.classifier[1].out_features]
        groups = [WidthGroup(f"conv{i + 1}", (i,), w) for i, w in enumerate(convs)]
        return widths, groups + [WidthGroup("fc1", (len(convs),), widths[-1])]

    if isinstance(model, ResNet56):
        stages = [model.layer1, model.layer2, model.layer3]
        stage_widths = [model.conv1.out_channels] + [
            stage[-1].conv2.out_channels for stage in stages[1:]
        ]
        inner = [block.conv1.out_channels for stage in stages for block in stage]
        widths = stage_widths + inner
        per_stage = ResNet56.blocks_per_stage
        groups = [WidthGroup(f"stage{s + 1}", (s,), stage_widths[s]) for s in range(3)]
        for s in range(3):
            indices = tuple(3 + s * per_stage + b for b in range(per_stage))
            groups.append(WidthGroup(f"stage{s + 1}_inner", indices, inner[s * per_stage]))
        return widths, groups

    raise MethodError(
        f"nas.widths has no search space for {type(model).__name__}; supported families: "
        "lenet5, vgg16, resnet56"
    )


def width_range(
    reference: int, min_ratio: float, max_ratio: float, choices: int
) -> tuple[int, int, int]:
    """Return (low, high, step) of an integer grid from about ``min_ratio`` to ``max_ratio``
    of ``reference``, anchored at the top, with at most ``choices`` values."""
    high = max(1, round(reference * max_ratio))
    low_target = max(1, round(reference * min_ratio))
    step = max(1, round((high - low_target) / max(1, choices - 1)))
    count = math.ceil((high - low_target) / step)
    while high - step * count < 1:
        count -= 1
    return high - step * count, high, step


def _earlier_trial(trial: optuna.Trial, widths: list[int]) -> optuna.trial.FrozenTrial | None:
    """Return a complete trial of the same study that trained ``widths``, or None."""
    from optuna.trial import TrialState

    for earlier in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if (
            earlier.user_attrs.get("widths") == widths
            and earlier.user_attrs.get("constraint", [0])[0] <= 0
        ):
            return earlier
    return None


def _constraint_values(trial: optuna.trial.FrozenTrial) -> Sequence[float]:
    # Values above 0 mark the trial infeasible; the objective stores them before returning.
    return trial.user_attrs.get("constraint", (0.0,))


def _constraints_func() -> Callable[[optuna.trial.FrozenTrial], Sequence[float]] | None:
    """Return the sampler's ``constraints_func``, or None where trials report constraints.

    Optuna 5 deprecates ``constraints_func`` for ``Trial.set_constraint``, which the objective
    calls when it exists.
    """
    import optuna

    return None if hasattr(optuna.trial.Trial, "set_constraint") else _constraint_values


@dataclass(frozen=True)
class WidthSearchParams:
    # Architectures evaluated (Optuna trials); each trains a proxy.
    trials: int = 12
    # Suite epochs spent on the trials; 0 means a quarter of the budget, at least 1.
    search_epochs: int = 0
    # Epochs of each trial's proxy; the subset of the training split shrinks to fit the budget.
    proxy_epochs: int = 2
    # Second objective: "macs", or "latency" (p50 on `device`, in milliseconds).
    objective: str = "macs"
    # Cap on MACs per sample; 0 means no cap.
    max_macs: int = 0
    # Cap on the p50 latency in milliseconds, measured on `device`; 0 means no cap.
    max_latency_ms: float = 0.0
    # Profiling device spec for latency: "local", "qemu-aarch64", "ssh://user@host".
    device: str = "local"
    # Intra-op threads of the latency measurement.
    latency_threads: int = 1
    # Width range of each layer, as ratios of the task model's width.
    min_width_ratio: float = 0.125
    max_width_ratio: float = 1.0
    # Values on each layer's width grid.
    width_choices: int = 8
    # "auto" (NSGA-II from four populations of trials on, TPE below), "tpe" or "nsga2".
    sampler: str = "auto"
    # NSGA-II population size.
    population: int = 8
    # Selection takes the cheapest Pareto point within this much of the best validation metric.
    accuracy_tolerance: float = 0.01

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError(f"trials must be at least 1, got {self.trials}")
        if self.search_epochs < 0 or self.proxy_epochs < 1:
            raise ValueError("search_epochs must be 0 or more and proxy_epochs at least 1")
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}"
            )
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if not 0 < self.min_width_ratio <= self.max_width_ratio:
            raise ValueError(
                f"expected 0 < min_width_ratio <= max_width_ratio, got {self.min_width_ratio} "
                f"and {self.max_width_ratio}"
            )
        if self.width_choices < 2 or self.population < 2 or self.latency_threads < 1:
            raise ValueError(
                "width_choices and population must be at least 2, latency_threads at least 1"
            )
        if self.max_macs < 0 or self.max_latency_ms < 0 or self.accuracy_tolerance < 0:
            raise ValueError("max_macs, max_latency_ms and accuracy_tolerance must be 0 or more")

    @property
    def measures_latency(self) -> bool:
        return self.objective == "latency" or self.max_latency_ms > 0


@dataclass
class WidthSearchStudy:
    """The study of one ``nas.widths`` run: its sampler and its trial objective."""

    params: WidthSearchParams
    n_trials: int
    search_epochs: int

    @property
    def trial_cost(self) -> float:
        """Passes over the full training split that one trial may spend."""
        return self.search_epochs / self.n_trials

    def proxy_plan(self, train_size: int, num_classes: int) -> tuple[int, float]:
        """Return (epochs, fraction of the training split) of each trial's proxy.

        The proxy trains ``proxy_epochs`` epochs, more when the trial cost exceeds that, and
        fewer (down to 1) when the subset would hold under two images per class.
        """
        epochs = max(self.params.proxy_epochs, math.ceil(self.trial_cost))
        while epochs > 1 and self.trial_cost / epochs * train_size < 2 * num_classes:
            epochs -= 1
        return epochs, self.trial_cost / epochs

    def study_directions(self) -> tuple[str, ...]:
        return ("maximize", "minimize")

    def sampler_name(self) -> str:
        if self.params.sampler != "auto":
            return self.params.sampler
        return "nsga2" if self.n_trials >= 4 * self.params.population else "tpe"

    def make_sampler(self, n_trials: int, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        if self.sampler_name() == "nsga2":
            return optuna.samplers.NSGAIISampler(
                population_size=self.params.population,
                seed=seed,
                constraints_func=_constraints_func(),
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=max(2, min(10, n_trials // 3)),
                multivariate=True,
                constraints_func=_constraints_func(),
            )

    def initial_trials(self, trainer: ProxyTrainer) -> list[dict[str, Any]]:
        """Return the task model's own widths as the first trial, when they lie on the grids."""
        _, groups = width_groups(trainer.build_model())
        params = {}
        for group in groups:
            low, high, step = self._grid(group)
            if not (low <= group.reference <= high and (group.reference - low) % step == 0):
                return []
            params[f"width_{group.name}"] = group.reference
        return [params]

    def _grid(self, group: WidthGroup) -> tuple[int, int, int]:
        p = self.params
        return width_range(group.reference, p.min_width_ratio, p.max_width_ratio, p.width_choices)

    def suggest_widths(
        self, trial: optuna.Trial, reference: list[int], groups: list[WidthGroup]
    ) -> list[int]:
        widths = list(reference)
        for group in groups:
            low, high, step = self._grid(group)
            value = trial.suggest_int(f"width_{group.name}", low, high, step=step)
            for index in group.indices:
                widths[index] = value
        return widths

    def make_objective(self, trainer: ProxyTrainer) -> Callable[[optuna.Trial], Sequence[float]]:
        from methods.dense import Dense

        reference, groups = width_groups(trainer.build_model())
        epochs, fraction = self.proxy_plan(trainer.full_train_size, trainer.task.num_classes)
        example = trainer.example_input()

        def objective(trial: optuna.Trial) -> Sequence[float]:
            widths = self.suggest_widths(trial, reference, groups)
            model = trainer.build_model(widths=widths)
            complexity = count_complexity(model, example)
            trial.set_user_attr("widths", widths)
            trial.set_user_attr("macs", complexity.macs)
            trial.set_user_attr("params", complexity.params)
            latency = (
                self._latency_ms(model, example, trainer, trial.number)
                if self.params.measures_latency
                else None
            )
            trial.set_user_attr("latency_ms", latency)
            cost = float(complexity.macs) if self.params.objective == "macs" else latency

            violation = self._violation(complexity.macs, latency)
            trial.set_user_attr("constraint", [violation])
            if hasattr(trial, "set_constraint"):
                trial.set_constraint("cost_cap", violation)
            if violation > 0:
                # Over the cap: recorded without training, so the budget goes to feasible ones.
                trial.set_user_attr("epochs", 0.0)
                return 0.0, cost

            earlier = _earlier_trial(trial, widths)
            if earlier is not None:
                # A sampler may propose an architecture again; its proxy result is reused.
                trial.set_user_attr(
                    "duplicate_of", earlier.user_attrs.get("duplicate_of", earlier.number)
                )
                trial.set_user_attr("epochs", 0.0)
                return float(earlier.values[0]), cost

            result = trainer.train(
                Dense(), Budget(epochs=epochs), fraction, {"widths": widths}, f"trial{trial.number}"
            )
            trial.set_user_attr("epochs", result.epochs)
            trial.set_user_attr("test_reads", result.test_reads)
            trial.set_user_attr("diverged", result.diverged)
            return result.val_metric, cost

        return objective

    def _violation(self, macs: int, latency_ms: float | None) -> float:
        """Return the largest relative excess over the caps; 0 or less is feasible."""
        excess = [0.0]
        if self.params.max_macs:
            excess.append(macs / self.params.max_macs - 1)
        if self.params.max_latency_ms and latency_ms is not None:
            excess.append(latency_ms / self.params.max_latency_ms - 1)
        return max(excess)

    def _latency_ms(
        self, model: nn.Module, example: Any, trainer: ProxyTrainer, number: int
    ) -> float:
        """Export ``model`` and return its p50 latency on the device, in milliseconds.

        Latency does not depend on the weights, so the untrained model is measured.
        """
        try:
            from benchmark.measure.profiling import ProfileSettings, profile_model
        except ImportError as error:
            raise MethodError(
                f"nas.widths: objective 'latency' needs the profiling module: {error}"
            ) from error
        from benchmark.measure.export import export_onnx

        folder = trainer.workdir / "latency"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"trial{number}.onnx"
        export_onnx(model.eval(), example, path)
        # A short protocol: trials compare architectures, the final row uses the suite's own.
        settings = ProfileSettings(
            devices=(self.params.device,),
            threads=(self.params.latency_threads,),
            warmup_runs=5,
            warmup_seconds=0.1,
            min_queries=30,
            min_seconds=0.3,
            top_operators=0,
        )
        results = profile_model(path, settings, workdir=folder / f"trial{number}")
        entry = next(iter(results.values()))
        if entry.get("status") != "ok":
            raise MethodError(
                f"nas.widths: latency on {self.params.device} failed: {entry.get('error')}"
            )
        timing = next(iter(entry["threads"].values()))
        return timing["p50_us"] / 1000.0


@register
class WidthSearch(Method):
    """Search per-layer widths under a cost objective, then retrain the selected architecture."""

    name = "nas.widths"
    family = Family.SEARCH
    Params = WidthSearchParams
    uses_finetune = False
    requires = ("optuna",)
    install_hint = "pip install optuna"
    summary = "hardware-aware width search with Optuna (NSGA-II or TPE), MACs or latency objective"

    def search_epochs(self, budget: Budget) -> int:
        """Return the suite epochs that the trials may spend; the rest trains the final model."""
        epochs = self.params.search_epochs or max(1, budget.epochs // 4)
        if epochs >= budget.epochs:
            raise MethodError(
                f"nas.widths: search_epochs = {epochs} leaves no epoch of the budget of "
                f"{budget.epochs} for the final training; "
                "lower search_epochs or raise budget.epochs"
            )
        return epochs

    def before_training(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        from benchmark.studies import (
            ProxyTrainer,
            StudyJob,
            resolve_storage_spec,
            run_study,
            study_settings,
        )

        trainer = ProxyTrainer.from_context(ctx)
        study = WidthSearchStudy(self.params, self.params.trials, self.search_epochs(ctx.budget))
        self._check_proxy(study, trainer)
        job = StudyJob(
            study_name=f"{ctx.workdir.name}.search",
            builder=study,
            task=trainer.task.spec,
            training=trainer.training,
            seed=ctx.seed,
            output=trainer.output,
            workdir=trainer.workdir,
            n_trials=study.n_trials,
            storage=resolve_storage_spec(study_settings().storage, trainer.output),
            initial_trials=study.initial_trials(trainer),
        )
        report = run_study(job, trainer)

        spent = sum(trial.user_attrs["epochs"] for trial in report.complete)
        ctx.ledger.charge_epochs(spent, "tuning")
        table = trial_table(report.complete, self.params.accuracy_tolerance)
        selected = next(row for row in table if row["selected"])
        ctx.diagnostics.update(self._diagnostics(study, report, table, spent, ctx))
        (ctx.workdir / "pareto.md").parent.mkdir(parents=True, exist_ok=True)
        (ctx.workdir / "pareto.md").write_text(
            ctx.diagnostics["search"]["pareto_table"], encoding="utf-8"
        )
        logger.info(
            "nas.widths selected trial %d: widths %s, val %.4f, %s MACs",
            selected["trial"],
            selected["widths"],
            selected["val_metric"],
            selected["macs"],
        )
        return ctx.build_model(widths=selected["widths"])

    def _check_proxy(self, study: WidthSearchStudy, trainer: ProxyTrainer) -> None:
        _, fraction = study.proxy_plan(trainer.full_train_size, trainer.task.num_classes)
        images = fraction * trainer.full_train_size
        if images < trainer.task.num_classes:
            raise MethodError(
                f"nas.widths: each trial's proxy would train on {images:.1f} images, "
                "fewer than the "
                f"{trainer.task.num_classes} classes; raise search_epochs or lower trials"
            )

    def _diagnostics(
        self,
        study: WidthSearchStudy,
        report: Any,
        table: list[dict[str, Any]],
        spent: float,
        ctx: RunContext,
    ) -> dict[str, Any]:
        """Return the row's diagnostics: a summary under ``search``, and the trials as data.

        ``pareto_front`` entries carry only the objective's cost (``macs`` or ``latency_ms``)
        beside ``val_metric``, so a plot of them shows the front the study optimised.
        """
        from benchmark.studies import ProxyTrainer

        trainer = ProxyTrainer.from_context(ctx)
        epochs, fraction = study.proxy_plan(trainer.full_train_size, trainer.task.num_classes)
        p = self.params
        cost_key = "macs" if p.objective == "macs" else "latency_ms"
        front = [
            {
                "trial": row["trial"],
                "widths": row["widths"],
                "val_metric": row["val_metric"],
                cost_key: row[cost_key],
            }
            for row in sorted((r for r in table if r["pareto"]), key=lambda r: r["cost"])
        ]
        summary = {
            **report.as_dict(),
            "objective": p.objective,
            "cost_unit": "MACs" if p.objective == "macs" else "ms",
            "constraint": {
                "max_macs": p.max_macs or None,
                "max_latency_ms": p.max_latency_ms or None,
            },
            "device": p.device if p.measures_latency else None,
            "sampler": study.sampler_name(),
            "search_epochs": study.search_epochs,
            "epochs_consumed": round(spent, 6),
            "final_epochs": int(math.floor(ctx.ledger.epochs_left + 1e-9)),
            "proxy": {
                "epochs": epochs,
                "fraction": round(fraction, 6),
                "train_size": trainer.subset_size(fraction),
            },
            "pareto_table": markdown_table(table, p.objective),
        }
        return {
            "search": summary,
            "pareto_front": front,
            "trials": table,
            "selected": next(row for row in table if row["selected"]),
        }


def trial_table(
    trials: Sequence[optuna.trial.FrozenTrial], tolerance: float
) -> list[dict[str, Any]]:
    """Return one row per complete trial, with its Pareto membership and the selected one.

    Raises :class:`~benchmark.errors.MethodError` when no trial satisfies the cost cap.
    """
    from benchmark.studies import pareto_front, select_point

    rows = []
    for trial in trials:
        attrs = trial.user_attrs
        rows.append(
            {
                "trial": trial.number,
                "widths": list(attrs["widths"]),
                "val_metric": float(trial.values[0]),
                "cost": float(trial.values[1]),
                "macs": attrs["macs"],
                "params": attrs["params"],
                "latency_ms": attrs.get("latency_ms"),
                "epochs": attrs["epochs"],
                "feasible": attrs["constraint"][0] <= 0,
                "duplicate_of": attrs.get("duplicate_of"),
                "pareto": False,
                "selected": False,
            }
        )
    feasible = [i for i, row in enumerate(rows) if row["feasible"]]
    if not feasible:
        raise MethodError(
            f"nas.widths: none of the {len(rows)} architectures satisfies the cost cap; raise "
            "max_macs or max_latency_ms, or lower min_width_ratio"
        )
    # Repeats of an architecture share its point; only the first trial of it joins the front.
    candidates = [i for i in feasible if rows[i]["duplicate_of"] is None]
    points = [(rows[i]["val_metric"], rows[i]["cost"]) for i in candidates]
    front = [candidates[i] for i in pareto_front(points)]
    for i in front:
        rows[i]["pareto"] = True
    all_points = [(row["val_metric"], row["cost"]) for row in rows]
    rows[select_point(all_points, front, tolerance)]["selected"] = True
    return rows


def markdown_table(rows: list[dict[str, Any]], objective: str) -> str:
    """Return the Pareto front as a Markdown table, cheapest first."""
    header = "| trial | widths | val metric | MACs | params | latency (ms) | selected |"
    lines = [header, "|---:|---|---:|---:|---:|---:|:---:|"]
    for row in sorted((r for r in rows if r["pareto"]), key=lambda r: r["cost"]):
        latency = "" if row["latency_ms"] is None else f"{row['latency_ms']:.3f}"
        lines.append(
            f"| {row['trial']} | {row['widths']} | {row['val_metric']:.4f} | {row['macs']:,} | "
            f"{row['params']:,} | {latency} | {'yes' if row['selected'] else ''} |"
        )
    return "\n".join(lines) + "\n"
