"""Tables of a task report as Markdown, LaTeX and CSV.

Markdown and CSV carry every column, and LaTeX the main ones. The test metric is shown as
mean ± standard deviation with its 95% t-interval and the seed count. The difference from
dense carries its own interval and a verdict: ``within noise``, ``better``, ``worse``, or
``n/a`` for one seed.
Metrics that lie in [0, 1], such as accuracy, are printed in percent and their differences in
percentage points. CSV keeps full precision and no units beyond those named in its headers.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

from benchmark.report.latency import LatencySummary
from benchmark.report.summary import MethodSummary, TaskReport, search_fronts, task_label
from benchmark.stats import Estimate

__all__ = [
    "LATENCY_HEADERS",
    "LATENCY_NOTE",
    "SUMMARY_COLUMNS",
    "display_cells",
    "display_headers",
    "latency_cells",
    "report_notes",
    "latency_csv",
    "latency_rows",
    "metric_scale",
    "render_latex",
    "render_markdown",
    "runs_csv",
    "summary_csv",
    "summary_rows",
]

SUMMARY_COLUMNS = (
    "method",
    "family",
    "seeds",
    "n",
    "test_mean",
    "test_std",
    "test_ci_low",
    "test_ci_high",
    "val_mean",
    "delta_vs_dense",
    "delta_ci_low",
    "delta_ci_high",
    "delta_test",
    "verdict",
    "params",
    "params_reduction",
    "nonzero_params",
    "macs",
    "macs_reduction",
    "nonzero_macs",
    "filters",
    "onnx_bytes",
    "epochs",
    "tuning_trials",
    "latency_device",
    "latency_threads",
    "p50_us",
    "realised_speedup",
    "flags",
)

LATENCY_COLUMNS = (
    "method",
    "device",
    "timing",
    "threads",
    "n",
    "p50_us_mean",
    "p50_us_std",
    "p50_us_ci_low",
    "p50_us_ci_high",
    "realised_speedup",
    "realised_speedup_ci_low",
    "realised_speedup_ci_high",
    "theoretical_speedup",
    "attainable_speedup",
    "realised_over_theoretical",
    "realised_over_attainable",
    "floor_us",
    "roofline_bound_us",
    "roofline_core",
    "roofline_source",
)

RUN_COLUMNS = (
    "run_id",
    "task",
    "method",
    "label",
    "family",
    "seed",
    "status",
    "reason",
    "val_metric",
    "test_metric",
    "params",
    "nonzero_params",
    "macs",
    "nonzero_macs",
    "onnx_bytes",
    "parity_max_abs_diff",
    "epochs",
    "tuning_trials",
    "train_s",
    "total_s",
    "git_commit",
)


def metric_scale(report: TaskReport) -> tuple[float, str]:
    """Return (factor, unit) for printing the task's metric: (100, "%") for metrics in [0, 1]."""
    values = [v for s in report.summaries for v in s.test_by_seed.values()]
    if values and all(0.0 <= v <= 1.0 for v in values):
        return 100.0, "%"
    return 1.0, ""


def headline_latency(summary: MethodSummary) -> LatencySummary | None:
    """Return the latency of the main table: the first device, at its lowest thread count."""
    if not summary.latency:
        return None
    device = summary.latency[0].device
    return min(
        (entry for entry in summary.latency if entry.device == device), key=lambda e: e.threads
    )


def summary_rows(report: TaskReport) -> list[dict[str, Any]]:
    """Return the main table of a task as dicts keyed by :data:`SUMMARY_COLUMNS`, full precision."""
    rows = []
    for s in report.summaries:
        diff = s.versus_dense
        latency = headline_latency(s)
        rows.append(
            {
                "method": s.label,
                "family": s.family,
                "seeds": " ".join(map(str, s.seeds)),
                "n": s.n,
                "test_mean": s.test.mean,
                "test_std": _clean(s.test.std),
                "test_ci_low": _clean(s.test.ci_low),
                "test_ci_high": _clean(s.test.ci_high),
                "val_mean": s.val.mean if s.val else None,
                "delta_vs_dense": diff.delta if diff else None,
                "delta_ci_low": _clean(diff.ci_low) if diff else None,
                "delta_ci_high": _clean(diff.ci_high) if diff else None,
                "delta_test": diff.test if diff else None,
                "verdict": _verdict(s, default=None),
                "params": _mean(s.params_count),
                "params_reduction": s.params_reduction,
                "nonzero_params": _mean(s.nonzero_params),
                "macs": _mean(s.macs),
                "macs_reduction": s.macs_reduction,
                "nonzero_macs": _mean(s.nonzero_macs),
                "filters": filters_text(s.filters),
                "onnx_bytes": _mean(s.onnx_bytes),
                "epochs": s.epochs,
                "tuning_trials": s.tuning_trials,
                "latency_device": latency.device if latency else None,
                "latency_threads": latency.threads if latency else None,
                "p50_us": latency.p50_us.mean if latency else None,
                "realised_speedup": latency.realised_speedup.mean
                if latency and latency.realised_speedup
                else None,
                "flags": " ".join(f"{flag}x{count}" for flag, count in sorted(s.flags.items())),
            }
        )
    return rows


def latency_rows(report: TaskReport) -> list[dict[str, Any]]:
    """Return one dict per method, device and thread count, keyed by ``LATENCY_COLUMNS``."""
    rows = []
    for s in report.summaries:
        for entry in s.latency:
            realised = entry.realised_speedup
            rows.append(
                {
                    "method": s.label,
                    "device": entry.device,
                    "timing": "emulation" if entry.emulated else "device",
                    "threads": entry.threads,
                    "n": entry.p50_us.n,
                    "p50_us_mean": entry.p50_us.mean,
                    "p50_us_std": _clean(entry.p50_us.std),
                    "p50_us_ci_low": _clean(entry.p50_us.ci_low),
                    "p50_us_ci_high": _clean(entry.p50_us.ci_high),
                    "realised_speedup": realised.mean if realised else None,
                    "realised_speedup_ci_low": _clean(realised.ci_low) if realised else None,
                    "realised_speedup_ci_high": _clean(realised.ci_high) if realised else None,
                    "theoretical_speedup": entry.theoretical_speedup,
                    "attainable_speedup": entry.attainable_speedup,
                    "realised_over_theoretical": entry.realised_over_theoretical,
                    "realised_over_attainable": entry.realised_over_attainable,
                    "floor_us": entry.floor_us,
                    "roofline_bound_us": entry.bound_us,
                    "roofline_core": entry.bound_core,
                    "roofline_source": entry.bound_source,
                }
            )
    return rows


def filters_text(filters: Mapping[str, float]) -> str:
    """Per-layer filter counts joined with dashes, e.g. ``20-50-500-10``."""
    return "-".join(f"{v:g}" for v in filters.values())


def summary_csv(report: TaskReport) -> str:
    return _csv(SUMMARY_COLUMNS, summary_rows(report))


def latency_csv(report: TaskReport) -> str:
    return _csv(LATENCY_COLUMNS, latency_rows(report))


def runs_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """Return one CSV line per row, ok or failed, for analysis outside CompressBench."""
    lines = []
    for row in rows:
        identity = row.get("identity") or {}
        metrics = row.get("metrics") or {}
        export = row.get("export") or {}
        consumed = row.get("budget_consumed") or {}
        timings = row.get("timings") or {}
        lines.append(
            {
                "run_id": row.get("run_id"),
                "task": task_label(row),
                "method": identity.get("method"),
                "label": row.get("label"),
                "family": row.get("family"),
                "seed": identity.get("seed"),
                "status": row.get("status"),
                "reason": row.get("reason"),
                "val_metric": metrics.get("val_metric"),
                "test_metric": metrics.get("test_metric"),
                "params": metrics.get("params"),
                "nonzero_params": metrics.get("nonzero_params"),
                "macs": metrics.get("macs"),
                "nonzero_macs": metrics.get("nonzero_macs"),
                "onnx_bytes": export.get("onnx_bytes"),
                "parity_max_abs_diff": (export.get("parity") or {}).get("max_abs_diff"),
                "epochs": consumed.get("epochs"),
                "tuning_trials": consumed.get("tuning_trials"),
                "train_s": timings.get("train_s"),
                "total_s": timings.get("total_s"),
                "git_commit": (row.get("environment") or {}).get("git_commit"),
            }
        )
    return _csv(RUN_COLUMNS, lines)


def _csv(columns: Iterable[str], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return buffer.getvalue()


def render_markdown(report: TaskReport, figures: list[tuple[str, str]] | None = None) -> str:
    """Return the Markdown page of one task; ``figures`` are (title, relative path) pairs."""
    scale, unit = metric_scale(report)
    lines = [f"# {report.task}", "", *(f"- {note}" for note in report_notes(report, unit)), ""]

    headers = display_headers(report)
    lines += [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i in _TEXT_COLUMNS else "---:" for i in range(len(headers))) + "|",
    ]
    for s in report.summaries:
        cells = display_cells(s, scale)
        cells[0] = _markdown_cell(cells[0])
        lines.append("| " + " | ".join(cells) + " |")

    latency = latency_rows(report)
    if latency:
        lines += ["", "## Latency", "", LATENCY_NOTE, ""]
        lines.append("| " + " | ".join(LATENCY_HEADERS) + " |")
        lines.append("|---|---|---|" + "---:|" * (len(LATENCY_HEADERS) - 3))
        for row in latency:
            cells = latency_cells(row)
            cells[0] = _markdown_cell(cells[0])
            lines.append("| " + " | ".join(cells) + " |")
    lines += _markdown_search_fronts(report)
    if figures:
        lines += ["", "## Figures", ""]
        for title, path in figures:
            lines += [f"### {title}", "", f"![{title}]({path})", ""]
    if report.failed:
        lines += ["", "## Failed runs", "", "| method | seed | reason |", "|---|---:|---|"]
        for row in report.failed:
            reason = _markdown_cell(str(row.get("reason") or "no reason recorded"))
            label = _markdown_cell(str(row.get("label")))
            lines.append(f"| {label} | {row['identity']['seed']} | {reason} |")
    return "\n".join(lines).rstrip() + "\n"


def _markdown_search_fronts(report: TaskReport) -> list[str]:
    """Return a section with the Pareto front of each search row, cheapest point first."""
    fronts = [front for s in report.summaries for front in search_fronts(s)]
    if not fronts:
        return []
    lines = ["", "## Architecture search: Pareto fronts", ""]
    lines.append("The points on each search row's front, judged on the validation split.")
    axes = sorted({(front.cost_key, front.score_key) for front in fronts})
    for cost_key, score_key in axes:
        lines += [
            "",
            f"| method | seed | {cost_key} | {score_key} | selected |",
            "|---|---:|---:|---:|:---:|",
        ]
        for front in fronts:
            if (front.cost_key, front.score_key) != (cost_key, score_key):
                continue
            label = _markdown_cell(front.label)
            for cost, score in sorted(front.points):
                chosen = "yes" if front.selected == (cost, score) else ""
                cost_text = f"{cost:,.0f}" if abs(cost) >= 1000 else f"{cost:.4g}"
                lines.append(f"| {label} | {front.seed} | {cost_text} | {score:.4f} | {chosen} |")
    return lines


def report_notes(report: TaskReport, unit: str) -> list[str]:
    """Return the sentences that explain the table's statistics and budget, one per item."""
    points = "percentage points" if unit == "%" else "metric units"
    budget = report.budget or {}
    budget_text = ", ".join(f"{key} {value}" for key, value in budget.items()) or "not recorded"
    notes = [
        f"Test {report.metric}: mean ± sample standard deviation over n seeds, with the 95% "
        "t-interval of the mean (Student's t, n − 1 degrees of freedom).",
        f"Δ is the difference from dense in {points}, with its 95% interval: paired over common "
        "seeds when the method ran on dense's seeds, Welch's otherwise. \"within noise\" means "
        "that interval contains 0; one seed cannot judge noise (n/a).",
        "Reductions are dense ÷ method (mean over seeds). Filters are per layer, in model order, "
        "median over seeds. Speed-up is the paired median of dense ÷ method on the first device "
        "at its lowest thread count.",
        f"Budget: {budget_text}. Seeds: {', '.join(map(str, report.seeds)) or 'none'}.",
    ]
    if not any(s.latency for s in report.summaries):
        notes.append(
            "Speed-up is empty because no run was profiled: add a [profile] section to the suite "
            "(see docs/devices.md) to time each ONNX model."
        )
    elif not any(entry.realised_speedup for entry in map(headline_latency, report.summaries) if entry):
        notes.append("Speed-up is empty because dense was not profiled on the same device and threads.")
    return notes


# Text columns of :func:`display_headers`: method, family, verdict and filters.
_TEXT_COLUMNS = (0, 1, 6, 11)

LATENCY_NOTE = (
    "p50 in µs, mean ± standard deviation over seeds. Speed-ups are against dense: realised is "
    "the paired median per-query ratio, theoretical is the MAC ratio, attainable allows for "
    "the device's per-call floor. Emulated timings come from qemu and are not device timings."
)

LATENCY_HEADERS = (
    "method",
    "device",
    "timing",
    "threads",
    "p50 µs",
    "speed-up",
    "theoretical",
    "attainable",
    "realised ÷ theoretical",
    "realised ÷ attainable",
    "roofline bound µs",
)


def display_headers(report: TaskReport) -> list[str]:
    """Column headers of the main table as Markdown and HTML print it."""
    _, unit = metric_scale(report)
    return [
        "method",
        "family",
        "n",
        f"test {report.metric} ({unit or 'value'})",
        "95% CI",
        "Δ vs dense [95% CI]",
        "vs dense",
        "params",
        "params ↓",
        "MACs",
        "MACs ↓",
        "filters",
        "ONNX KiB",
        "speed-up",
        "epochs",
    ]


def display_cells(s: MethodSummary, scale: float) -> list[str]:
    """Format one summary as cells, in the order of :func:`display_headers`."""
    diff = s.versus_dense
    delta = ""
    if diff is not None:
        delta = f"{scale * diff.delta:+.2f}"
        if not math.isnan(diff.ci_low):
            delta += f" [{scale * diff.ci_low:+.2f}, {scale * diff.ci_high:+.2f}]"
    verdict = _verdict(s, default="no dense")
    latency = headline_latency(s)
    speedup = ""
    if latency and latency.realised_speedup:
        speedup = f"{latency.realised_speedup.mean:.2f}× ({latency.device}, {latency.threads}t)"
    return [
        s.label,
        s.family,
        str(s.n),
        _mean_std(s.test, scale),
        _interval(s.test, scale),
        delta,
        verdict,
        _count(s.params_count),
        _ratio(s.params_reduction),
        _count(s.macs),
        _ratio(s.macs_reduction),
        filters_text(s.filters),
        _kib(s.onnx_bytes),
        speedup,
        "" if s.epochs is None else f"{s.epochs:g}",
    ]


def latency_cells(row: Mapping[str, Any]) -> list[str]:
    """Format one row of :func:`latency_rows` as cells, in the order of ``LATENCY_HEADERS``."""
    p50 = f"{row['p50_us_mean']:.1f}"
    if row["p50_us_std"] is not None:
        p50 += f" ± {row['p50_us_std']:.1f}"
    bound = ""
    if row["roofline_bound_us"] is not None:
        source = "" if row["roofline_source"] == "device" else ", reference core"
        bound = f"{row['roofline_bound_us']:.2f} ({row['roofline_core']}{source})"
    return [
        str(row["method"]),
        str(row["device"]),
        str(row["timing"]),
        str(row["threads"]),
        p50,
        _ratio(row["realised_speedup"]),
        _ratio(row["theoretical_speedup"]),
        _ratio(row["attainable_speedup"]),
        _plain(row["realised_over_theoretical"]),
        _plain(row["realised_over_attainable"]),
        bound,
    ]


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_latex(report: TaskReport) -> str:
    """Return a booktabs ``table`` of the task's main columns; needs ``\\usepackage{booktabs}``."""
    scale, unit = metric_scale(report)
    unit_text = r"\%" if unit == "%" else ""
    lines = [
        "% Generated by compressbench report; needs \\usepackage{booktabs}.",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(report.task)}: test {latex_escape(report.metric)} "
        rf"({unit_text}), mean $\pm$ standard deviation over $n$ seeds with the 95\% $t$-interval. "
        r"$\Delta$ is against dense; "
        r"$^{\approx}$ marks a difference within noise (its 95\% interval contains 0).}",
        rf"\label{{tab:{_latex_label(report.task)}}}",
        r"\begin{tabular}{llrrrrrrr}",
        r"\toprule",
        r"Method & Family & $n$ & Test & 95\% CI & $\Delta$ & Params $\downarrow$ & "
        r"MACs $\downarrow$ & Filters \\",
        r"\midrule",
    ]
    for s in report.summaries:
        lines.append(_latex_row(s, scale))
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _latex_row(s: MethodSummary, scale: float) -> str:
    test = f"{scale * s.test.mean:.2f}"
    if s.test.has_spread:
        test += rf" $\pm$ {scale * s.test.std:.2f}"
    interval = (
        "--"
        if not s.test.has_spread
        else f"[{scale * s.test.ci_low:.2f}, {scale * s.test.ci_high:.2f}]"
    )
    delta = "--"
    if s.versus_dense is not None:
        delta = f"${scale * s.versus_dense.delta:+.2f}$"
        if s.versus_dense.within_noise:
            delta += r"$^{\approx}$"
    cells = [
        latex_escape(s.label),
        latex_escape(s.family),
        str(s.n),
        test,
        interval,
        delta,
        _latex_ratio(s.params_reduction),
        _latex_ratio(s.macs_reduction),
        latex_escape(filters_text(s.filters)),
    ]
    return " & ".join(cells) + r" \\"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Escape the characters that LaTeX treats as commands in running text."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in str(text))


def _latex_label(text: str) -> str:
    return "".join(char if char.isalnum() or char in "-:" else "-" for char in text)


def _latex_ratio(value: float | None) -> str:
    return "--" if value is None else rf"{value:.2f}$\times$"


def _verdict(summary: MethodSummary, default: str | None) -> str | None:
    """Return the verdict against dense, ``reference`` for dense itself, else ``default``."""
    if summary.versus_dense is not None:
        return summary.versus_dense.verdict
    if summary.is_dense:
        return "reference"
    return default


def _clean(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _mean(estimate: Estimate | None) -> float | None:
    return estimate.mean if estimate else None


def _mean_std(estimate: Estimate, scale: float) -> str:
    text = f"{scale * estimate.mean:.2f}"
    return text + (f" ± {scale * estimate.std:.2f}" if estimate.has_spread else "")


def _interval(estimate: Estimate, scale: float) -> str:
    if not estimate.has_spread:
        return "n/a"
    return f"[{scale * estimate.ci_low:.2f}, {scale * estimate.ci_high:.2f}]"


def _count(estimate: Estimate | None) -> str:
    return "" if estimate is None else f"{estimate.mean:,.0f}"


def _kib(estimate: Estimate | None) -> str:
    return "" if estimate is None else f"{estimate.mean / 1024:,.1f}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}×"


def _plain(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"
