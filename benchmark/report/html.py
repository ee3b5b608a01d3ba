"""One self-contained HTML page for a results folder: every table, every figure embedded.

Figures are embedded as base64 PNG data URIs and the style sheet is inline, so the page needs
no other file and no network: it can be mailed, attached to a CI run, or opened offline.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmark.figures import FigureFile, slug
from benchmark.report.summary import TaskReport
from benchmark.report.tables import (
    LATENCY_HEADERS,
    LATENCY_NOTE,
    display_cells,
    display_headers,
    latency_cells,
    latency_rows,
    metric_scale,
    report_notes,
)

__all__ = ["render_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 110rem; padding: 0 1rem;
       color: #222; }
h1 { margin-bottom: 0.2rem; }
nav a { margin-right: 1rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; }
td.text { text-align: left; }
tr.dense td { font-weight: 600; }
td.verdict-within-noise { background: #eef6ee; }
td.verdict-worse { background: #fbeaea; }
td.verdict-better { background: #e8f0fb; }
figure { margin: 1.5rem 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9rem; color: #555; }
.notes li { font-size: 0.9rem; }
.meta { color: #666; font-size: 0.85rem; }
"""

# Text columns of the main table, as indices into display_headers().
_TEXT_COLUMNS = {0, 1, 6, 11}


def render_html(
    reports: Sequence[TaskReport],
    figures: Mapping[str, Sequence[FigureFile]],
    title: str,
    environment: Mapping[str, Any] | None = None,
) -> str:
    """Return the page; ``figures`` maps a task to its figures, whose PNG files are embedded."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{html.escape(_meta_line(environment))}</p>',
    ]
    if len(reports) > 1:
        links = " ".join(f'<a href="#{_anchor(r.task)}">{html.escape(r.task)}</a>' for r in reports)
        parts.append(f"<nav>{links}</nav>")
    if not reports:
        parts.append("<p>This results folder contains no rows.</p>")
    for report in reports:
        parts.extend(_task_section(report, figures.get(report.task, [])))
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _meta_line(environment: Mapping[str, Any] | None) -> str:
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if not environment:
        return f"Generated {generated}."
    packages = environment.get("packages") or {}
    versions = ", ".join(f"{name} {version}" for name, version in sorted(packages.items()))
    return (
        f"Generated {generated}. Rows measured on {environment.get('cpu', 'unknown CPU')} "
        f"({environment.get('machine', '?')}, "
        f"{environment.get('torch_threads', '?')} torch threads), "
        f"commit {environment.get('git_commit') or 'unknown'}; {versions}."
    )


def _anchor(task: str) -> str:
    return f"task-{slug(task)}"


def _task_section(report: TaskReport, figures: Sequence[FigureFile]) -> list[str]:
    scale, unit = metric_scale(report)
    parts = [f'<section id="{_anchor(report.task)}">', f"<h2>{html.escape(report.task)}</h2>"]
    parts.append(
        '<ul class="notes">'
        + "".join(f"<li>{html.escape(n)}</li>" for n in report_notes(report, unit))
        + "</ul>"
    )

    if report.summaries:
        parts.append('<div class="scroll"><table class="summary">')
        parts.append(
            "<tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in display_headers(report))
            + "</tr>"
        )
        for s in report.summaries:
            cells = display_cells(s, scale)
            row_class = ' class="dense"' if s.is_dense else ""
            parts.append(
                f"<tr{row_class}>"
                + "".join(_cell(i, text) for i, text in enumerate(cells))
                + "</tr>"
            )
        parts.append("</table></div>")

    latency = latency_rows(report)
    if latency:
        parts += [
            "<h3>Latency</h3>",
            f"<p>{html.escape(LATENCY_NOTE)}</p>",
            '<div class="scroll"><table class="latency">',
        ]
        parts.append(
            "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in LATENCY_HEADERS) + "</tr>"
        )
        for row in latency:
            cells = latency_cells(row)
            parts.append(
                "<tr>" + "".join(_plain_cell(i < 3, text) for i, text in enumerate(cells)) + "</tr>"
            )
        parts.append("</table></div>")

    embedded = [figure for figure in figures if figure.png is not None and figure.png.is_file()]
    if embedded:
        parts.append("<h3>Figures</h3>")
        for figure in embedded:
            parts.append(_figure(figure))

    if report.failed:
        parts += [
            "<h3>Failed runs</h3>",
            '<table class="failed">',
            "<tr><th>method</th><th>seed</th><th>reason</th></tr>",
        ]
        for row in report.failed:
            reason = str(row.get("reason") or "no reason recorded")
            parts.append(
                f'<tr><td class="text">{html.escape(str(row.get("label")))}</td>'
                f"<td>{html.escape(str(row['identity']['seed']))}</td>"
                f'<td class="text">{html.escape(reason)}</td></tr>'
            )
        parts.append("</table>")
    parts.append("</section>")
    return parts


def _cell(index: int, text: str) -> str:
    classes = []
    if index in _TEXT_COLUMNS:
        classes.append("text")
    if index == 6 and text:
        classes.append("verdict-" + text.split(" (")[0].replace(" ", "-").replace("/", ""))
    attribute = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{attribute}>{html.escape(text)}</td>"


def _plain_cell(is_text: bool, text: str) -> str:
    return (
        f'<td class="text">{html.escape(text)}</td>' if is_text else f"<td>{html.escape(text)}</td>"
    )


def _figure(figure: FigureFile) -> str:
    data = base64.b64encode(Path(figure.png).read_bytes()).decode("ascii")
    title = html.escape(figure.title)
    return (
        f'<figure class="figure" data-kind="{html.escape(figure.kind)}">'
        f'<img src="data:image/png;base64,{data}" alt="{title}">'
        f"<figcaption>{title}</figcaption></figure>"
    )
