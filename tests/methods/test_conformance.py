"""The conformance suite: every registered method passes through the same contract.

A new method joins by being registered; a third-party package can reuse
:class:`MethodContract` by subclassing it with its own ``method_name`` fixture.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from support import tiny_suite_table

from benchmark.config import parse_suite
from benchmark.errors import ConfigError, MethodError
from benchmark.results import ResultStore
from benchmark.runner import SuiteRunner
from methods.base import Family, Method, parse_params
from methods.registry import load_methods

METHODS = sorted(load_methods())


class MethodContract:
    """Checks that hold for every method; subclasses provide the ``method_name`` fixture."""

    budget = {"epochs": 3, "finetune_epochs": 1}

    @pytest.fixture(scope="class")
    @classmethod
    def row(cls, method_name: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
        method_cls = load_methods()[method_name]
        available, why = method_cls.available()
        if not available:
            pytest.skip(f"{method_name} is unavailable here: {why}")
        folder = tmp_path_factory.mktemp(method_name.replace(".", "_"))
        table = tiny_suite_table([{"name": method_name}], train_limit=200, **cls.budget)
        if method_cls.requires_batchnorm:
            table["tasks"][0]["name"] = "lenet5bn-mnist-sample"
        suite = parse_suite(table, folder / "conformance.toml")
        SuiteRunner(suite, folder / "out").run()
        (row,) = ResultStore(folder / "out").rows()
        return row

    def test_declares_contract(self, method_name: str) -> None:
        method_cls: type[Method] = load_methods()[method_name]
        assert method_cls.name == method_name
        assert isinstance(method_cls.family, Family)
        assert dataclasses.is_dataclass(method_cls.Params)
        assert method_cls.start_from in ("scratch", "dense")
        assert method_cls.main_checkpoint in ("best_val", "last")
        assert method_cls.summary, "give the method a one-line summary for 'compressbench list'"
        method_cls()  # default parameters are valid

    def test_runs_ok(self, row: dict) -> None:
        assert row["status"] == "ok", row.get("reason")

    def test_respects_budget(self, row: dict) -> None:
        assert row["budget_consumed"]["epochs"] <= self.budget["epochs"] + 1e-9
        assert row["budget_consumed"]["epochs"] > 0

    def test_exports_onnx(self, row: dict) -> None:
        assert Path(row["export"]["path"]).is_file()
        assert row["export"]["onnx_bytes"] > 0
        if not row["export"]["custom"]:
            assert row["export"]["parity"]["passed"], row["export"]["parity"]

    def test_reads_test_split_only_for_final_figures(self, row: dict) -> None:
        expected = 2 if row["export"]["custom"] else 1
        assert row["test_reads"] == expected

    def test_rejects_unknown_parameter(self, method_name: str, tmp_path: Path) -> None:
        table = tiny_suite_table([{"name": method_name, "params": {"no_such_parameter": 1}}])
        with pytest.raises(ConfigError, match="no_such_parameter"):
            parse_suite(table, tmp_path / "bad.toml")

    def test_rejects_wrong_parameter_type(self, method_name: str) -> None:
        method_cls = load_methods()[method_name]
        for field in dataclasses.fields(method_cls.Params):
            default = getattr(method_cls.Params(), field.name)
            if default is None:
                continue
            wrong = "not-a-number" if not isinstance(default, str) else 12345
            with pytest.raises(MethodError, match=field.name):
                parse_params(method_cls, {field.name: wrong}, "conformance")


@pytest.mark.parametrize("method_name", METHODS, scope="class")
class TestRegisteredMethods(MethodContract):
    """Every method found in the registry, built-in or plugin."""
