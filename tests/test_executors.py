"""Executors: worker processes and a real local Ray cluster give the same rows as local."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SUITE = """
[suite]
name = "executors"
seeds = [0, 1]
[budget]
epochs = 2
finetune_epochs = 1
[training]
threads = 1
progress = false
[export]
parity_samples = 16
[[tasks]]
name = "lenet5-mnist-sample"
train_limit = 200
[[methods]]
name = "dense"
[[methods]]
name = "example.halfwidth"
"""


def _env(plugin_site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), str(ROOT)])}


def _run(suite: Path, output: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "benchmark.cli", "run", str(suite), "--output", str(output), *extra]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _rows(output: Path) -> dict[str, dict]:
    rows = [json.loads(p.read_text()) for p in (output / "rows").glob("*.json")]
    return {row["run_id"]: row for row in rows}


def _comparable(row: dict) -> tuple:
    return (
        row["status"],
        row["identity"]["seed"],
        row["metrics"]["test_metric"],
        row["metrics"]["val_metric"],
        tuple(round(h["loss"], 6) for h in row["history"]),
        row["budget_consumed"]["epochs"],
    )


@pytest.fixture(scope="module")
def local_rows(plugin_site: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("local")
    suite = folder / "suite.toml"
    suite.write_text(SUITE)
    _run(suite, folder / "out", _env(plugin_site))
    return _rows(folder / "out")


def test_processes_match_local(plugin_site: Path, local_rows: dict[str, dict], tmp_path: Path) -> None:
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE)
    _run(suite, tmp_path / "out", _env(plugin_site), "--executor", "processes", "--workers", "2")
    rows = _rows(tmp_path / "out")
    assert set(rows) == set(local_rows)
    for rid, row in rows.items():
        assert _comparable(row) == _comparable(local_rows[rid])


@pytest.mark.slow
def test_processes_retry_killed_worker(plugin_site: Path, tmp_path: Path) -> None:
    marker = tmp_path / "killed-once"
    suite = tmp_path / "crash.toml"
    suite.write_text(
        SUITE.replace("seeds = [0, 1]", "seeds = [0]").split("[[methods]]")[0]
        + f'[[methods]]\nname = "example.crash_once"\nparams = {{ marker = "{marker}" }}\n'
    )
    result = _run(suite, tmp_path / "out", _env(plugin_site), "--executor", "processes", "--workers", "2")
    assert marker.exists(), "the first attempt did not run"
    assert "killed by signal SIGKILL; retrying" in result.stderr
    rows = _rows(tmp_path / "out")
    assert len(rows) == 1
    (row,) = rows.values()
    assert row["status"] == "ok"
    assert int(marker.read_text()) != os.getpid()


@pytest.mark.slow
def test_processes_give_up_after_retries(plugin_site: Path, tmp_path: Path) -> None:
    marker = tmp_path / "always"
    suite = tmp_path / "crash.toml"
    suite.write_text(
        SUITE.replace("seeds = [0, 1]", "seeds = [0]").split("[[methods]]")[0]
        + f'[[methods]]\nname = "example.crash_once"\nparams = {{ marker = "{marker}" }}\n'
    )
    # With no retries, the single attempt dies and the run is recorded as failed.
    _run(suite, tmp_path / "out", _env(plugin_site), "--executor", "processes", "--max-retries", "0")
    (row,) = _rows(tmp_path / "out").values()
    assert row["status"] == "failed"
    assert row["reason"] == "WorkerLost: the worker process was killed by signal SIGKILL on all 1 attempts"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(plugin_site: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real local Ray cluster: a head node and one worker node on 127.0.0.1."""
    pytest.importorskip("ray", reason="Ray is not installed; pip install 'compressbench[ray]'")
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        ray_bin = Path(shutil.which("ray") or "ray")
    temp = tmp_path_factory.mktemp("ray")
    port = _free_port()
    env = {**_env(plugin_site), "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    head = [str(ray_bin), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
            "--include-dashboard", "false", "--temp-dir", str(temp), *common]
    worker = [str(ray_bin), "start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1", *common]
    try:
        for command in (head, worker):
            started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
            assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.mark.slow
def test_ray_matches_local(ray_cluster, local_rows: dict[str, dict], tmp_path: Path) -> None:
    address, env = ray_cluster
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE)
    _run(suite, tmp_path / "out", env, "--executor", "ray", "--address", address)
    rows = _rows(tmp_path / "out")
    assert set(rows) == set(local_rows)
    for rid, row in rows.items():
        assert _comparable(row) == _comparable(local_rows[rid])


@pytest.mark.slow
def test_ray_retries_killed_worker(ray_cluster, tmp_path: Path) -> None:
    address, env = ray_cluster
    marker = tmp_path / "killed-once"
    suite = tmp_path / "crash.toml"
    suite.write_text(
        SUITE.replace("seeds = [0, 1]", "seeds = [0]").split("[[methods]]")[0]
        + f'[[methods]]\nname = "example.crash_once"\nparams = {{ marker = "{marker}" }}\n'
    )
    _run(suite, tmp_path / "out", env, "--executor", "ray", "--address", address)
    assert marker.exists()
    rows = _rows(tmp_path / "out")
    assert len(rows) == 1
    (row,) = rows.values()
    assert row["status"] == "ok"
