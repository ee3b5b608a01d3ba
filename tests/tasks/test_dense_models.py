"""Dense models: shapes, widths, filter removal through skips and concatenations, export, runs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark.config import parse_suite
from benchmark.errors import ConfigError
from benchmark.measure.complexity import count_complexity
from benchmark.measure.export import check_parity, export_onnx
from benchmark.runner import SuiteRunner
from benchmark.tasks.dense_models import DENSE_MODELS, SegEncoderDecoder
from benchmark.tasks.registry import TASKS, check_latency_budget
from methods.removal import final_layers, mask_filters, prunable_modules, remove_filters

TOLERANCE = 1e-5
SIZE = 32


def _build(name: str, **options) -> nn.Module:
    return DENSE_MODELS[name].factory(num_classes=5, in_channels=3, input_size=SIZE, **options)


def _randomise_batchnorms(model: nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial statistics, so a misplaced channel shows in the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.rand(size, generator=generator) * 2 - 1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(size, generator=generator) * 2 - 1)


def _plan(
    model: nn.Module, example: torch.Tensor, seed: int, coupled: bool
) -> dict[str, list[int]]:
    """Plan half of each layer's channels at random.

    With ``coupled``, layers of equal width share one plan, so the two branches of each
    hourglass addition plan the same channels and those channels can really go.
    """
    generator = torch.Generator().manual_seed(seed)
    excluded = final_layers(model, example)
    by_width: dict[int, list[int]] = {}
    plan = {}
    for name, module in prunable_modules(model).items():
        if name in excluded:
            continue
        channels = module.weight.shape[0]
        if not coupled or channels not in by_width:
            by_width[channels] = sorted(
                torch.randperm(channels, generator=generator)[: channels // 2].tolist()
            )
        plan[name] = by_width[channels]
    return plan


@pytest.mark.parametrize("name", sorted(DENSE_MODELS))
def test_forward_shapes(name: str) -> None:
    output = _build(name)(torch.zeros(2, 3, SIZE, SIZE))
    expected = (2, 10, SIZE // 8, SIZE // 8) if name == "griddet" else (2, 5, SIZE, SIZE)
    assert tuple(output.shape) == expected


@pytest.mark.parametrize("name", sorted(DENSE_MODELS))
def test_explicit_widths(name: str) -> None:
    widths = [max(1, w // 4) for w in DENSE_MODELS[name].default_widths]
    model = _build(name, widths=widths)
    filters = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sorted(set(filters[:-1])) == sorted(set(widths))
    model(torch.zeros(1, 3, SIZE, SIZE))


@pytest.mark.parametrize("name", sorted(DENSE_MODELS))
def test_width_mult_scales_macs(name: str) -> None:
    example = torch.zeros(1, 3, SIZE, SIZE)
    full = count_complexity(_build(name), example).macs
    half = count_complexity(_build(name, width_mult=0.5), example).macs
    assert 0.2 * full < half < 0.45 * full


@pytest.mark.parametrize("name", sorted(DENSE_MODELS))
def test_invalid_options_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match="widths has 2 entries"):
        _build(name, widths=[4, 4])
    with pytest.raises(ConfigError, match="multiple of"):
        DENSE_MODELS[name].factory(num_classes=5, in_channels=3, input_size=30)


def test_segnet_macs_by_hand() -> None:
    widths = (2, 3, 4, 5, 6, 7, 8)
    model = SegEncoderDecoder(num_classes=3, in_channels=1, input_size=16, widths=widths)
    counts = count_complexity(model, torch.zeros(1, 1, 16, 16))
    conv = (
        256 * 9 * 1 * 2  # enc1 at 16x16
        + 64 * 9 * 2 * 3  # enc2 at 8x8
        + 16 * 9 * 3 * 4  # enc3 at 4x4
        + 4 * 9 * 4 * 5  # bottleneck at 2x2
        + 16 * 9 * (5 + 4) * 6  # dec3 reads the upsampled bottleneck and enc3
        + 64 * 9 * (6 + 3) * 7  # dec2 reads the upsampled dec3 and enc2
        + 256 * 9 * (7 + 2) * 8  # dec1 reads the upsampled dec2 and enc1
        + 256 * 8 * 3  # 1x1 head
    )
    batchnorm = 256 * 2 + 64 * 3 + 16 * 4 + 4 * 5 + 16 * 6 + 64 * 7 + 256 * 8
    assert counts.macs == conv + batchnorm


@pytest.mark.parametrize("coupled", [False, True], ids=["independent", "coupled"])
@pytest.mark.parametrize("name", sorted(DENSE_MODELS))
def test_removal_preserves_outputs(name: str, coupled: bool) -> None:
    torch.manual_seed(0)
    model = _build(name).eval()
    _randomise_batchnorms(model, 1)
    example = torch.randn(4, 3, SIZE, SIZE)
    plan = _plan(model, example, seed=2, coupled=coupled)

    masked = mask_filters(copy.deepcopy(model), plan, example)
    with torch.no_grad():
        expected = masked(example)
    pruned, report = remove_filters(copy.deepcopy(model), example, plan)
    with torch.no_grad():
        actual = pruned(example)

    assert actual.shape == expected.shape
    assert float((actual - expected).abs().max()) <= TOLERANCE
    assert report.max_abs_diff <= TOLERANCE
    assert report.params_after < report.params_before
    if coupled:
        assert report.kept_coupled == {}
        for layer, indices in plan.items():
            assert report.filters_after[layer] == report.filters_before[layer] - len(indices)


def test_hourglass_independent_plans_keep_coupled_channels() -> None:
    model = _build("hourglass").eval()
    example = torch.randn(2, 3, SIZE, SIZE)
    _, report = remove_filters(
        copy.deepcopy(model), example, _plan(model, example, seed=3, coupled=False)
    )
    # Each addition's two branches planned different channels: only the common ones go.
    assert set(report.kept_coupled) == {
        f"{branch}.{i}.0" for branch in ("up", "skip") for i in range(3)
    }


@pytest.mark.parametrize("name", sorted(DENSE_MODELS))
def test_pruned_model_exports_with_parity(name: str, tmp_path: Path) -> None:
    model = _build(name).eval()
    _randomise_batchnorms(model, 4)
    example = torch.randn(2, 3, SIZE, SIZE)
    pruned, _ = remove_filters(model, example, _plan(model, example, seed=5, coupled=True))
    path = tmp_path / f"{name}.onnx"
    export_onnx(pruned, example[:1], path)
    assert check_parity(pruned, path, example, 1e-4).passed


# -- latency budget and an end-to-end run --------------------------------------------------


def _latency(p50_us_by_threads: dict[str, float]) -> dict:
    return {
        "local": {
            "status": "ok",
            "timing": "device",
            "threads": {t: {"p50_us": value} for t, value in p50_us_by_threads.items()},
        }
    }


def test_latency_budget_verdicts() -> None:
    met = check_latency_budget(_latency({"1": 40_000.0, "2": 25_000.0}), 33.3, "local")
    assert met["meets_latency_budget"] is True
    assert met["threads"] == "2"
    assert met["p50_ms"] == pytest.approx(25.0)
    missed = check_latency_budget(_latency({"1": 40_000.0}), 33.3, "local")
    assert missed["meets_latency_budget"] is False


def test_latency_budget_unknown_without_profile() -> None:
    assert check_latency_budget(None, 33.3, "local")["meets_latency_budget"] is None
    failed = {"local": {"status": "failed", "error": "no onnxruntime"}}
    assert check_latency_budget(failed, 33.3, "local")["meets_latency_budget"] is None
    assert check_latency_budget(_latency({"1": 1.0}), 33.3, "ssh")["meets_latency_budget"] is None


def test_face_parsing_task_declares_real_time() -> None:
    assert TASKS["hourglass-face-parsing"].latency_budget_ms == pytest.approx(33.3)


def test_detection_run_rows(tmp_path: Path) -> None:
    table = {
        "suite": {"name": "dense-tiny", "seeds": [0]},
        "budget": {"epochs": 1, "finetune_epochs": 0},
        "training": {
            "batch_size": 32,
            "optimizer": "adam",
            "lr": 0.003,
            "threads": 1,
            "progress": False,
        },
        "export": {"parity_samples": 4},
        "tasks": [
            {
                "name": "griddet-digit-scenes",
                "train_limit": 64,
                "classes": [3, 8],
                "model_options": {"width_mult": 0.25},
                "latency_budget_ms": 50.0,
            }
        ],
        "methods": [{"name": "dense"}],
        "profile": {
            "devices": ["local"],
            "threads": [1],
            "warmup_runs": 2,
            "warmup_seconds": 0.05,
            "min_queries": 10,
            "min_seconds": 0.1,
            "top_operators": 0,
        },
    }
    suite = parse_suite(table, tmp_path / "suite.toml")
    assert SuiteRunner(suite, tmp_path / "out").run()["ok"] == 1
    row = next(SuiteRunner(suite, tmp_path / "out").store.iter_rows())
    assert row["metrics"]["metric"] == "map50"
    assert 0.0 <= row["metrics"]["test_metric"] <= 1.0
    assert set(row["metrics"]["test_summary"]) >= {"map50_voc", "map50_coco", "map_coco"}
    assert row["export"]["parity"]["passed"]
    assert row["task_info"]["kind"] == "detection"
    assert row["task_info"]["num_classes"] == 2
    assert row["task_info"]["class_names"] == ["3", "8"]
    verdict = row["task_info"]["latency_budget"]
    assert verdict["budget_ms"] == 50.0
    assert verdict["device"] == "local"
    assert verdict["threads"] == "1"
    p50_ms = row["latency"]["local"]["threads"]["1"]["p50_us"] / 1000
    assert verdict["p50_ms"] == pytest.approx(p50_ms)
    assert verdict["meets_latency_budget"] is (p50_ms <= 50.0)
