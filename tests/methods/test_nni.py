"""NNI pruner adapters: NNI masks, Torch-Pruning removes; unavailable without the extra."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from support import tiny_suite_table, write_cifar_folder

from benchmark.config import parse_suite
from benchmark.results import ResultStore
from benchmark.runner import SuiteRunner
from methods.nni_pruners import NNIL1Norm, NNIPruning, plan_from_masks
from methods.registry import load_methods

HAVE_NNI = importlib.util.find_spec("nni") is not None
needs_nni = pytest.mark.skipif(
    not HAVE_NNI, reason="NNI is not installed; pip install 'compressbench[nni]'"
)
NNI_METHODS = ("nni.l1", "nni.l2", "nni.fpgm", "nni.taylor", "nni.slim")


def run_suite(folder: Path, methods: list[dict], **options) -> dict[str, dict]:
    table = tiny_suite_table(methods, **options)
    SuiteRunner(parse_suite(table, folder / "suite.toml"), folder / "out").run()
    return {row["label"]: row for row in ResultStore(folder / "out").rows()}


def test_adapters_are_registered() -> None:
    registered = load_methods()
    for name in NNI_METHODS:
        assert issubclass(registered[name], NNIPruning), name
        assert registered[name].requires == ("nni",)


def test_plan_from_masks_reads_zero_rows() -> None:
    mask = torch.ones(4, 3, 3, 3)
    mask[[1, 3]] = 0
    masks = {"conv": {"weight": mask, "bias": None}, "bn": {"weight": torch.tensor([1.0, 0.0])}}
    plan = plan_from_masks(masks, {"conv": "conv", "bn": "conv2"})
    assert plan == {"conv": [1, 3], "conv2": [1]}


def test_missing_nni_lists_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(NNIL1Norm, "requires", ("nni_module_that_does_not_exist",))
    available, why = NNIL1Norm.available()
    assert not available
    assert "pip install 'compressbench[nni]'" in why

    rows = run_suite(tmp_path, [{"name": "dense"}, {"name": "nni.l1"}], train_limit=100)
    assert rows["dense"]["status"] == "ok"
    assert rows["nni.l1"]["status"] == "failed"
    assert "compressbench[nni]" in rows["nni.l1"]["reason"]


@needs_nni
def test_lenet_targets_met(tmp_path: Path) -> None:
    methods = [
        {"name": "nni.l1", "params": {"target_macs_ratio": 0.5}},
        {"name": "nni.taylor", "params": {"target_params_ratio": 0.4}},
        {"name": "nni.fpgm", "params": {"sparse_ratio": 0.3}},
    ]
    rows = run_suite(tmp_path, methods, epochs=2, finetune_epochs=1, train_limit=150)
    for label, row in rows.items():
        assert row["status"] == "ok", (label, row["reason"])
        assert row["export"]["parity"]["passed"], label
    for label in ("nni.l1(target_macs_ratio=0.5)", "nni.taylor(target_params_ratio=0.4)"):
        target = rows[label]["diagnostics"]["pruning"]["target"]
        assert target["met"], (label, target)
    fpgm = rows["nni.fpgm(sparse_ratio=0.3)"]["metrics"]["filters"]
    assert fpgm["features.0"] == 14  # 30% of 20 filters masked and removed


@needs_nni
@pytest.mark.slow
def test_vgg_slim_and_l2_remove_channels(tmp_path: Path) -> None:
    root = tmp_path / "cifar"
    write_cifar_folder(root, per_batch=16)
    task = {"name": "vgg16-cifar10", "data_dir": str(root), "model_options": {"width_mult": 0.25}}
    methods = [
        {"name": "nni.slim", "params": {"target_macs_ratio": 0.6}},
        {"name": "nni.l2", "params": {"sparse_ratio": 0.5, "prune_linear": False}},
    ]
    rows = run_suite(tmp_path, methods, epochs=2, finetune_epochs=1, tasks=[task])
    slim = rows["nni.slim(target_macs_ratio=0.6)"]
    assert slim["status"] == "ok", slim["reason"]
    assert slim["export"]["parity"]["passed"]
    assert slim["diagnostics"]["pruning"]["target"]["met"], slim["diagnostics"]["pruning"]["target"]
    l2 = rows["nni.l2(sparse_ratio=0.5, prune_linear=False)"]
    assert l2["status"] == "ok", l2["reason"]
    assert l2["metrics"]["filters"]["features.0"] == 8  # half of 16
    assert l2["metrics"]["filters"]["classifier.1"] == 128  # linear layers untouched
