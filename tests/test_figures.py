"""Figures rendered from small hand-made results folders."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib
import pytest
from report_rows import make_row, shared_report

from benchmark.figures import FigureFile, render_task_figures, slug
from benchmark.report.summary import summarise_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

EXPECTED_KINDS = {
    "accuracy-vs-macs",
    "accuracy-vs-params",
    "accuracy-vs-latency",
    "filters-per-layer",
    "sweep-lam",
    "latency-threads",
    "search-pareto",
}


@pytest.fixture(scope="module")
def figure_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_report(tmp_path_factory) / "figures"


def test_figures_use_agg_backend(figure_dir: Path) -> None:
    assert matplotlib.get_backend().lower() == "agg"


def test_every_figure_kind_rendered(figure_dir: Path) -> None:
    kinds = {path.stem.removeprefix("lenet5-mnist-sample-") for path in figure_dir.glob("*.png")}
    assert kinds == EXPECTED_KINDS


@pytest.mark.parametrize("kind", sorted(EXPECTED_KINDS))
def test_figure_png_and_svg_nonempty(figure_dir: Path, kind: str) -> None:
    png = figure_dir / f"lenet5-mnist-sample-{kind}.png"
    svg = png.with_suffix(".svg")
    assert png.is_file()
    assert png.stat().st_size > 5_000
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert svg.is_file()
    assert svg.read_text(encoding="utf-8").lstrip().startswith("<?xml")


def test_render_returns_figure_files(tmp_path: Path) -> None:
    rows = [make_row("dense", seed, 0.98 - 0.001 * seed) for seed in (0, 1)]
    (report,) = summarise_rows(rows)
    figures = render_task_figures(report, tmp_path, formats=("png", "svg"))
    for figure in figures:
        assert isinstance(figure, FigureFile)
        assert figure.task == "lenet5-mnist-sample"
        assert set(figure.paths) == {"png", "svg"}
        assert figure.png == tmp_path / f"lenet5-mnist-sample-{figure.kind}.png"


def test_figures_skipped_without_data(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [make_row("dense", seed, 0.98 - 0.001 * seed) for seed in (0, 1)]
    (report,) = summarise_rows(rows)
    with caplog.at_level(logging.INFO, logger="benchmark.figures"):
        figures = render_task_figures(report, tmp_path, formats=("png",))
    assert {f.kind for f in figures} == {
        "accuracy-vs-macs",
        "accuracy-vs-params",
        "filters-per-layer",
    }
    for kind in ("accuracy-vs-latency", "sweep", "latency-threads", "search-pareto"):
        assert f"figure {kind} skipped" in caplog.text
    assert not list(tmp_path.glob("*.svg"))


def test_figures_survive_missing_fields(tmp_path: Path) -> None:
    rows = [make_row("dense", 0, 0.98), make_row("odd", 0, 0.97)]
    for row in rows:
        del row["metrics"]["filters"]
        del row["metrics"]["macs"]
        row["latency"] = {"local": {"status": "failed", "error": "no onnxruntime"}}
        row["diagnostics"] = {"pareto_front": [{"unrelated": 1}]}
    (report,) = summarise_rows(rows)
    figures = render_task_figures(report, tmp_path, formats=("png",))
    assert [f.kind for f in figures] == ["accuracy-vs-params"]


def test_figures_of_task_without_ok_rows(tmp_path: Path) -> None:
    (report,) = summarise_rows(
        [make_row("dense", 0, 0.0, status="failed", reason="DataError: missing")]
    )
    assert render_task_figures(report, tmp_path) == []


def test_slug_is_file_name_safe() -> None:
    assert slug("lenet5-mnist[classes=0,1]") == "lenet5-mnist-classes-0-1"
    assert slug("a/b c") == "a-b-c"
    assert slug("///") == "task"
