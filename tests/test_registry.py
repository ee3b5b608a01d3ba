"""The method registry, built-in discovery, and third-party plugins through entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.errors import MethodError
from methods import registry
from methods.base import Method, parse_params
from methods.dense import Dense

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = Path(__file__).parent / "example_plugin"


def test_builtin_dense_registered() -> None:
    assert registry.get_method("dense") is Dense


def test_unknown_method_lists_names() -> None:
    with pytest.raises(MethodError, match="registered methods: .*dense"):
        registry.get_method("nope")


def test_duplicate_name_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    registry.load_methods()

    class Impostor(Method):
        name = "dense"

    with pytest.raises(MethodError, match="registered twice"):
        registry.register(Impostor)
    registry.register(Dense)  # the same class again is fine


def test_register_requires_name() -> None:
    class Nameless(Method):
        pass

    with pytest.raises(MethodError, match="'name' is empty"):
        registry.register(Nameless)


def test_parse_params_rejects_wrong_type() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class P:
        lam: float = 0.1
        layers: str = "conv"

    class WithParams(Method):
        name = "test.params"
        Params = P

    assert parse_params(WithParams, {"lam": 1}, "here").lam == 1.0
    with pytest.raises(MethodError, match="here.layers: expected str"):
        parse_params(WithParams, {"layers": 3}, "here")
    with pytest.raises(MethodError, match="unknown parameter 'lamda'.*lam, layers"):
        parse_params(WithParams, {"lamda": 3}, "here")


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


def test_plugin_listed_through_entry_point(plugin_site: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmark.cli", "list"],
        cwd=ROOT, env=_env(plugin_site), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "example.halfwidth" in result.stdout
    assert "example plugin" in result.stdout


def test_plugin_runs_in_suite(plugin_site: Path, tmp_path: Path) -> None:
    suite = tmp_path / "plugin.toml"
    suite.write_text(
        "[suite]\nname = 'plugin'\n[budget]\nepochs = 1\n[training]\nthreads = 1\nprogress = false\n"
        "[[tasks]]\nname = 'lenet5-mnist-sample'\ntrain_limit = 200\n"
        "[[methods]]\nname = 'example.halfwidth'\nparams = { width_mult = 0.25 }\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "benchmark.cli", "run", str(suite), "--output", str(tmp_path / "out")],
        cwd=ROOT, env=_env(plugin_site), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row_file,) = (tmp_path / "out" / "rows").glob("*.json")
    row = json.loads(row_file.read_text())
    assert row["status"] == "ok"
    assert row["label"] == "example.halfwidth(width_mult=0.25)"
    assert row["metrics"]["filters"]["features.0"] == 5
