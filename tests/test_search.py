"""Architecture search (nas.widths): search space, budget, constraint, resume and workers."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from support import tiny_suite

from benchmark.errors import MethodError
from benchmark.results import ResultStore
from benchmark.runner import SuiteRunner
from benchmark.studies import (
    ProxyTrainer,
    StudyJob,
    configure_studies,
    open_storage,
    pareto_front,
    run_study,
    select_point,
)
from benchmark.tasks.models import VGG16, LeNet5, ResNet56
from benchmark.tasks.registry import TaskSpec, load_task
from benchmark.training import TrainingConfig
from methods.search import WidthSearchParams, WidthSearchStudy, width_groups, width_range

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# Four trials of LeNet-5 under a cap that the unmodified model (2.29 M MACs) exceeds.
MAX_MACS = 1_500_000
SEARCH = {"name": "nas.widths", "params": {"trials": 4, "search_epochs": 1, "max_macs": MAX_MACS}}


@pytest.fixture(autouse=True)
def _default_study_settings():
    configure_studies(storage=None, workers=1)
    yield
    configure_studies(storage=None, workers=1)


# -- search space ------------------------------------------------------------------------------


def test_width_groups_lenet() -> None:
    widths, groups = width_groups(LeNet5())
    assert widths == [20, 50, 500]
    assert [g.name for g in groups] == ["conv1", "conv2", "fc1"]


def test_width_groups_vgg_scaled() -> None:
    widths, groups = width_groups(VGG16(width_mult=0.25))
    assert len(widths) == 14
    assert len(groups) == 14
    assert widths[0] == 16
    assert VGG16(widths=widths).classifier[1].out_features == widths[-1]


def test_width_groups_resnet_per_stage() -> None:
    widths, groups = width_groups(ResNet56(width_mult=0.25))
    assert len(widths) == 30
    assert [g.name for g in groups] == [
        "stage1",
        "stage2",
        "stage3",
        "stage1_inner",
        "stage2_inner",
        "stage3_inner",
    ]
    assert len(groups[3].indices) == ResNet56.blocks_per_stage
    rebuilt, _ = width_groups(ResNet56(widths=widths))
    assert rebuilt == widths


def test_width_groups_reject_unknown_model() -> None:
    import torch

    with pytest.raises(MethodError, match="no search space"):
        width_groups(torch.nn.Linear(2, 2))


def test_width_range_anchored_at_reference() -> None:
    low, high, step = width_range(500, 0.125, 1.0, 8)
    assert high == 500
    assert (high - low) % step == 0
    assert low <= 63
    assert width_range(3, 0.125, 1.0, 8) == (1, 3, 1)


def test_pareto_front_and_selection() -> None:
    points = [(0.90, 100.0), (0.95, 300.0), (0.85, 50.0), (0.80, 200.0), (0.945, 150.0)]
    front = pareto_front(points)
    assert sorted(front) == [0, 1, 2, 4]
    assert select_point(points, front, tolerance=0.01) == 4
    assert select_point(points, front, tolerance=0.0) == 1
    assert select_point(points, front, tolerance=0.2) == 2


def test_proxy_plan_shrinks_epochs_for_small_splits() -> None:
    study = WidthSearchStudy(WidthSearchParams(trials=12), n_trials=12, search_epochs=1)
    assert study.proxy_plan(3500, 10) == (2, pytest.approx(1 / 24))
    assert study.proxy_plan(200, 10) == (1, pytest.approx(1 / 12))


# -- a search run under the suite's budget -------------------------------------------------------


@pytest.fixture(scope="module")
def search_row(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("search")
    configure_studies(storage=None, workers=1)
    suite = tiny_suite(folder, methods=[SEARCH], epochs=3, finetune_epochs=1, train_limit=300)
    SuiteRunner(suite, folder / "out").run()
    (row,) = ResultStore(folder / "out").rows()
    row["_output"] = folder / "out"
    return row


def test_search_run_ok(search_row: dict) -> None:
    assert search_row["status"] == "ok", search_row.get("reason")
    assert search_row["family"] == "search"


def test_search_respects_budget(search_row: dict) -> None:
    consumed = search_row["budget_consumed"]
    search = search_row["diagnostics"]["search"]
    assert consumed["epochs"] <= 3 + 1e-9
    assert consumed["epochs_by_kind"]["tuning"] <= 1 + 1e-9
    assert consumed["epochs_by_kind"]["tuning"] == pytest.approx(search["epochs_consumed"])
    assert consumed["epochs_by_kind"]["main"] == 2
    assert search["trials_complete"] == 4
    trials = search_row["diagnostics"]["trials"]
    assert sum(row["epochs"] for row in trials) == pytest.approx(search["epochs_consumed"])


def test_search_respects_constraint(search_row: dict) -> None:
    diagnostics = search_row["diagnostics"]
    selected = diagnostics["selected"]
    assert selected["feasible"]
    assert selected["macs"] <= MAX_MACS
    assert search_row["metrics"]["macs"] == selected["macs"]
    assert all(row["macs"] <= MAX_MACS for row in diagnostics["pareto_front"])
    for row in diagnostics["trials"]:
        assert row["feasible"] == (row["macs"] <= MAX_MACS)
        if not row["feasible"]:
            assert row["epochs"] == 0.0


def test_search_starts_from_task_model(search_row: dict) -> None:
    first = min(search_row["diagnostics"]["trials"], key=lambda row: row["trial"])
    assert first["widths"] == [20, 50, 500]
    assert not first["feasible"]


def test_search_reports_pareto_table(search_row: dict) -> None:
    diagnostics = search_row["diagnostics"]
    table = diagnostics["search"]["pareto_table"]
    assert table.startswith("| trial | widths |")
    assert table.count("\n") == 2 + len(diagnostics["pareto_front"])
    assert [row["trial"] for row in diagnostics["trials"] if row["pareto"]]
    front_widths = [tuple(point["widths"]) for point in diagnostics["pareto_front"]]
    assert len(front_widths) == len(set(front_widths))
    assert (
        search_row["_output"] / "work" / search_row["run_id"] / "pareto.md"
    ).read_text() == table


def test_search_reads_test_split_once(search_row: dict) -> None:
    assert search_row["test_reads"] == 1


def test_search_study_in_sqlite_next_to_results(search_row: dict) -> None:
    path = search_row["_output"] / "optuna.db"
    assert path.is_file()
    study = optuna.load_study(
        study_name=f"{search_row['run_id']}.search", storage=f"sqlite:///{path}"
    )
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4


# -- studies shared by processes ----------------------------------------------------------------


@dataclass
class SleepyStudy:
    """A study builder without training: each trial sleeps, then scores x."""

    seconds: float = 0.3

    def study_directions(self) -> tuple[str, ...]:
        return ("maximize",)

    def make_sampler(self, n_trials: int, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)

    def make_objective(self, trainer: ProxyTrainer):
        def objective(trial: optuna.Trial) -> list[float]:
            x = trial.suggest_float("x", 0.0, 1.0)
            time.sleep(self.seconds)
            return [x]

        return objective


def _sleepy_job(tmp_path: Path, storage: str, n_trials: int) -> tuple[StudyJob, ProxyTrainer]:
    spec = TaskSpec("lenet5-mnist-sample", train_limit=100)
    training = TrainingConfig(threads=1, progress=False)
    trainer = ProxyTrainer(load_task(spec), training, 0, tmp_path)
    job = StudyJob(
        study_name="sleepy",
        builder=SleepyStudy(),
        task=spec,
        training=training,
        seed=0,
        output=tmp_path,
        workdir=tmp_path / "work",
        n_trials=n_trials,
        storage=storage,
    )
    return job, trainer


def _child_environment() -> dict[str, str]:
    path = os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def test_two_workers_no_trial_lost_or_duplicated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(TESTS)]))
    storage = f"journal:{tmp_path / 'journal.log'}"
    job, trainer = _sleepy_job(tmp_path, storage, n_trials=6)
    report = run_study(job, trainer, workers=2)

    study = optuna.load_study(study_name="sleepy", storage=open_storage(storage))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 6
    assert len(report.complete) == 6
    assert report.workers == 2
    owners = {trial.user_attrs["owner"] for trial in complete}
    assert len(owners) == 2, "both worker processes should complete trials"
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL))
    surplus = study.get_trials(states=(TrialState.PRUNED,))
    assert all(trial.user_attrs.get("surplus") for trial in surplus)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_resume_recovers_trial_of_killed_process(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    job, trainer = _sleepy_job(tmp_path, storage, n_trials=3)
    study = optuna.create_study(
        study_name="sleepy", storage=open_storage(storage), direction="maximize"
    )
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    orphan.set_user_attr("owner", f"{socket.gethostname()}:{dead.pid}:1")

    report = run_study(job, trainer)
    trials = study.get_trials()
    assert len(report.complete) == 3
    assert trials[0].state == TrialState.FAIL
    retried = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert len(retried) == 1
    assert retried[0].state == TrialState.COMPLETE
    assert retried[0].params == trials[0].params


SUITE_TOML = """
[suite]
name = "search-resume"
seeds = [0]

[budget]
epochs = 3
finetune_epochs = 1

[training]
batch_size = 64
threads = 1
progress = false

[export]
parity_samples = 16

[[tasks]]
name = "lenet5-mnist-sample"
train_limit = 300

[[methods]]
name = "nas.widths"
params = {{ trials = {trials}, search_epochs = 1 }}
"""


def _count_complete(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        storage = f"sqlite:///{database}"
        names = optuna.study.get_all_study_names(storage=storage)
        if not names:
            return 0
        study = optuna.load_study(study_name=names[0], storage=storage)
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    except Exception:  # the database may be half created while the child starts
        return 0


def test_study_resumes_after_sigkill(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    job, trainer = _sleepy_job(tmp_path, storage, n_trials=6)
    job.builder = SleepyStudy(seconds=1.0)
    job.path().parent.mkdir(parents=True)
    job.path().write_bytes(pickle.dumps(job))
    command = [sys.executable, "-m", "benchmark.cli", "search-worker", "--job", str(job.path())]

    log = tmp_path / "killed.log"
    with log.open("w") as stream:
        child = subprocess.Popen(
            command, env=_child_environment(), cwd=REPO, stdout=stream, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 120
    while (
        _count_complete(tmp_path / "optuna.db") < 2
        and child.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert child.poll() is None, (
        "the worker ended before it could be killed; give it more trials. Its log:\n"
        + log.read_text()[-3000:]
    )
    child.send_signal(signal.SIGKILL)
    child.wait()

    report = run_study(job, trainer)
    study = optuna.load_study(study_name="sleepy", storage=open_storage(storage))
    trials = study.get_trials()
    assert report.resumed >= 2
    assert len(report.complete) == 6
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for failed in (t for t in trials if t.state == TrialState.FAIL):
        (retry,) = [t for t in trials if _retry_of(t) == failed.number]
        assert retry.state == TrialState.COMPLETE
        # A trial killed before its first suggestion has no parameters to carry over.
        assert failed.params.items() <= retry.params.items()


def _retry_of(trial: optuna.trial.FrozenTrial) -> int | None:
    # Our own recovery sets retry_of; Optuna's heartbeat callback sets failed_trial.
    return trial.user_attrs.get("retry_of", trial.system_attrs.get("failed_trial"))


@pytest.mark.slow
def test_search_resumes_after_sigkill(tmp_path: Path) -> None:
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE_TOML.format(trials=12), encoding="utf-8")
    output = tmp_path / "out"
    command = [sys.executable, "-m", "benchmark.cli", "search", str(suite), "--output", str(output)]

    log = tmp_path / "killed.log"
    with log.open("w") as stream:
        child = subprocess.Popen(
            command, env=_child_environment(), cwd=REPO, stdout=stream, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 120
    while (
        _count_complete(output / "optuna.db") < 2
        and child.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert child.poll() is None, (
        "the search ended before it could be killed; give it more trials. Its log:\n"
        + log.read_text()[-3000:]
    )
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (output / "rows").exists() or not list((output / "rows").glob("*.json"))

    finished = subprocess.run(
        [*command, "--resume"],
        env=_child_environment(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    (row,) = ResultStore(output).rows()
    search = row["diagnostics"]["search"]
    assert row["status"] == "ok", row.get("reason")
    assert search["trials_resumed"] >= 2
    assert search["trials_complete"] == 12
    assert row["budget_consumed"]["epochs"] <= 3 + 1e-9


def test_search_latency_objective(tmp_path: Path) -> None:
    params = {"trials": 2, "search_epochs": 1, "objective": "latency", "max_latency_ms": 1000.0}
    suite = tiny_suite(
        tmp_path, methods=[{"name": "nas.widths", "params": params}], train_limit=200
    )
    SuiteRunner(suite, tmp_path / "out").run()
    (row,) = ResultStore(tmp_path / "out").rows()

    assert row["status"] == "ok", row.get("reason")
    diagnostics = row["diagnostics"]
    assert diagnostics["search"]["cost_unit"] == "ms"
    assert diagnostics["search"]["device"] == "local"
    assert all(trial["latency_ms"] > 0 for trial in diagnostics["trials"])
    assert all(
        set(point) == {"trial", "widths", "val_metric", "latency_ms"}
        for point in diagnostics["pareto_front"]
    )
    assert diagnostics["selected"]["cost"] == diagnostics["selected"]["latency_ms"]


def test_search_reuses_repeated_architecture(tmp_path: Path) -> None:
    task = load_task(TaskSpec("lenet5-mnist-sample", train_limit=200))
    trainer = ProxyTrainer(task, TrainingConfig(threads=1, progress=False), 0, tmp_path)
    builder = WidthSearchStudy(WidthSearchParams(trials=2), n_trials=2, search_epochs=1)
    study = optuna.create_study(directions=list(builder.study_directions()))
    widths = {"width_conv1": 5, "width_conv2": 8, "width_fc1": 59}
    study.enqueue_trial(widths)
    study.enqueue_trial(widths)
    study.optimize(builder.make_objective(trainer), n_trials=2)

    first, second = study.trials
    assert first.user_attrs["epochs"] > 0
    assert second.user_attrs["duplicate_of"] == 0
    assert second.user_attrs["epochs"] == 0.0
    assert second.values == first.values


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_resume_recovers_ownerless_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmark.studies

    monkeypatch.setattr(benchmark.studies, "ORPHAN_AFTER_S", 0.0)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    job, trainer = _sleepy_job(tmp_path, storage, n_trials=2)
    job.builder = SleepyStudy(seconds=0.0)
    study = optuna.create_study(
        study_name="sleepy", storage=open_storage(storage), direction="maximize"
    )
    study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})

    report = run_study(job, trainer)
    trials = study.get_trials()
    assert len(report.complete) == 2
    assert trials[0].state == TrialState.FAIL
    assert [t.user_attrs.get("retry_of") for t in trials].count(0) == 1
