"""Optuna studies shared by architecture search and hyperparameter tuning.

This module contains what both need:

- storage: a SQLite file next to the results by default, any SQLAlchemy URL that Optuna's
  ``RDBStorage`` accepts (``postgresql://``, ``mysql://``), or a ``JournalStorage`` file;
- proxy training: trials train on a fixed subset of the training split through the harness
  loop, judged on the validation split, with the test split sealed;
- the worker loop that finishes a study with exactly ``n_trials`` complete trials, whether
  one process, several local processes or workers on other machines share it;
- resume: trials left running by a killed process are failed and enqueued again;
- Pareto fronts and the selection rule shared by search and tuning.

A study is self-describing: its ``job`` user attribute points at a pickled
:class:`StudyJob`, so ``compressbench search-worker --storage URL --study NAME`` can join it
from another process or machine that sees the same results folder.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle
import re
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from benchmark.budget import Budget
from benchmark.errors import ConfigError, DataError, MethodError, TrainingDivergedError
from benchmark.measure.complexity import Complexity, count_complexity
from benchmark.tasks.registry import Task, TaskSpec
from benchmark.training import Harness, TrainingConfig

if TYPE_CHECKING:
    import optuna

    from methods.base import Method, RunContext

__all__ = [
    "ProxyResult",
    "ProxyTrainer",
    "StudyBuilder",
    "StudyJob",
    "StudySettings",
    "configure_studies",
    "describe_storage",
    "join_study",
    "open_storage",
    "pareto_front",
    "run_study",
    "select_point",
    "study_settings",
]

logger = logging.getLogger(__name__)

STORAGE_ENV = "COMPRESSBENCH_STORAGE"
DEFAULT_SQLITE_NAME = "optuna.db"
JOURNAL_PREFIX = "journal:"
# A running trial whose heartbeat is older than the grace period is failed and enqueued
# again (RDB storages only; JournalStorage in Optuna 5.1 has no heartbeat).
HEARTBEAT_INTERVAL_S = 10
HEARTBEAT_GRACE_S = 40
MAX_RETRIES = 3
# Attempts to open an RDB storage, for processes that create a new database at the same time.
SCHEMA_ATTEMPTS = 5
# A running trial that still has no owner this long after its start is failed and enqueued
# again. Longer than the 60 s SQLite lock timeout, so a slow live worker is never mistaken.
ORPHAN_AFTER_S = 120


# -- settings and storage --------------------------------------------------------------------


@dataclass
class StudySettings:
    """Storage of the studies of this process, and local worker processes per study."""

    # None: a SQLite file ``optuna.db`` in the results folder. Otherwise a SQLAlchemy URL,
    # ``journal:PATH``, or a path ending in ``.log`` or ``.jsonl`` for a JournalStorage file.
    storage: str | None = None
    # Local worker processes per study; 1 runs the trials in the calling process.
    workers: int = 1
    # Seconds between checks while other workers hold the remaining trials.
    poll_seconds: float = 2.0


WORKERS_ENV = "COMPRESSBENCH_STUDY_WORKERS"

# Read from the environment, so runs executed in other processes share the settings.
_SETTINGS = StudySettings(
    storage=os.environ.get(STORAGE_ENV) or None, workers=int(os.environ.get(WORKERS_ENV) or 1)
)


def study_settings() -> StudySettings:
    """Return the settings that search and tuning use in this process."""
    return _SETTINGS


def configure_studies(
    storage: str | None = None, workers: int = 1, poll_seconds: float | None = None
) -> None:
    """Set the storage and the local worker count for the studies of this process."""
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if storage is not None:
        _check_storage_spec(storage)
    _SETTINGS.storage = storage or os.environ.get(STORAGE_ENV) or None
    _SETTINGS.workers = workers
    if _SETTINGS.storage:
        os.environ[STORAGE_ENV] = _SETTINGS.storage
    os.environ[WORKERS_ENV] = str(workers)
    if poll_seconds is not None:
        _SETTINGS.poll_seconds = poll_seconds


def resolve_storage_spec(spec: str | None, output: Path) -> str:
    """Return the storage spec itself, or the default SQLite URL in ``output``."""
    if spec:
        _check_storage_spec(spec)
        return spec
    path = (Path(output) / DEFAULT_SQLITE_NAME).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _journal_path(spec: str) -> str | None:
    if spec.startswith(JOURNAL_PREFIX):
        return spec[len(JOURNAL_PREFIX) :]
    if "://" not in spec and spec.endswith((".log", ".jsonl")):
        return spec
    return None


def _check_storage_spec(spec: str) -> None:
    if _journal_path(spec) is None and "://" not in spec:
        raise ConfigError(
            f"invalid study storage {spec!r}; expected a SQLAlchemy URL such as "
            "'postgresql://user@host/db' or 'sqlite:///path/optuna.db', or a JournalStorage file "
            "as 'journal:PATH' or a path ending in .log"
        )


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """Open the storage named by a resolved ``spec``.

    RDB storages get a heartbeat, so trials of a worker that died anywhere are failed and
    enqueued again. SQLite connections wait up to 60 s for a lock, so local workers share one
    file safely.
    """
    import optuna
    import sqlalchemy
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    journal = _journal_path(spec)
    if journal is not None:
        Path(journal).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(journal, lock_obj=JournalFileOpenLock(journal)))

    engine_kwargs: dict[str, Any] = {}
    if spec.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    attempt = 1
    while True:
        try:
            return _open_rdb(spec, engine_kwargs)
        except (ImportError, ModuleNotFoundError) as error:
            raise ConfigError(
                f"cannot open study storage {describe_storage(spec)}: {error}; install the "
                "database driver, e.g. pip install 'psycopg[binary]' for PostgreSQL"
            ) from error
        except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as error:
            # Processes that open a new database at once race to create its tables.
            if attempt == SCHEMA_ATTEMPTS:
                raise ConfigError(
                    f"cannot open study storage {describe_storage(spec)}: {error}"
                ) from error
            logger.warning("opening %s failed (%s); retrying", describe_storage(spec), error)
            time.sleep(0.5 * attempt)
            attempt += 1


def _open_rdb(spec: str, engine_kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            spec,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=HEARTBEAT_GRACE_S,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
        )


def describe_storage(spec: str) -> str:
    """Return ``spec`` with any password replaced by ``***``, for logs and result rows."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", spec)


# -- proxy training ---------------------------------------------------------------------------


class _ProxySplits:
    """A subset of a task's training split and its full validation split.

    Reading the test split raises :class:`~benchmark.errors.DataError`, so no trial can
    choose anything on test data.
    """

    def __init__(self, data: Any, keep: torch.Tensor) -> None:
        self.train_x = data.train_x.index_select(0, keep)
        self.train_y = data.train_y.index_select(0, keep)
        self.val_x, self.val_y = data.val_x, data.val_y
        self.class_names = data.class_names
        self.original_classes = data.original_classes
        self.mean, self.std = data.mean, data.std

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "val": len(self.val_y)}

    @property
    def test_x(self) -> torch.Tensor:
        raise DataError(
            "the test split is sealed during search and tuning; "
            "trials are judged on the validation split"
        )

    @property
    def test_y(self) -> torch.Tensor:
        return self.test_x


def stratified_subset(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Return ``count`` sorted indices that take classes in turn from a seeded shuffle."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    shuffled = labels[order]
    rank = torch.empty(len(labels), dtype=torch.long)
    for label in torch.unique(shuffled):
        members = torch.nonzero(shuffled == label).flatten()
        rank[members] = torch.arange(len(members))
    interleaved = order[torch.argsort(rank, stable=True)]
    return torch.sort(interleaved[:count]).values


@dataclass
class ProxyResult:
    """The outcome of one proxy training."""

    # None when training diverged.
    model: nn.Module | None
    # The validation metric, or 0 when training diverged.
    val_metric: float
    # Passes over the full training split that the proxy cost: proxy epochs x subset fraction.
    epochs: float
    complexity: Complexity | None
    train_size: int
    test_reads: int
    diverged: bool = False


class ProxyTrainer:
    """Trains short proxies of a task with the harness loop, on a subset of its training split."""

    def __init__(
        self,
        task: Task,
        training: TrainingConfig,
        seed: int,
        output: Path,
        workdir: Path | None = None,
    ) -> None:
        self.task = task
        self.training = dataclasses.replace(training, progress=False)
        self.seed = seed
        self.output = Path(output)
        self.workdir = Path(workdir) if workdir is not None else self.output / "work" / "proxies"
        self.cache_dir = self.output / "cache"

    @classmethod
    def from_context(cls, ctx: RunContext) -> ProxyTrainer:
        """Build a trainer for the run behind ``ctx``; results go to the run's folder."""
        # The runner places each run's work folder at <output>/work/<run id>.
        harness = ctx._harness
        return cls(harness.task, harness.training, ctx.seed, ctx.workdir.parent.parent, ctx.workdir)

    @property
    def full_train_size(self) -> int:
        return len(self.task.data.train_y)

    def subset_size(self, fraction: float) -> int:
        """Return the proxy's training images for ``fraction``: at least one per class."""
        if not 0 < fraction <= 1:
            raise ConfigError(f"proxy fraction must be in (0, 1], got {fraction}")
        return max(self.task.num_classes, int(math.floor(fraction * self.full_train_size + 1e-9)))

    def proxy_task(self, fraction: float, model_options: dict[str, Any] | None = None) -> Task:
        """Return the task restricted to a fixed subset of its training split."""
        count = min(self.subset_size(fraction), self.full_train_size)
        keep = stratified_subset(self.task.data.train_y, count, self.seed)
        options = {**self.task.model_options, **(model_options or {})}
        spec = dataclasses.replace(
            self.task.spec,
            train_limit=count,
            model_options=tuple(sorted((k, _freeze(v)) for k, v in options.items())),
        )
        return Task(
            spec,
            self.task.definition,
            _ProxySplits(self.task.data, keep),
            self.task.source,
            options,
        )

    def build_model(self, **model_options: Any) -> nn.Module:
        return self.task.build_model(**model_options)

    def example_input(self) -> torch.Tensor:
        return self.task.data.train_x[:1].clone()

    def train(
        self,
        method: Method,
        budget: Budget,
        fraction: float,
        model_options: dict[str, Any] | None = None,
        name: str = "trial",
    ) -> ProxyResult:
        """Run ``method``'s whole lifecycle under ``budget`` on the subset; return the result.

        The epochs of every kind the proxy harness charges (pre-training included) are scaled
        by the subset's share of the training split.
        """
        task = self.proxy_task(fraction, model_options)
        harness = Harness(
            task,
            method,
            budget,
            self.training,
            self.seed,
            workdir=self.workdir / name,
            cache_dir=self.cache_dir / "proxies",
        )
        share = len(task.data.train_y) / self.full_train_size
        try:
            outcome = harness.run()
        except TrainingDivergedError as error:
            # A diverging setting is a poor trial, not a failed study; its epochs still count.
            logger.warning("proxy %s diverged: %s", name, error)
            epochs = harness.ledger.epochs * share
            return ProxyResult(
                None, 0.0, epochs, None, len(task.data.train_y), harness.test_reads, True
            )
        model = outcome.model.eval()
        val_metric = harness.evaluate(model, "val")
        complexity = count_complexity(model, harness.example_input(1))
        return ProxyResult(
            model,
            val_metric,
            harness.ledger.epochs * share,
            complexity,
            len(task.data.train_y),
            harness.test_reads,
        )


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# -- jobs and workers -------------------------------------------------------------------------


class StudyBuilder(Protocol):
    """The part of search or tuning that a study needs: directions, a sampler and an objective."""

    def study_directions(self) -> tuple[str, ...]: ...

    def make_sampler(self, n_trials: int, seed: int) -> optuna.samplers.BaseSampler: ...

    def make_objective(
        self, trainer: ProxyTrainer
    ) -> Callable[[optuna.Trial], Sequence[float]]: ...


@dataclass
class StudyJob:
    """Everything a worker process needs to rebuild a study's objective."""

    study_name: str
    builder: Any  # a StudyBuilder; pickled with the job
    task: TaskSpec
    training: TrainingConfig
    seed: int
    output: Path
    workdir: Path
    n_trials: int
    storage: str
    # Parameters enqueued as the first trials of a new study, e.g. the unmodified model.
    initial_trials: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def path(self) -> Path:
        return self.output / "studies" / f"{_safe_name(self.study_name)}.job.pkl"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


@dataclass
class StudyReport:
    """The finished trials of a study, as search and tuning report them."""

    study: optuna.Study
    complete: list[optuna.trial.FrozenTrial]
    failed: int
    resumed: int
    storage: str
    workers: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study.study_name,
            "storage": describe_storage(self.storage),
            "trials_complete": len(self.complete),
            "trials_failed": self.failed,
            "trials_resumed": self.resumed,
            "workers": self.workers,
        }


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def _process_start(pid: int) -> str:
    """Return the start time of ``pid`` in clock ticks since boot, or '' where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_is_dead(owner: str) -> bool:
    """Return whether ``owner`` names a process of this host that no longer runs."""
    host, pid_text, started = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return False  # the heartbeat of an RDB storage covers other machines
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # A live process with another start time reuses the pid of the dead owner.
    return bool(started) and _process_start(pid) != started


def _recover_dead_trials(study: optuna.Study) -> int:
    """Fail the running trials of dead local processes and enqueue them again; return how many."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("owner")
        if owner is None:
            # A worker records the owner right after creating the trial. A trial without one
            # long after its start lost its worker in between, before any heartbeat either.
            started = trial.datetime_start
            if started is None or (datetime.now() - started).total_seconds() < ORPHAN_AFTER_S:
                continue
        elif not _owner_is_dead(owner):
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another worker recovered it first
        retry_of = trial.user_attrs.get("retry_of", trial.number)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": retry_of}, skip_if_exists=False)
        logger.warning(
            "study %s: trial %d of dead process %s enqueued again",
            study.study_name,
            trial.number,
            owner,
        )
        recovered += 1
    return recovered


def _claims_slot(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    """Return whether ``trial`` is among the first ``n_trials`` live trials, by number.

    Live trials are complete, running or waiting. Trial numbers are assigned by the storage
    in creation order, so every worker reaches the same decision for the same trial.
    """
    from optuna.trial import TrialState

    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    earlier = [t for t in study.get_trials(deepcopy=False, states=live) if t.number < trial.number]
    return len(earlier) < n_trials


def _counts(study: optuna.Study) -> tuple[int, int, int]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    active = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return complete, active, waiting


def work_on_study(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Sequence[float]],
    n_trials: int,
    wait: bool,
    poll_seconds: float,
) -> int:
    """Run trials until the study has ``n_trials`` complete ones; return how many ran here.

    With ``wait`` False, the worker stops as soon as other workers run the remaining trials.
    With ``wait`` True, it waits for them and takes over any that fail or go stale.
    """
    import optuna

    ran = 0

    def claimed(trial: optuna.Trial) -> Sequence[float]:
        nonlocal ran
        # The owner goes first, so a process killed from here on leaves a recoverable trial.
        trial.set_user_attr("owner", _owner_id())
        if not _claims_slot(study, trial, n_trials):
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned(
                f"surplus trial: earlier trials already fill the {n_trials} slots"
            )
        values = objective(trial)
        ran += 1
        return values

    while True:
        _recover_dead_trials(study)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        complete, active, waiting = _counts(study)
        if complete >= n_trials:
            return ran
        if complete + active >= n_trials and not waiting:
            if not wait:
                return ran
            time.sleep(poll_seconds)
            continue
        study.optimize(claimed, n_trials=1, catch=())


def _load_or_create(job: StudyJob, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    import optuna

    storage = open_storage(job.storage)
    study = optuna.create_study(
        storage=storage,
        study_name=job.study_name,
        sampler=sampler,
        directions=list(job.builder.study_directions()),
        load_if_exists=True,
    )
    return study


def _sampler_seed(seed: int, worker: int) -> int:
    # Workers need different streams, or parallel samplers would propose identical trials.
    return seed * 1009 + worker


def run_study(job: StudyJob, trainer: ProxyTrainer, workers: int | None = None) -> StudyReport:
    """Finish the study of ``job`` with ``workers`` local processes and return its trials.

    One worker runs the trials in this process. More workers run as child processes on the
    same storage; afterwards this process finishes any trial that a crashed child left.
    Calling it again after an interruption resumes the study.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workers = workers or study_settings().workers
    study = _load_or_create(job, job.builder.make_sampler(job.n_trials, _sampler_seed(job.seed, 0)))
    resumed = sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
    if not study.get_trials(deepcopy=False):
        for params in job.initial_trials:
            study.enqueue_trial(params)
    if resumed:
        logger.info(
            "study %s: resuming with %d of %d trials complete",
            job.study_name,
            resumed,
            job.n_trials,
        )

    # The job file lets workers of other processes or machines join: search-worker --study.
    job.path().parent.mkdir(parents=True, exist_ok=True)
    job.path().write_bytes(pickle.dumps(job))
    study.set_user_attr("job", str(job.path().resolve()))
    if workers > 1:
        _run_children(job, workers)

    objective = job.builder.make_objective(trainer)
    work_on_study(
        study, objective, job.n_trials, wait=True, poll_seconds=study_settings().poll_seconds
    )

    trials = study.get_trials(deepcopy=False)
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.number)
    failed = sum(t.state == TrialState.FAIL for t in trials)
    return StudyReport(study, complete, failed, resumed, job.storage, workers)


def _run_children(job: StudyJob, workers: int) -> None:
    command = [
        sys.executable,
        "-m",
        "benchmark.cli",
        "search-worker",
        "--job",
        str(job.path().resolve()),
    ]
    # The working directory goes first, so children of a source checkout import its code.
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")])
        ),
    }
    logger.info("study %s: starting %d worker processes", job.study_name, workers)
    children = [
        subprocess.Popen([*command, "--worker-index", str(index)], env=environment)
        for index in range(1, workers + 1)
    ]
    for child in children:
        code = child.wait()
        if code != 0:
            logger.error(
                "study %s: worker process %d exited with code %d", job.study_name, child.pid, code
            )


def join_study(job_path: Path, worker_index: int = 1) -> int:
    """Join the study of a pickled job as one worker; return the trials it completed."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    job: StudyJob = pickle.loads(Path(job_path).read_bytes())
    from benchmark.tasks.registry import load_task

    task = load_task(job.task)
    if job.training.threads:
        torch.set_num_threads(job.training.threads)
    trainer = ProxyTrainer(task, job.training, job.seed, job.output, job.workdir)
    study = _load_or_create(
        job, job.builder.make_sampler(job.n_trials, _sampler_seed(job.seed, worker_index))
    )
    ran = work_on_study(
        study, job.builder.make_objective(trainer), job.n_trials, wait=False, poll_seconds=1.0
    )
    logger.info("study %s: worker %d completed %d trials", job.study_name, worker_index, ran)
    return ran


def job_from_study(storage: str, study_name: str) -> Path:
    """Return the job file that a study created by ``compressbench search`` points at."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError as error:
        raise ConfigError(
            f"study {study_name!r} not found in {describe_storage(storage)}"
        ) from error
    path = study.user_attrs.get("job")
    if path is None:
        raise ConfigError(
            f"study {study_name!r} has no job file; "
            "only studies started by CompressBench can be joined"
        )
    return Path(path)


# -- Pareto fronts ----------------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Return the indices of the points (score, cost) that no other point dominates.

    A point dominates another when its score is at least as high and its cost at most as
    high, with one of the two strictly better. Higher scores and lower costs are better.
    """
    front = []
    for i, (score, cost) in enumerate(points):
        dominated = any(
            other_score >= score
            and other_cost <= cost
            and (other_score > score or other_cost < cost)
            for j, (other_score, other_cost) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def select_point(
    points: Sequence[tuple[float, float]], candidates: Iterable[int], tolerance: float
) -> int:
    """Return the cheapest candidate whose score is within ``tolerance`` of the best candidate.

    Ties in cost go to the higher score, then to the lower index.
    """
    candidates = list(candidates)
    if not candidates:
        raise MethodError("no candidate to select from")
    best = max(points[i][0] for i in candidates)
    eligible = [i for i in candidates if points[i][0] >= best - tolerance - 1e-12]
    return min(eligible, key=lambda i: (points[i][1], -points[i][0], i))
