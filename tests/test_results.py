"""Result rows: round trip, schema version, atomic writes, environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.errors import ResultsError
from benchmark.results import SCHEMA_VERSION, ResultStore, capture_environment, run_id, write_json_atomic


def _row(rid: str = "abc", **extra) -> dict:
    return {"schema_version": SCHEMA_VERSION, "run_id": rid, "status": "ok", "metrics": {"macs": 12}, **extra}


def test_row_round_trip(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    row = _row(filters={"conv2": 50, "conv1": 20})
    store.write(row)
    loaded = store.get("abc")
    assert loaded == row
    assert list(loaded["filters"]) == ["conv2", "conv1"]  # model order survives
    assert store.rows() == [row]


def test_other_schema_version_rejected(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "old.json").write_text(json.dumps({"schema_version": 0, "run_id": "old"}))
    with pytest.raises(ResultsError, match="schema version 0") as error:
        store.rows()
    assert "old.json" in str(error.value)
    assert "--output" in str(error.value)


def test_unreadable_row_named(tmp_path: Path) -> None:
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "bad.json").write_text("{not json")
    with pytest.raises(ResultsError, match="bad.json"):
        ResultStore(tmp_path).rows()


def test_write_without_version_rejected(tmp_path: Path) -> None:
    with pytest.raises(ResultsError):
        ResultStore(tmp_path).write({"run_id": "x"})


def test_atomic_write_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "row.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["row.json"]


def test_run_id_stable_and_distinct() -> None:
    first = run_id({"task": "t", "seed": 0, "params": {"a": 1, "b": 2}})
    assert first == run_id({"params": {"b": 2, "a": 1}, "seed": 0, "task": "t"})
    assert first != run_id({"task": "t", "seed": 1, "params": {"a": 1, "b": 2}})


def test_environment_has_versions() -> None:
    env = capture_environment(2)
    assert env["packages"]["torch"]
    assert env["packages"]["onnxruntime"]
    assert env["torch_threads"] == 2
    assert env["cpu"]
