"""Suite files: the TOML schema, its validation, and quick mode.

A suite names its tasks, its methods with parameters and sweeps, its seeds, and one budget
that applies to every method. Every error names the file, the key, the bad value and the
allowed values, and is raised before any training starts. See ``benchmark/suites/`` for
examples and the README for the full list of keys.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.budget import Budget
from benchmark.errors import ConfigError, MethodError
from benchmark.tasks.registry import TASKS, TaskSpec
from benchmark.training import TrainingConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["SUITES_DIR", "MethodEntry", "Suite", "find_suite", "load_suite", "parse_suite"]

SUITES_DIR = Path(__file__).parent / "suites"

_TOP_KEYS = {"suite", "budget", "training", "tasks", "methods", "profile", "export", "quick"}
_SUITE_KEYS = {"name", "description", "seeds", "all_methods"}
_TASK_KEYS = {
    "name",
    "data_dir",
    "download",
    "classes",
    "model_options",
    "val_fraction",
    "test_fraction",
    "split_seed",
    "train_limit",
    "required",
    "latency_budget_ms",
    "latency_device",
}
_METHOD_KEYS = {"name", "pipeline", "params", "sweep"}
_EXPORT_KEYS = {"opset", "dynamic_batch", "parity_tolerance", "parity_samples"}
_QUICK_KEYS = {"epochs", "finetune_epochs", "tuning_trials", "seeds", "train_limit", "profile"}
_QUICK_DEFAULTS = {"epochs": 2, "finetune_epochs": 1, "tuning_trials": 2, "seeds": 1, "train_limit": 1000}


@dataclass(frozen=True)
class MethodEntry:
    """One ``[[methods]]`` table: a method or a pipeline, fixed params and sweeps."""

    stages: tuple[str, ...]
    # Fixed parameters per stage name.
    params: Mapping[str, Mapping[str, Any]]
    # Swept parameters per stage name: every combination becomes a run.
    sweep: Mapping[str, Mapping[str, tuple[Any, ...]]]
    where: str

    @property
    def name(self) -> str:
        return "+".join(self.stages)


@dataclass(frozen=True)
class ExportConfig:
    """Export settings of result models and their parity check."""

    opset: int = 17
    dynamic_batch: bool = False
    parity_tolerance: float = 1e-4
    parity_samples: int = 256  # real test inputs compared between PyTorch and ONNX Runtime


@dataclass(frozen=True)
class Suite:
    """A validated suite."""

    name: str
    path: Path
    description: str
    seeds: tuple[int, ...]
    budget: Budget
    training: TrainingConfig
    tasks: tuple[TaskSpec, ...]
    methods: tuple[MethodEntry, ...]
    export: ExportConfig
    # The raw [profile] table; benchmark.measure.profiling validates it.
    profile: Mapping[str, Any] = field(default_factory=dict)
    quick: bool = False
    # Task names whose datasets are optional: the runner skips them when absent.
    optional_tasks: frozenset[str] = frozenset()


def find_suite(name_or_path: str) -> Path:
    """Resolve a suite name from ``benchmark/suites`` or a path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"suite file {path} not found")
        return path
    candidate = SUITES_DIR / f"{name_or_path}.toml"
    if candidate.is_file():
        return candidate
    known = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.toml")))
    raise ConfigError(f"unknown suite {name_or_path!r}; built-in suites: {known}, or give a path to a .toml file")


def load_suite(name_or_path: str, quick: bool = False) -> Suite:
    """Read, validate and (with ``quick``) shrink a suite."""
    path = find_suite(name_or_path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from error
    return parse_suite(table, path, quick=quick)


def parse_suite(table: Mapping[str, Any], path: Path, quick: bool = False) -> Suite:
    """Validate a parsed TOML table; ``path`` names the file in errors."""
    where = str(path)
    _reject_unknown(table, _TOP_KEYS, where, "top-level table")
    suite_table = _table(table, "suite", where)
    _reject_unknown(suite_table, _SUITE_KEYS, where, "[suite]")

    name = _get(suite_table, "name", str, f"{where}: suite.name", default=path.stem)
    seeds = _int_list(suite_table.get("seeds", [0]), f"{where}: suite.seeds", minimum=0)
    if not seeds:
        raise ConfigError(f"{where}: suite.seeds is empty; give at least one seed, e.g. seeds = [0]")

    budget_table = _table(table, "budget", where, required=True)
    _reject_unknown(budget_table, {"epochs", "finetune_epochs", "tuning_trials"}, f"{where}: budget", "[budget]")
    if "epochs" not in budget_table:
        raise ConfigError(f"{where}: budget.epochs is missing; set the total training epochs, e.g. epochs = 10")
    budget = _dataclass_from(Budget, budget_table, f"{where}: budget")
    training = _dataclass_from(TrainingConfig, _table(table, "training", where), f"{where}: training")
    export = _dataclass_from(ExportConfig, _table(table, "export", where), f"{where}: export")
    if export.opset < 17:
        raise ConfigError(f"{where}: export.opset = {export.opset}; expected 17 or newer")

    tasks, optional = _parse_tasks(table.get("tasks"), where)
    methods = _parse_methods(table.get("methods", []), where)
    if suite_table.get("all_methods", False):
        methods = methods + _all_other_methods(methods, where)
    if not methods:
        raise ConfigError(
            f"{where}: no [[methods]] and suite.all_methods is not true; add a method such as name = 'dense'"
        )

    profile = dict(_table(table, "profile", where))
    suite = Suite(
        name=name,
        path=path,
        description=str(suite_table.get("description", "")),
        seeds=tuple(seeds),
        budget=budget,
        training=training,
        tasks=tasks,
        methods=methods,
        export=export,
        profile=profile,
        optional_tasks=frozenset(optional),
    )
    _check_profile(suite, where)
    if quick:
        suite = _apply_quick(suite, _table(table, "quick", where), where)
    return suite


def _parse_tasks(raw: Any, where: str) -> tuple[tuple[TaskSpec, ...], set[str]]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: missing [[tasks]]; add at least one, e.g. name = 'lenet5-mnist-sample'")
    specs, optional = [], set()
    for index, entry in enumerate(raw):
        key = f"{where}: tasks[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{key}: expected a table, got {entry!r}")
        _reject_unknown(entry, _TASK_KEYS, key, "[[tasks]]")
        name = _get(entry, "name", str, f"{key}.name")
        if name not in TASKS:
            raise ConfigError(f"{key}.name = {name!r} is not a task; allowed values: {', '.join(TASKS)}")
        classes = entry.get("classes")
        if classes is not None:
            classes = tuple(_int_list(classes, f"{key}.classes", minimum=0))
            if len(classes) < 2 or len(set(classes)) != len(classes):
                raise ConfigError(f"{key}.classes = {list(classes)}: expected at least 2 distinct class indices")
        model_options = _table(entry, "model_options", key)
        unknown = set(model_options) - {"widths", "width_mult"}
        if unknown:
            raise ConfigError(
                f"{key}.model_options: unknown key {sorted(unknown)[0]!r}; allowed keys: widths, width_mult"
            )
        spec = TaskSpec(
            name=name,
            data_dir=_get(entry, "data_dir", str, f"{key}.data_dir", default=None),
            download=_get(entry, "download", bool, f"{key}.download", default=False),
            classes=classes,
            model_options=tuple(sorted((k, _freeze(v)) for k, v in model_options.items())),
            val_fraction=_fraction(entry, "val_fraction", 0.1, key),
            test_fraction=_fraction(entry, "test_fraction", 0.2, key),
            split_seed=_get(entry, "split_seed", int, f"{key}.split_seed", default=0),
            train_limit=_positive(entry, "train_limit", key),
            latency_budget_ms=_latency_budget(entry, key),
            latency_device=_get(entry, "latency_device", str, f"{key}.latency_device", default=None),
        )
        if not _get(entry, "required", bool, f"{key}.required", default=True):
            optional.add(name)
        specs.append(spec)
    return tuple(specs), optional


def _parse_methods(raw: Any, where: str) -> tuple[MethodEntry, ...]:
    from methods.registry import get_method

    if not isinstance(raw, list):
        raise ConfigError(f"{where}: methods must be an array of tables ([[methods]])")
    entries = []
    for index, entry in enumerate(raw):
        key = f"{where}: methods[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{key}: expected a table, got {entry!r}")
        _reject_unknown(entry, _METHOD_KEYS, key, "[[methods]]")
        stages = _stages(entry, key)
        key = f"{key} ({' + '.join(stages)})"
        params = _per_stage(entry.get("params", {}), stages, f"{key}.params")
        sweep = _per_stage(entry.get("sweep", {}), stages, f"{key}.sweep")

        frozen_sweep: dict[str, dict[str, tuple[Any, ...]]] = {}
        for stage in stages:
            try:
                method_cls = get_method(stage)
            except MethodError as error:
                raise ConfigError(f"{key}: {error}") from error
            for param, values in sweep[stage].items():
                if not isinstance(values, list) or not values:
                    raise ConfigError(f"{key}.sweep.{param} = {values!r}: expected a non-empty list of values")
            frozen_sweep[stage] = {p: tuple(_freeze(v) for v in vals) for p, vals in sweep[stage].items()}
            _check_params(method_cls, params[stage], frozen_sweep[stage], key)
        frozen_params = {s: {k: _freeze(v) for k, v in params[s].items()} for s in stages}
        entries.append(MethodEntry(stages, frozen_params, frozen_sweep, key))
    return tuple(entries)


def _stages(entry: Mapping[str, Any], key: str) -> tuple[str, ...]:
    if ("name" in entry) == ("pipeline" in entry):
        raise ConfigError(f"{key}: give exactly one of name = 'method' or pipeline = ['method', 'method']")
    if "name" in entry:
        return (_get(entry, "name", str, f"{key}.name"),)
    pipeline = entry["pipeline"]
    if not isinstance(pipeline, list) or len(pipeline) < 2 or not all(isinstance(s, str) for s in pipeline):
        raise ConfigError(f"{key}.pipeline = {pipeline!r}: expected a list of at least two method names")
    if len(set(pipeline)) != len(pipeline):
        raise ConfigError(f"{key}.pipeline = {pipeline!r}: a method may appear once in a pipeline")
    return tuple(pipeline)


def _per_stage(raw: Any, stages: tuple[str, ...], key: str) -> dict[str, dict[str, Any]]:
    """Single methods take a flat table; pipelines take one table per stage name."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a table, got {raw!r}")
    if len(stages) == 1:
        return {stages[0]: dict(raw)}
    unknown = set(raw) - set(stages)
    if unknown:
        raise ConfigError(
            f"{key}: {sorted(unknown)[0]!r} is not a stage of the pipeline; for pipelines give one "
            f"table per stage, keyed by: {', '.join(stages)}"
        )
    result = {}
    for stage in stages:
        value = raw.get(stage, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{key}.{stage}: expected a table of parameters, got {value!r}")
        result[stage] = dict(value)
    return result


def _check_params(method_cls: type, fixed: Mapping[str, Any], sweep: Mapping[str, tuple[Any, ...]], key: str) -> None:
    from methods.base import parse_params

    overlap = set(fixed) & set(sweep)
    if overlap:
        raise ConfigError(f"{key}: parameter {sorted(overlap)[0]!r} is both fixed in params and swept")
    combos = [dict(fixed)] + [{**fixed, param: value} for param, values in sweep.items() for value in values]
    for combo in combos:
        try:
            parse_params(method_cls, combo, key)
        except MethodError as error:
            raise ConfigError(str(error)) from error


def _all_other_methods(listed: tuple[MethodEntry, ...], where: str) -> tuple[MethodEntry, ...]:
    from methods.registry import load_methods

    taken = {stage for entry in listed for stage in entry.stages}
    return tuple(
        MethodEntry((name,), {name: {}}, {name: {}}, f"{where}: suite.all_methods ({name})")
        for name in load_methods()
        if name not in taken
    )


def _check_profile(suite: Suite, where: str) -> None:
    if not suite.profile:
        return
    from benchmark.measure.profiling import ProfileSettings

    ProfileSettings.from_table(dict(suite.profile), f"{where}: profile")


def _apply_quick(suite: Suite, overrides: Mapping[str, Any], where: str) -> Suite:
    """Shrink the budget, seeds, sweeps and training split for a smoke run."""
    _reject_unknown(overrides, _QUICK_KEYS, f"{where}: [quick]", "[quick]")
    values = {**_QUICK_DEFAULTS, **{k: v for k, v in overrides.items() if k != "profile"}}
    epochs = min(int(values["epochs"]), suite.budget.epochs)
    finetune = min(int(values["finetune_epochs"]), suite.budget.finetune_epochs, epochs - 1)
    budget = Budget(epochs, finetune, min(int(values["tuning_trials"]), suite.budget.tuning_trials))
    limit = int(values["train_limit"])
    tasks = tuple(dataclasses.replace(t, train_limit=min(t.train_limit or limit, limit)) for t in suite.tasks)
    methods = tuple(
        dataclasses.replace(m, sweep={s: {p: v[:1] for p, v in sw.items()} for s, sw in m.sweep.items()})
        for m in suite.methods
    )
    profile = {**suite.profile, **overrides.get("profile", {})}
    return dataclasses.replace(
        suite,
        budget=budget,
        seeds=suite.seeds[: int(values["seeds"])],
        tasks=tasks,
        methods=methods,
        profile=profile,
        quick=True,
    )


# -- small validators -----------------------------------------------------------------------


def _reject_unknown(table: Mapping[str, Any], allowed: set[str], where: str, what: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} in {what}; allowed keys: {', '.join(sorted(allowed))}")


def _table(table: Mapping[str, Any], key: str, where: str, required: bool = False) -> dict[str, Any]:
    if key not in table:
        if required:
            raise ConfigError(f"{where}: missing [{key}] table")
        return {}
    value = table[key]
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a table, got {value!r}")
    return value


def _get(table: Mapping[str, Any], key: str, kind: type, where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: missing required key")
        return default
    value = table[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{where} = {value!r}: expected {kind.__name__}")
    return value


def _int_list(value: Any, where: str, minimum: int) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{where} = {value!r}: expected a list of integers")
    bad = [v for v in value if v < minimum]
    if bad:
        raise ConfigError(f"{where} = {value!r}: {bad[0]} is below the minimum {minimum}")
    return list(value)


def _latency_budget(entry: Mapping[str, Any], where: str) -> float | None:
    value = entry.get("latency_budget_ms")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{where}.latency_budget_ms = {value!r}: expected a positive number of milliseconds")
    return float(value)


def _positive(table: Mapping[str, Any], key: str, where: str) -> int | None:
    value = _get(table, key, int, f"{where}.{key}", default=None)
    if value is not None and value < 1:
        raise ConfigError(f"{where}.{key} = {value}: expected a positive number of training images")
    return value


def _fraction(table: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"{where}.{key} = {value!r}: expected a fraction strictly between 0 and 1")
    return float(value)


def _dataclass_from(cls: type, table: Mapping[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(table, set(fields), where, f"[{where.rsplit(': ', 1)[-1]}]")
    defaults = cls() if cls is not Budget else None
    values = {}
    for key, value in table.items():
        expected = type(getattr(defaults, key)) if defaults is not None else int
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
            raise ConfigError(f"{where}.{key} = {value!r}: expected {expected.__name__}")
        values[key] = value
    try:
        return cls(**values)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from error
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from error


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value
