"""Studies on a real PostgreSQL server, started by the test on 127.0.0.1 in a temporary folder.

Needs Debian's ``postgresql`` package (initdb, pg_ctl) and a PostgreSQL driver for SQLAlchemy
(``psycopg2-binary``); the tests are skipped, with the reason, where either is missing. As root,
the server runs as the ``postgres`` user through ``runuser``, because PostgreSQL refuses root.
"""

from __future__ import annotations

import glob
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from test_search import REPO, TESTS, SleepyStudy, _sleepy_job

from benchmark.studies import StudyJob, open_storage, run_study


def _driver_missing() -> str | None:
    """Return why SQLAlchemy cannot load its default driver for postgresql:// URLs, or None."""
    import sqlalchemy

    dialect = sqlalchemy.engine.make_url("postgresql://localhost/db").get_dialect()
    try:
        dialect.import_dbapi()
    except ImportError as error:
        return (
            f"{error}; pip install the {dialect.driver} driver (psycopg[binary] for SQLAlchemy 2.1)"
        )
    return None


pytestmark = pytest.mark.skipif(_driver_missing() is not None, reason=str(_driver_missing()))


def _postgres_bin() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser") is None:
        pytest.skip("running as root without runuser; PostgreSQL refuses to run as root")
    return ["runuser", "-u", "postgres", "--", *command]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server not installed: apt-get install -y postgresql")
    # Not under pytest's tmp_path: as root that folder is closed to the postgres user.
    folder = Path(tempfile.mkdtemp(prefix="compressbench-postgres-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    port = _free_port()

    def run(command: list[str]) -> None:
        done = subprocess.run(_as_server_user(command), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(
                f"{command[0]} failed with code {done.returncode}: {done.stderr[-2000:]}"
            )

    run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
    options = f"-p {port} -h 127.0.0.1 -k {folder} -c fsync=off"
    run(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "server.log"),
            "-w",
            "start",
        ]
    )
    try:
        import sqlalchemy

        server = sqlalchemy.create_engine(
            f"postgresql://postgres@127.0.0.1:{port}/postgres", isolation_level="AUTOCOMMIT"
        )
        with server.connect() as connection:
            connection.execute(sqlalchemy.text("CREATE DATABASE optuna"))
        server.dispose()
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(folder, ignore_errors=True)


def test_postgres_study_completes(postgres_url: str, tmp_path: Path) -> None:
    job, trainer = _sleepy_job(tmp_path, postgres_url, n_trials=4)
    job.builder = SleepyStudy(seconds=0.0)
    report = run_study(job, trainer)
    assert len(report.complete) == 4
    assert report.as_dict()["storage"] == postgres_url


def test_postgres_worker_joins_by_study_name(postgres_url: str, tmp_path: Path) -> None:
    job, trainer = _sleepy_job(tmp_path, postgres_url, n_trials=5)
    job = StudyJob(**{**job.__dict__, "study_name": "joined", "builder": SleepyStudy(seconds=0.05)})
    study = optuna.create_study(
        study_name="joined", storage=open_storage(postgres_url), direction="maximize"
    )
    job.path().parent.mkdir(parents=True, exist_ok=True)
    job.path().write_bytes(pickle.dumps(job))
    study.set_user_attr("job", str(job.path()))

    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}
    command = [
        sys.executable,
        "-m",
        "benchmark.cli",
        "search-worker",
        "--storage",
        postgres_url,
        "--study",
        "joined",
    ]
    finished = subprocess.run(
        command, env=environment, cwd=REPO, capture_output=True, text=True, timeout=180
    )

    assert finished.returncode == 0, finished.stderr[-3000:]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 5
    assert all(trial.user_attrs["owner"].split(":")[1] != str(os.getpid()) for trial in complete)
