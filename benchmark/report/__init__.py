"""Reports from result rows: tables, figures and one HTML page per results folder.

Reports only read rows; they never train or measure. For a results folder ``RESULTS``,
:func:`write_report` writes into ``RESULTS/report`` (or another folder)::

    index.md               links to every task page and to report.html
    TASK.md                the task's table with statistics, latency table and figures
    TASK.csv               the same table at full precision
    TASK-latency.csv       p50 and speed-ups per method, device and thread count
    TASK.tex               a booktabs LaTeX table
    runs.csv               one line per row, ok or failed
    report.html            everything above on one self-contained page, figures embedded
    figures/TASK-KIND.png  and .svg: see :mod:`benchmark.figures`

:func:`write_all` does this for every results folder under a root such as ``results/`` and
writes the root's ``README.md``, which compares each method with dense.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from benchmark.errors import ConfigError, ResultsError
from benchmark.measure.roofline import core_spec
from benchmark.report.summary import MethodSummary, TaskReport, summarise_rows
from benchmark.results import ResultStore

__all__ = [
    "FORMATS",
    "MethodSummary",
    "TaskReport",
    "summarise_rows",
    "write_all",
    "write_report",
]

logger = logging.getLogger(__name__)

# Output formats that write_report() can produce; "figures" are PNG and SVG files.
FORMATS = ("md", "csv", "tex", "html", "figures")
# Arm core whose roofline bound is drawn beside devices that name no core of their own.
DEFAULT_REFERENCE_CORE = "cortex-a72"
REGENERATE_COMMAND = "compressbench report --all results/"


def write_report(
    results_dir: Path,
    output_dir: Path | None = None,
    *,
    formats: Iterable[str] = FORMATS,
    figure_formats: Sequence[str] = ("png", "svg"),
    reference_core: str | None = DEFAULT_REFERENCE_CORE,
) -> list[Path]:
    """Write the report of one results folder and return the paths written.

    ``output_dir`` defaults to ``results_dir/report``. ``formats`` is a subset of
    :data:`FORMATS`. Old PNG and SVG files in ``output_dir/figures`` are deleted first, so a
    figure whose data went away does not linger. Raises :class:`ConfigError` for an unknown
    format and :class:`ResultsError` for unreadable rows.
    """
    written, _, _ = _report_folder(
        Path(results_dir), output_dir, _check_formats(formats), figure_formats, reference_core
    )
    return written


def _report_folder(
    results_dir: Path,
    output_dir: Path | None,
    formats: set[str],
    figure_formats: Sequence[str],
    reference_core: str | None,
) -> tuple[list[Path], list[TaskReport], list[dict]]:
    """Write one folder's report; return the paths, the task reports and the rows."""
    if reference_core is not None:
        core_spec(reference_core)  # raises ConfigError, naming the known cores, before any work
    rows = ResultStore(results_dir).rows()
    output_dir = Path(output_dir) if output_dir else results_dir / "report"
    output_dir.mkdir(parents=True, exist_ok=True)
    reports = summarise_rows(rows, reference_core=reference_core)

    figures = (
        _draw_figures(reports, output_dir / "figures", figure_formats)
        if "figures" in formats
        else {}
    )
    written = [
        path
        for task_figures in figures.values()
        for figure in task_figures
        for path in figure.paths.values()
    ]
    written += _write_tables(reports, rows, output_dir, formats, figures)
    if "html" in formats:
        from benchmark.report.html import render_html

        page = output_dir / "report.html"
        page.write_text(
            render_html(reports, figures, _title(results_dir, rows), _environment(rows)),
            encoding="utf-8",
        )
        written.append(page)
    logger.info("wrote %d report files for %d tasks to %s", len(written), len(reports), output_dir)
    return written, reports, rows


def _environment(rows: list[dict]) -> dict | None:
    return next((row.get("environment") for row in rows if row.get("environment")), None)


def _check_formats(formats: Iterable[str]) -> set[str]:
    chosen = set(formats)
    unknown = sorted(chosen - set(FORMATS))
    if unknown:
        raise ConfigError(f"unknown report format(s) {unknown}; expected some of {list(FORMATS)}")
    return chosen


def _title(results_dir: Path, rows: list[dict]) -> str:
    suite = (
        next((row.get("suite") for row in rows if row.get("suite")), None) or Path(results_dir).name
    )
    return f"CompressBench results: {suite}"


def _draw_figures(
    reports: list[TaskReport], figure_dir: Path, figure_formats: Sequence[str]
) -> dict:
    from benchmark.figures import render_task_figures

    figure_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*figure_dir.glob("*.png"), *figure_dir.glob("*.svg")]:
        stale.unlink()
    return {
        report.task: render_task_figures(report, figure_dir, figure_formats) for report in reports
    }


def _write_tables(
    reports: list[TaskReport], rows: list[dict], output_dir: Path, formats: set[str], figures: dict
) -> list[Path]:
    from benchmark.figures import slug
    from benchmark.report import tables

    written = []
    for report in reports:
        name = slug(report.task)
        if "md" in formats:
            links = [
                (f.title, f"figures/{f.png.name}") for f in figures.get(report.task, []) if f.png
            ]
            written.append(_write(output_dir / f"{name}.md", tables.render_markdown(report, links)))
        if "csv" in formats:
            written.append(_write(output_dir / f"{name}.csv", tables.summary_csv(report)))
            if tables.latency_rows(report):
                written.append(
                    _write(output_dir / f"{name}-latency.csv", tables.latency_csv(report))
                )
        if "tex" in formats:
            written.append(_write(output_dir / f"{name}.tex", tables.render_latex(report)))
    if "csv" in formats:
        written.append(_write(output_dir / "runs.csv", tables.runs_csv(rows)))
    if "md" in formats:
        written.append(_write(output_dir / "index.md", _index_markdown(reports, formats)))
    return written


def _index_markdown(reports: list[TaskReport], formats: set[str]) -> str:
    from benchmark.figures import slug

    lines = ["# Report", ""]
    if "html" in formats:
        lines += ["All tables and figures on one page: [report.html](report.html).", ""]
    if not reports:
        lines.append("This results folder contains no rows.")
    for report in reports:
        ok = sum(s.n for s in report.summaries)
        lines.append(
            f"- [{report.task}]({slug(report.task)}.md): {len(report.summaries)} methods, "
            f"{ok} ok runs, {len(report.failed)} failed"
        )
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_all(
    root: Path,
    *,
    formats: Iterable[str] = FORMATS,
    figure_formats: Sequence[str] = ("png", "svg"),
    reference_core: str | None = DEFAULT_REFERENCE_CORE,
) -> list[Path]:
    """Report every results folder directly under ``root`` and write ``root/README.md``.

    A results folder is a folder with a ``rows/`` folder; each gets its report in its own
    ``report/`` folder. Raises :class:`ResultsError` when ``root`` contains no results folder.
    """
    from benchmark.report.index import ResultsFolder, render_results_index

    root = Path(root)
    folders = (
        sorted(path for path in root.iterdir() if (path / "rows").is_dir()) if root.is_dir() else []
    )
    if not folders:
        raise ResultsError(
            f"no results folder (a folder with rows/) found in {root}; "
            "run a suite with 'compressbench run'"
        )

    chosen = _check_formats(formats)
    written, entries = [], []
    for folder in folders:
        paths, reports, rows = _report_folder(folder, None, chosen, figure_formats, reference_core)
        written += paths
        entries.append(ResultsFolder(folder, reports, folder / "report", _environment(rows)))

    readme = root / "README.md"
    readme.write_text(render_results_index(root, entries, REGENERATE_COMMAND), encoding="utf-8")
    written.append(readme)
    logger.info("wrote the summary of %d results folders to %s", len(entries), readme)
    return written
