"""Comparison tables from result rows: one Markdown and one CSV table per task.

Reports only read rows; they never train or measure.
"""

from __future__ import annotations

import csv
import io
import logging
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.results import STATUS_OK, ResultStore

__all__ = ["MethodSummary", "summarise", "write_report"]

logger = logging.getLogger(__name__)

COLUMNS = (
    "method", "family", "seeds", "test_metric_mean", "test_metric_std", "delta_vs_dense",
    "params", "params_reduction", "macs", "macs_reduction", "filters", "onnx_bytes",
    "epochs_consumed",
)


@dataclass
class MethodSummary:
    """One method label on one task, aggregated over its seeds."""

    task: str
    label: str
    family: str
    seeds: list[int]
    test_metrics: list[float]
    params: float
    macs: float
    filters: str
    onnx_bytes: float
    epochs: float
    metric: str

    @property
    def mean(self) -> float:
        return statistics.fmean(self.test_metrics)

    @property
    def std(self) -> float:
        return statistics.stdev(self.test_metrics) if len(self.test_metrics) > 1 else 0.0


def summarise(rows: Iterable[dict[str, Any]]) -> dict[str, list[MethodSummary]]:
    """Group ok rows by task and method label; return summaries per task, dense first."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["status"] == STATUS_OK:
            groups[(_task_label(row), row["label"])].append(row)

    by_task: dict[str, list[MethodSummary]] = defaultdict(list)
    for (task, label), members in groups.items():
        metrics = [m["metrics"] for m in members]
        by_task[task].append(
            MethodSummary(
                task=task,
                label=label,
                family=members[0].get("family", ""),
                seeds=sorted(m["identity"]["seed"] for m in members),
                test_metrics=[x["test_metric"] for x in metrics],
                params=statistics.fmean(x["params"] for x in metrics),
                macs=statistics.fmean(x["macs"] for x in metrics),
                filters=_filters_text(metrics),
                onnx_bytes=statistics.fmean(m["export"]["onnx_bytes"] for m in members),
                epochs=statistics.fmean(m["budget_consumed"]["epochs"] for m in members),
                metric=metrics[0].get("metric", "accuracy"),
            )
        )
    for summaries in by_task.values():
        summaries.sort(key=lambda s: (s.label != "dense", s.family, s.label))
    return dict(by_task)


def _task_label(row: dict[str, Any]) -> str:
    task = row["identity"]["task"]
    if task.get("classes"):
        return f"{task['name']}[classes={','.join(map(str, task['classes']))}]"
    return task["name"]


def _filters_text(metrics: list[dict[str, Any]]) -> str:
    """Per-layer filter counts, as the median over seeds, joined with dashes."""
    layers = list(metrics[0]["filters"])
    medians = [statistics.median(m["filters"].get(layer, 0) for m in metrics) for layer in layers]
    return "-".join(f"{v:g}" for v in medians)


def table_rows(summaries: list[MethodSummary]) -> list[dict[str, Any]]:
    """Return the table of one task as dicts keyed by :data:`COLUMNS`."""
    dense = next((s for s in summaries if s.label == "dense"), None)
    rows = []
    for s in summaries:
        rows.append({
            "method": s.label,
            "family": s.family,
            "seeds": len(s.seeds),
            "test_metric_mean": s.mean,
            "test_metric_std": s.std,
            "delta_vs_dense": s.mean - dense.mean if dense else None,
            "params": s.params,
            "params_reduction": dense.params / s.params if dense and s.params else None,
            "macs": s.macs,
            "macs_reduction": dense.macs / s.macs if dense and s.macs else None,
            "filters": s.filters,
            "onnx_bytes": s.onnx_bytes,
            "epochs_consumed": s.epochs,
        })
    return rows


def render_markdown(task: str, summaries: list[MethodSummary], failed: list[dict[str, Any]]) -> str:
    metric = summaries[0].metric if summaries else "accuracy"
    lines = [
        f"# {task}",
        "",
        f"Test {metric} in percent, mean ± standard deviation over seeds. Δ is against dense.",
        "Reductions are dense ÷ method. Filters are per layer, in model order (median over seeds).",
        "",
        f"| method | family | seeds | test {metric} | Δ | params | params ↓ | MACs | MACs ↓ | filters | ONNX bytes | epochs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in table_rows(summaries):
        delta = "" if row["delta_vs_dense"] is None else f"{100 * row['delta_vs_dense']:+.2f}"
        lines.append(
            f"| {row['method']} | {row['family']} | {row['seeds']} | "
            f"{100 * row['test_metric_mean']:.2f} ± {100 * row['test_metric_std']:.2f} | {delta} | "
            f"{row['params']:,.0f} | {_ratio(row['params_reduction'])} | {row['macs']:,.0f} | "
            f"{_ratio(row['macs_reduction'])} | {row['filters']} | {row['onnx_bytes']:,.0f} | "
            f"{row['epochs_consumed']:g} |"
        )
    if failed:
        lines += ["", "## Failed runs", "", "| method | seed | reason |", "|---|---:|---|"]
        for row in failed:
            reason = str(row.get("reason", "")).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {row['label']} | {row['identity']['seed']} | {reason} |")
    return "\n".join(lines) + "\n"


def render_csv(summaries: list[MethodSummary]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in table_rows(summaries):
        writer.writerow(row)
    return buffer.getvalue()


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}×"


def write_report(results_dir: Path, output_dir: Path | None = None) -> list[Path]:
    """Write ``<task>.md`` and ``<task>.csv`` for every task with rows; return the paths."""
    store = ResultStore(results_dir)
    rows = store.rows()
    output_dir = Path(output_dir) if output_dir else Path(results_dir) / "report"
    output_dir.mkdir(parents=True, exist_ok=True)

    failed_by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["status"] != STATUS_OK:
            failed_by_task[_task_label(row)].append(row)

    written = []
    summaries = summarise(rows)
    for task in sorted(set(summaries) | set(failed_by_task)):
        safe = task.replace("/", "_").replace("[", "_").replace("]", "").replace(",", "-").replace("=", "-")
        markdown = output_dir / f"{safe}.md"
        markdown.write_text(render_markdown(task, summaries.get(task, []), failed_by_task.get(task, [])), encoding="utf-8")
        table = output_dir / f"{safe}.csv"
        table.write_text(render_csv(summaries.get(task, [])), encoding="utf-8")
        written += [markdown, table]
    logger.info("wrote %d report files to %s", len(written), output_dir)
    return written
