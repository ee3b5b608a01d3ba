"""Reports from a hand-made results folder: summaries, sweeps, tables and results/README.md."""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

import pytest
from report_rows import BUDGET, latency_document, make_row, sample_rows, shared_report, write_rows

from benchmark.cli import main
from benchmark.errors import ConfigError, ResultsError
from benchmark.report import write_all, write_report
from benchmark.report.summary import find_sweeps, flat_params, search_fronts, summarise_rows
from benchmark.report.tables import render_latex, summary_csv

TASK = "lenet5-mnist-sample"


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_report(tmp_path_factory)


def _csv_rows(text: str) -> dict[str, dict[str, str]]:
    return {row["method"]: row for row in csv.DictReader(io.StringIO(text))}


def test_report_writes_every_format(report_dir: Path) -> None:
    for name in (
        f"{TASK}.md",
        f"{TASK}.csv",
        f"{TASK}-latency.csv",
        f"{TASK}.tex",
        "runs.csv",
        "index.md",
        "report.html",
    ):
        assert (report_dir / name).is_file(), name
        assert (report_dir / name).stat().st_size > 0, name
    assert len(list((report_dir / "figures").glob("*.png"))) == 7
    assert len(list((report_dir / "figures").glob("*.svg"))) == 7


def test_summary_csv_statistics(report_dir: Path) -> None:
    rows = _csv_rows((report_dir / f"{TASK}.csv").read_text(encoding="utf-8"))
    dense = rows["dense"]
    assert dense["n"] == "3"
    assert dense["seeds"] == "0 1 2"
    assert float(dense["test_mean"]) == pytest.approx(statistics.fmean([0.981, 0.978, 0.983]))
    assert float(dense["test_std"]) == pytest.approx(statistics.stdev([0.981, 0.978, 0.983]))
    assert dense["verdict"] == "reference"
    assert dense["delta_vs_dense"] == ""

    assert rows["magnitude"]["verdict"] == "worse"
    assert float(rows["magnitude"]["macs_reduction"]) == pytest.approx(2_293_000 / 600_000)
    assert rows["magnitude"]["filters"] == "8-20-500-10"
    assert rows["int8.static"]["verdict"] == "within noise"
    assert rows["int8.static"]["delta_test"] == "paired"
    assert rows["nas"]["verdict"] == "n/a (1 seed)"
    assert rows["nas"]["test_ci_low"] == ""
    assert float(rows["magnitude"]["realised_speedup"]) == pytest.approx(2.6)
    assert rows["magnitude"]["latency_device"] == "local"
    assert rows["magnitude"]["latency_threads"] == "1"


def test_latency_csv_per_device_and_threads(report_dir: Path) -> None:
    lines = list(
        csv.DictReader(
            io.StringIO((report_dir / f"{TASK}-latency.csv").read_text(encoding="utf-8"))
        )
    )
    keys = {(line["method"], line["device"], line["threads"]) for line in lines}
    assert ("magnitude", "local", "4") in keys
    assert ("dense", "qemu-aarch64", "1") in keys
    qemu = next(line for line in lines if line["device"] == "qemu-aarch64")
    assert qemu["timing"] == "emulation"
    assert qemu["roofline_source"] == "device"
    local = next(line for line in lines if line["method"] == "magnitude" and line["threads"] == "1")
    assert local["roofline_source"] == "reference"
    assert local["roofline_core"] == "cortex-a72"
    assert float(local["realised_over_theoretical"]) == pytest.approx(2.6 / (2_293_000 / 600_000))


def test_markdown_has_statistics_figures_and_failures(report_dir: Path) -> None:
    text = (report_dir / f"{TASK}.md").read_text(encoding="utf-8")
    assert "| method | family | n | test accuracy (%) | 95% CI |" in text
    assert "within noise" in text
    assert "98.07 ± 0.25" in text
    assert "![Filters per layer](figures/lenet5-mnist-sample-filters-per-layer.png)" in text
    assert "## Latency" in text
    assert "## Failed runs" in text
    assert "MethodError: lam must be > 0" in text
    index = (report_dir / "index.md").read_text(encoding="utf-8")
    assert f"[{TASK}]({TASK}.md)" in index


def test_latex_table_escapes_and_marks_noise(report_dir: Path) -> None:
    text = (report_dir / f"{TASK}.tex").read_text(encoding="utf-8")
    assert r"\begin{tabular}" in text
    assert r"\toprule" in text and r"\bottomrule" in text
    int8 = next(line for line in text.splitlines() if line.startswith("int8.static"))
    assert r"$^{\approx}$" in int8
    magnitude = next(line for line in text.splitlines() if line.startswith("magnitude"))
    assert r"\approx" not in magnitude
    (report,) = summarise_rows([make_row("a_b&c%", 0, 0.5), make_row("dense", 0, 0.6)])
    assert r"a\_b\&c\%" in render_latex(report)


def test_runs_csv_has_failed_rows(report_dir: Path) -> None:
    lines = list(csv.DictReader(io.StringIO((report_dir / "runs.csv").read_text(encoding="utf-8"))))
    assert len(lines) == len(sample_rows())
    failed = [line for line in lines if line["status"] == "failed"]
    assert [line["method"] for line in failed] == ["broken"]


def test_sweep_detection_one_parameter() -> None:
    (report,) = summarise_rows(sample_rows())
    sweeps = find_sweeps(report.summaries)
    assert len(sweeps) == 1
    sweep = sweeps[0]
    assert (sweep.method, sweep.parameter) == ("l1l2.across", "lam")
    assert sweep.values == [1e-4, 1e-3, 1e-2]
    assert sweep.fixed == {"tau": 0.01}


def test_sweep_detection_grid_gives_one_sweep_per_fixed_value() -> None:
    rows = [
        make_row(
            "l1", 0, 0.9, params={"lam": lam, "tau": tau, "mode": "conv"}, label=f"l1({lam},{tau})"
        )
        for lam in (0.1, 0.2)
        for tau in (0.01, 0.02, 0.03)
    ]
    (report,) = summarise_rows(rows)
    sweeps = find_sweeps(report.summaries)
    over_lam = [s for s in sweeps if s.parameter == "lam"]
    over_tau = [s for s in sweeps if s.parameter == "tau"]
    assert len(over_lam) == 3
    assert len(over_tau) == 2
    assert sorted(s.name for s in over_tau) == ["l1(lam=0.1)", "l1(lam=0.2)"]


def test_sweep_detection_ignores_booleans_and_strings() -> None:
    rows = [
        make_row("m", 0, 0.9, params={"flag": flag, "kind": kind}, label=f"m({flag},{kind})")
        for flag in (True, False)
        for kind in ("a", "b")
    ]
    (report,) = summarise_rows(rows)
    assert find_sweeps(report.summaries) == []


def test_flat_params_of_pipeline() -> None:
    assert flat_params({"l1": {"lam": 0.1}}) == {"lam": 0.1}
    assert flat_params({"l1": {"lam": 0.1}, "int8": {"bits": 8}}) == {"l1.lam": 0.1, "int8.bits": 8}
    assert flat_params(None) == {}


def test_rows_of_two_budgets_are_not_pooled() -> None:
    rows = [make_row("dense", 0, 0.98), make_row("dense", 1, 0.97)]
    rows[1]["identity"]["budget"] = {**BUDGET, "epochs": 30}
    reports = summarise_rows(rows)
    assert len(reports) == 2
    assert all(len(report.summaries[0].seeds) == 1 for report in reports)
    assert all("epochs=" in report.task for report in reports)


def test_report_without_dense_and_without_optional_fields(tmp_path: Path) -> None:
    row = make_row("magnitude", 0, 0.9)
    for key in ("export", "budget_consumed", "latency", "diagnostics"):
        del row[key]
    del row["metrics"]["filters"]
    write_rows(tmp_path, [row])
    paths = write_report(tmp_path, formats=("md", "csv", "tex", "html"))
    assert {path.name for path in paths} >= {f"{TASK}.md", f"{TASK}.csv", "report.html"}
    table = _csv_rows((tmp_path / "report" / f"{TASK}.csv").read_text(encoding="utf-8"))
    assert table["magnitude"]["verdict"] == ""
    text = (tmp_path / "report" / f"{TASK}.md").read_text(encoding="utf-8")
    assert "no dense" in text
    assert "no run was profiled: add a [profile] section" in text


def test_speedup_note_names_what_is_missing(tmp_path: Path, report_dir: Path) -> None:
    assert "Speed-up is empty" not in (report_dir / f"{TASK}.md").read_text(encoding="utf-8")
    # Only the compressed method was profiled, so it has a latency but no paired speed-up.
    profiled = make_row("magnitude", 0, 0.9, latency={"local": latency_document(95.0, None, 600_000)})
    write_rows(tmp_path, [make_row("dense", 0, 0.95, latency=None), profiled])
    write_report(tmp_path, formats=("md",))
    text = (tmp_path / "report" / f"{TASK}.md").read_text(encoding="utf-8")
    assert "dense was not profiled on the same device and threads" in text


def test_report_rejects_unknown_format(tmp_path: Path) -> None:
    write_rows(tmp_path, [make_row("dense", 0, 0.9)])
    with pytest.raises(ConfigError, match="unknown report format"):
        write_report(tmp_path, formats=("md", "pdf"))


def test_summary_csv_of_empty_task_has_header() -> None:
    (report,) = summarise_rows([make_row("dense", 0, 0.0, status="failed", reason="boom")])
    assert summary_csv(report).splitlines()[0].startswith("method,family,seeds,n,")


def test_write_all_writes_results_readme(tmp_path: Path) -> None:
    write_rows(tmp_path / "default")
    write_rows(tmp_path / "fashion", [make_row("dense", s, 0.90 + 0.001 * s) for s in (0, 1, 2)])
    (tmp_path / "notes").mkdir()
    paths = write_all(tmp_path, formats=("md", "csv"))
    readme = tmp_path / "README.md"
    assert readme in paths
    text = readme.read_text(encoding="utf-8")
    assert "compressbench report --all results/" in text
    assert "## default" in text and "## fashion" in text
    assert "## notes" not in text
    assert "[default/report/index.md](default/report/index.md)" in text
    assert "| magnitude | pruning | 3 |" in text
    assert "within noise" in text
    assert "Largest MAC reduction" in text
    assert (tmp_path / "default" / "report" / f"{TASK}.md").is_file()
    assert (tmp_path / "fashion" / "report" / f"{TASK}.csv").is_file()


def test_write_all_without_results_folders(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no results folder"):
        write_all(tmp_path)


def test_cli_report_one_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_rows(tmp_path / "suite", [make_row("dense", s, 0.98) for s in (0, 1)])
    assert main(["report", str(tmp_path / "suite"), "--format", "md", "--format", "csv"]) == 0
    printed = capsys.readouterr().out
    assert f"{TASK}.md" in printed
    assert not (tmp_path / "suite" / "report" / "report.html").exists()


def test_cli_report_all(tmp_path: Path) -> None:
    write_rows(tmp_path / "default", [make_row("dense", s, 0.98) for s in (0, 1)])
    assert main(["report", "--all", str(tmp_path), "--format", "md", "--figure-format", "png"]) == 0
    assert (tmp_path / "README.md").is_file()


def test_cli_report_all_rejects_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_rows(tmp_path / "default", [make_row("dense", 0, 0.98)])
    assert main(["report", "--all", str(tmp_path), "--output", str(tmp_path / "x")]) == 2
    assert "--output" in capsys.readouterr().err


def test_search_front_nested_layout() -> None:
    (report,) = summarise_rows(sample_rows())
    nas = next(s for s in report.summaries if s.label == "nas")
    (front,) = search_fronts(nas)
    assert front.seed == 0
    assert front.cost_key == "cost (MACs)"
    assert front.score_key == "val_metric"
    assert front.points == [(300_000, 0.95), (800_000, 0.97), (1_900_000, 0.98)]
    assert len(front.trials) == 5
    assert front.selected == (800_000, 0.97)


def test_search_front_flat_values_layout() -> None:
    front = [{"values": [0.9, 120.0]}, {"values": [0.95, 300.0]}, {"other": 1}]
    row = make_row("nas", 0, 0.9, family="search", diagnostics={"pareto": front})
    (report,) = summarise_rows([row])
    (found,) = search_fronts(report.summaries[0])
    assert (found.cost_key, found.score_key) == ("values[1]", "values[0]")
    assert found.points == [(120.0, 0.9), (300.0, 0.95)]
    assert found.trials == []
    assert found.selected is None


def test_search_front_absent_or_unreadable() -> None:
    rows = [
        make_row("a", 0, 0.9, diagnostics={"pareto_table": "| trial |"}),
        make_row("b", 0, 0.9, diagnostics={"search": {"pareto_front": [{"unrelated": 1}]}}),
    ]
    (report,) = summarise_rows(rows)
    for summary in report.summaries:
        assert search_fronts(summary) == []


def test_markdown_lists_search_front(report_dir: Path) -> None:
    text = (report_dir / f"{TASK}.md").read_text(encoding="utf-8")
    assert "## Architecture search: Pareto fronts" in text
    assert "| method | seed | cost (MACs) | val_metric | selected |" in text
    assert "| nas | 0 | 800,000 | 0.9700 | yes |" in text
