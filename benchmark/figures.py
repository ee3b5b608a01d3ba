"""Figures of a task report, drawn with seaborn and matplotlib and saved as PNG and SVG.

Each figure function takes a :class:`~benchmark.report.summary.TaskReport` and returns the
figures it wrote. A figure whose data is absent (no latency was measured, no method swept a
parameter, no search stored a front) is skipped with a log line, never an error.

Figures, per task:

- ``accuracy-vs-macs``, ``accuracy-vs-params``, ``accuracy-vs-latency``: the test metric of
  each method against its cost on a log axis, with 95% t-interval error bars. Dense's
  interval is a grey band and the Pareto front a step line. A top axis gives the compression
  factor (dense ÷ method). The latency plot has one panel per device, at its lowest thread
  count.
- ``filters-per-layer``: a heatmap of the filters each method keeps per layer (median over
  seeds), coloured by the fraction of dense's filters.
- ``sweep-PARAM``: for methods that ran several values of one numeric parameter (a λ sweep),
  the test metric and the fraction of conv filters kept against that value, and the metric
  against the filters kept.
- ``latency-threads``: p50 latency per method, device and thread count as bars, each beside
  its roofline lower bound.
- ``search-pareto``: the Pareto front that each architecture-search row stored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files only; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure as MplFigure  # noqa: E402

from benchmark.report.summary import (  # noqa: E402
    MethodSummary,
    SearchFront,
    Sweep,
    TaskReport,
    find_sweeps,
    search_fronts,
)
from benchmark.stats import pareto_front  # noqa: E402

__all__ = [
    "FIGURE_KINDS",
    "FigureFile",
    "render_task_figures",
    "slug",
]

logger = logging.getLogger(__name__)

DEFAULT_FORMATS = ("png", "svg")
FIGURE_KINDS = (
    "accuracy-vs-macs",
    "accuracy-vs-params",
    "accuracy-vs-latency",
    "filters-per-layer",
    "sweep",
    "latency-threads",
    "search-pareto",
)
_FAMILY_MARKERS = {
    "baseline": "o",
    "regulariser": "s",
    "pruning": "^",
    "quantisation": "D",
    "distillation": "v",
    "search": "P",
}
_DPI = 150
# Metadata entries set to None are left out, so a rerun on the same rows writes identical files.
_FIXED_METADATA = {"svg": {"Date": None}, "png": {"Software": None}}


@dataclass
class FigureFile:
    """One figure written to disk in one or more formats."""

    task: str
    kind: str
    title: str
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def png(self) -> Path | None:
        return self.paths.get("png")


def slug(text: str) -> str:
    """Return ``text`` as a file-name-safe slug: letters, digits, dots, dashes."""
    cleaned = "".join(char if char.isalnum() or char in ".-" else "-" for char in text)
    return "-".join(part for part in cleaned.split("-") if part) or "task"


def render_task_figures(
    report: TaskReport, output_dir: Path, formats: Sequence[str] = DEFAULT_FORMATS
) -> list[FigureFile]:
    """Draw every figure that the report's data allows into ``output_dir``; return them."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if not report.summaries:
        logger.info("%s: no successful rows, so no figures", report.task)
        return []

    painters: list[tuple[str, Callable[[TaskReport, Path, Sequence[str]], list[FigureFile]]]] = [
        ("accuracy-vs-macs", lambda r, d, f: _tradeoff_figure(r, d, f, "macs")),
        ("accuracy-vs-params", lambda r, d, f: _tradeoff_figure(r, d, f, "params")),
        ("accuracy-vs-latency", _latency_tradeoff_figure),
        ("filters-per-layer", _filters_figure),
        ("sweep", _sweep_figures),
        ("latency-threads", _latency_threads_figure),
        ("search-pareto", _search_figure),
    ]
    written = []
    for kind, painter in painters:
        with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
            figures = painter(report, output_dir, formats)
        if not figures:
            logger.info(
                "%s: figure %s skipped, because the rows hold no data for it", report.task, kind
            )
        written.extend(figures)
    return written


def _scale(report: TaskReport) -> tuple[float, str]:
    values = [v for s in report.summaries for v in s.test_by_seed.values()]
    return (100.0, " (%)") if values and all(0.0 <= v <= 1.0 for v in values) else (1.0, "")


def _colours(report: TaskReport) -> dict[str, tuple[float, float, float]]:
    """Assign one colour per label, stable within a task; dense is black."""
    labels = [s.label for s in report.summaries if not s.is_dense]
    palette = sns.color_palette("husl", max(len(labels), 1))
    colours = {label: palette[i] for i, label in enumerate(labels)}
    colours["dense"] = (0.0, 0.0, 0.0)
    return colours


def _half_width(estimate) -> float:
    return 0.0 if estimate is None or not estimate.has_spread else estimate.half_width


def _save(
    fig: MplFigure,
    report: TaskReport,
    kind: str,
    title: str,
    output_dir: Path,
    formats: Sequence[str],
) -> FigureFile:
    figure = FigureFile(task=report.task, kind=kind, title=title)
    for fmt in formats:
        path = output_dir / f"{slug(report.task)}-{kind}.{fmt}"
        # Fixed metadata and SVG ids keep regenerated files identical when the data is.
        metadata = _FIXED_METADATA.get(fmt)
        with plt.rc_context({"svg.hashsalt": "compressbench"}):
            fig.savefig(path, format=fmt, dpi=_DPI, bbox_inches="tight", metadata=metadata)
        figure.paths[fmt] = path
    plt.close(fig)
    return figure


def _legend_outside(ax: Axes, entries: int) -> None:
    if entries == 0:
        return
    columns = 1 if entries <= 18 else 2
    ax.legend(
        loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", ncol=columns, frameon=False
    )


def _figure_legend(fig: MplFigure, axes: Iterable[Axes]) -> None:
    """Draw one legend right of all panels, each label once, when panels show different methods."""
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        columns = 1 if len(handles) <= 18 else 2
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="upper left",
            bbox_to_anchor=(1.0, 0.92),
            fontsize="small",
            ncol=columns,
            frameon=False,
        )


def _si(value: float) -> str:
    """Format a tick value with an SI suffix: 400k, 2.3M, 0.1."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


def _readable_log_axis(axis, suffix: str = "") -> None:
    """Set ticks at 1, 2 and 5 per decade, labelled 400k or 2× rather than 4×10⁵."""
    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: _si(value) + suffix))
    axis.set_minor_formatter(ticker.NullFormatter())


def _dense_band(ax: Axes, dense: MethodSummary | None, scale: float) -> None:
    """Draw dense's mean and its 95% interval as a band; a point inside it is within noise."""
    if dense is None:
        return
    ax.axhline(scale * dense.test.mean, color="black", linewidth=0.8, linestyle=":")
    if dense.test.has_spread:
        ax.axhspan(
            scale * dense.test.ci_low,
            scale * dense.test.ci_high,
            color="grey",
            alpha=0.15,
            linewidth=0,
            label="dense 95% interval",
        )


def _clamp_metric_axis(
    ax: Axes, means: list[float], halves: list[float], scale: float, dense: MethodSummary | None
) -> None:
    """Fit the metric axis to the points, so intervals from few seeds cannot squash them.

    With two seeds t(0.975, 1) is 12.7, and an interval can span hundreds of points. The axis
    shows dense's mean and at most one data span beyond the means, within [0, 100] for
    percentages, so a longer error bar runs off the axis instead.
    """
    if not means:
        return
    if dense is not None:
        means, halves = [*means, scale * dense.test.mean], [*halves, 0.0]
    low = min(m - h for m, h in zip(means, halves, strict=True))
    high = max(m + h for m, h in zip(means, halves, strict=True))
    span = max(max(means) - min(means), 0.01 * scale)
    low, high = max(low, min(means) - span), min(high, max(means) + span)
    if scale == 100.0:
        low, high = max(low, 0.0), min(high, 100.0)
    pad = 0.05 * (high - low) or 0.5
    ax.set_ylim(low - pad, high + pad)


def _draw_front(ax: Axes, costs: list[float], scores: list[float]) -> None:
    front = pareto_front(costs, scores)
    if len(front) < 1:
        return
    xs, ys = [costs[i] for i in front], [scores[i] for i in front]
    ax.step(
        xs,
        ys,
        where="post",
        color="0.35",
        linestyle="--",
        linewidth=1.0,
        zorder=1,
    )
    # The rings carry the legend entry: a one-point front has no visible step line.
    ax.scatter(
        xs, ys, s=110, facecolors="none", edgecolors="0.35", linewidths=1.0, zorder=1, label="Pareto front (ringed)"
    )


def _compression_axis(ax: Axes, dense_cost: float | None, what: str) -> None:
    """Add a top axis with dense_cost ÷ x, so the log cost axis doubles as a compression axis."""
    if not dense_cost or dense_cost <= 0:
        return

    def forward(x):
        x = np.asarray(x, dtype=float)
        return np.divide(dense_cost, x, out=np.full_like(x, np.inf), where=x > 0)

    top = ax.secondary_xaxis("top", functions=(forward, forward))
    top.set_xlabel(f"{what} compression (dense ÷ method)")
    _readable_log_axis(top.xaxis, "×")


def _cost(summary: MethodSummary, axis: str):
    return summary.macs if axis == "macs" else summary.params_count


def _tradeoff_figure(
    report: TaskReport, output_dir: Path, formats: Sequence[str], axis: str
) -> list[FigureFile]:
    members = [
        s for s in report.summaries if _cost(s, axis) is not None and _cost(s, axis).mean > 0
    ]
    if not members:
        return []
    scale, unit = _scale(report)
    colours = _colours(report)
    name = "MACs" if axis == "macs" else "parameters"

    fig, ax = plt.subplots(figsize=(8.5, 5.0))
    _dense_band(ax, report.dense, scale)
    costs, scores, halves = [], [], []
    for s in members:
        cost = _cost(s, axis)
        costs.append(cost.mean)
        scores.append(scale * s.test.mean)
        halves.append(scale * _half_width(s.test))
        ax.errorbar(
            cost.mean,
            scale * s.test.mean,
            yerr=scale * _half_width(s.test),
            xerr=cost.std if cost.has_spread else None,
            fmt=_FAMILY_MARKERS.get(s.family, "o"),
            color=colours.get(s.label),
            capsize=3,
            markersize=6,
            label=f"{s.label} (n={s.n})",
            zorder=3,
        )
    _draw_front(ax, costs, scores)
    _clamp_metric_axis(ax, scores, halves, scale, report.dense)
    ax.set_xscale("log")
    _readable_log_axis(ax.xaxis)
    ax.set_xlabel(f"{'MACs per inference' if axis == 'macs' else 'parameters'} (log scale)")
    ax.set_ylabel(f"test {report.metric}{unit}")
    ax.set_title(f"{report.task}: {report.metric} against {name} (error bars: 95% t-interval)")
    dense_cost = (
        _cost(report.dense, axis).mean if report.dense and _cost(report.dense, axis) else None
    )
    _compression_axis(ax, dense_cost, name)
    _legend_outside(ax, len(members) + 1)
    return [
        _save(
            fig,
            report,
            f"accuracy-vs-{axis}",
            f"Test {report.metric} against {name}",
            output_dir,
            formats,
        )
    ]


def _headline_latency(summary: MethodSummary, device: str):
    entries = [entry for entry in summary.latency if entry.device == device]
    return min(entries, key=lambda e: e.threads) if entries else None


def _devices(report: TaskReport) -> list[str]:
    devices: list[str] = []
    for s in report.summaries:
        for entry in s.latency:
            if entry.device not in devices:
                devices.append(entry.device)
    return devices


def _latency_tradeoff_figure(
    report: TaskReport, output_dir: Path, formats: Sequence[str]
) -> list[FigureFile]:
    devices = _devices(report)
    if not devices:
        return []
    scale, unit = _scale(report)
    colours = _colours(report)

    fig, axes = plt.subplots(
        1, len(devices), figsize=(5.5 * len(devices) + 3.0, 5.0), squeeze=False
    )
    for ax, device in zip(axes[0], devices, strict=True):
        _dense_band(ax, report.dense, scale)
        costs, scores, halves = [], [], []
        emulated = False
        for s in report.summaries:
            entry = _headline_latency(s, device)
            if entry is None:
                continue
            emulated = emulated or entry.emulated
            p50_ms = entry.p50_us.mean / 1000.0
            costs.append(p50_ms)
            scores.append(scale * s.test.mean)
            halves.append(scale * _half_width(s.test))
            xerr = entry.p50_us.std / 1000.0 if entry.p50_us.has_spread else None
            ax.errorbar(
                p50_ms,
                scale * s.test.mean,
                yerr=scale * _half_width(s.test),
                xerr=xerr,
                fmt=_FAMILY_MARKERS.get(s.family, "o"),
                color=colours.get(s.label),
                capsize=3,
                markersize=6,
                label=f"{s.label} (n={s.n})",
                zorder=3,
            )
        _draw_front(ax, costs, scores)
        _clamp_metric_axis(ax, scores, halves, scale, report.dense)
        ax.set_xscale("log")
        _readable_log_axis(ax.xaxis)
        threads = min(
            (e.threads for s in report.summaries for e in s.latency if e.device == device),
            default=1,
        )
        ax.set_xlabel(
            f"p50 latency at {threads} thread(s) (ms, log scale)"
            + (", EMULATED" if emulated else "")
        )
        ax.set_ylabel(f"test {report.metric}{unit}")
        ax.set_title(f"{device}" + (" (emulation, not device timing)" if emulated else ""))
    _figure_legend(fig, axes[0])
    fig.suptitle(f"{report.task}: {report.metric} against measured latency")
    title = f"Test {report.metric} against measured latency"
    return [_save(fig, report, "accuracy-vs-latency", title, output_dir, formats)]


def _filters_figure(
    report: TaskReport, output_dir: Path, formats: Sequence[str]
) -> list[FigureFile]:
    members = [s for s in report.summaries if s.filters]
    if not members:
        return []
    layers = _layer_order(report, members)
    counts = np.array(
        [[s.filters.get(layer, np.nan) for layer in layers] for s in members], dtype=float
    )
    dense = report.dense
    if dense is not None and dense.filters:
        reference = np.array([dense.filters.get(layer, np.nan) for layer in layers], dtype=float)
        colour_label = "fraction of dense's filters kept"
    else:
        reference = np.nanmax(counts, axis=0)
        colour_label = "fraction of the largest count per layer"
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = counts / reference

    height = 1.6 + 0.32 * len(members)
    width = 3.5 + 1.1 * len(layers)
    fig, ax = plt.subplots(figsize=(width, height))
    annotations = np.vectorize(lambda v: "" if np.isnan(v) else f"{v:g}")(counts)
    sns.heatmap(
        fraction,
        ax=ax,
        annot=annotations,
        fmt="",
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        xticklabels=layers,
        yticklabels=[s.label for s in members],
        cbar_kws={"label": colour_label},
        annot_kws={"fontsize": "x-small"},
        linewidths=0.5,
        linecolor="white",
    )
    ax.set_xlabel("layer (model order)")
    ax.set_ylabel("method")
    ax.set_title(
        f"{report.task}: filters (conv) or neurons (linear) kept per layer, median over seeds"
    )
    ax.tick_params(axis="x", rotation=45)
    return [_save(fig, report, "filters-per-layer", "Filters per layer", output_dir, formats)]


def _layer_order(report: TaskReport, members: list[MethodSummary]) -> list[str]:
    """Dense's layers first, in model order, then any layer only other methods have."""
    ordered: list[str] = list(report.dense.filters) if report.dense else []
    for s in members:
        for layer in s.filters:
            if layer not in ordered:
                ordered.append(layer)
    return ordered


def _sweep_figures(
    report: TaskReport, output_dir: Path, formats: Sequence[str]
) -> list[FigureFile]:
    sweeps = find_sweeps(report.summaries)
    by_parameter: dict[str, list[Sweep]] = {}
    for sweep in sweeps:
        by_parameter.setdefault(sweep.parameter, []).append(sweep)
    return [
        _one_sweep_figure(report, parameter, group, output_dir, formats)
        for parameter, group in by_parameter.items()
    ]


def conv_filters(summary: MethodSummary) -> float | None:
    """Return the total filters of the conv layers, or of all layers when no row records kinds."""
    if not summary.filters:
        return None
    kinds = {}
    for row in summary.rows:
        for layer in (row.get("metrics") or {}).get("layers") or []:
            if isinstance(layer, dict) and "name" in layer:
                kinds[layer["name"]] = layer.get("kind")
    conv = [name for name in summary.filters if kinds.get(name) == "conv"]
    names = conv or list(summary.filters)
    return float(sum(summary.filters[name] for name in names))


def _one_sweep_figure(
    report: TaskReport,
    parameter: str,
    sweeps: list[Sweep],
    output_dir: Path,
    formats: Sequence[str],
) -> FigureFile:
    scale, unit = _scale(report)
    dense = report.dense
    dense_filters = conv_filters(dense) if dense else None
    palette = sns.color_palette("tab10", len(sweeps))

    fig, (ax_metric, ax_filters, ax_trade) = plt.subplots(1, 3, figsize=(16.0, 4.8))
    for ax in (ax_metric, ax_trade):
        _dense_band(ax, dense, scale)
    all_values = [v for sweep in sweeps for v in sweep.values]
    log_x = min(all_values) > 0 and max(all_values) / min(all_values) >= 10

    all_means, all_errors = [], []
    for colour, sweep in zip(palette, sweeps, strict=True):
        means = [scale * s.test.mean for s in sweep.summaries]
        errors = [scale * _half_width(s.test) for s in sweep.summaries]
        all_means += means
        all_errors += errors
        kept = [conv_filters(s) for s in sweep.summaries]
        if dense_filters:
            kept = [None if k is None else k / dense_filters for k in kept]
        ax_metric.errorbar(
            sweep.values, means, yerr=errors, marker="o", capsize=3, color=colour, label=sweep.name
        )
        present = [(v, k) for v, k in zip(sweep.values, kept, strict=True) if k is not None]
        if present:
            ax_filters.plot(*zip(*present, strict=True), marker="o", color=colour, label=sweep.name)
        trade = [(k, m, e) for k, m, e in zip(kept, means, errors, strict=True) if k is not None]
        if trade:
            xs, ys, es = zip(*trade, strict=True)
            ax_trade.errorbar(
                xs, ys, yerr=es, marker="o", capsize=3, color=colour, label=sweep.name
            )

    for ax in (ax_metric, ax_trade):
        _clamp_metric_axis(ax, all_means, all_errors, scale, dense)
    kept_label = "fraction of dense's conv filters kept" if dense_filters else "conv filters kept"
    for ax in (ax_metric, ax_filters):
        ax.set_xlabel(f"{parameter}" + (" (log scale)" if log_x else ""))
        if log_x:
            ax.set_xscale("log")
    ax_metric.set_ylabel(f"test {report.metric}{unit}")
    ax_metric.set_title(f"test {report.metric} (95% t-interval)")
    ax_filters.set_ylabel(kept_label)
    ax_filters.set_title("filters kept")
    ax_trade.set_xlabel(kept_label)
    ax_trade.set_ylabel(f"test {report.metric}{unit}")
    ax_trade.set_title(f"{report.metric} against filters kept")
    _legend_outside(ax_trade, len(sweeps))
    fig.suptitle(f"{report.task}: sweep over {parameter}")
    return _save(
        fig, report, f"sweep-{slug(parameter)}", f"Sweep over {parameter}", output_dir, formats
    )


def _latency_threads_figure(
    report: TaskReport, output_dir: Path, formats: Sequence[str]
) -> list[FigureFile]:
    """Draw p50 as grouped bars: a group per method, a bar per thread count, bounds as ticks."""
    devices = _devices(report)
    if not devices:
        return []
    methods = [s for s in report.summaries if s.latency]
    threads = sorted({e.threads for s in methods for e in s.latency})
    height = 1.8 + len(methods) * (0.16 * len(threads) + 0.12)
    fig, axes = plt.subplots(
        1, len(devices), figsize=(5.0 * len(devices) + 3.5, height), squeeze=False, sharey=True
    )
    for ax, device in zip(axes[0], devices, strict=True):
        _latency_bars(ax, device, methods, threads)
    axes[0][0].invert_yaxis()  # the panels share this axis: first method on top, in every panel
    fig.subplots_adjust(top=1.0 - 0.9 / height)
    _figure_legend(fig, axes[0])
    fig.suptitle(
        f"{report.task}: p50 latency per device and thread count "
        "(error bars: 95% t-interval over seeds)"
    )
    title = "Latency per device and thread count, beside the roofline bound"
    return [_save(fig, report, "latency-threads", title, output_dir, formats)]


def _latency_bars(ax: Axes, device: str, methods: list[MethodSummary], threads: list[int]) -> None:
    """Draw one device's panel: a bar per method and thread count, the bound as a black tick."""
    palette = sns.color_palette("crest", len(threads))
    height = 0.8 / len(threads)
    emulated, cores, values = False, set(), []
    for row, summary in enumerate(methods):
        by_threads = {e.threads: e for e in summary.latency if e.device == device}
        for slot, count in enumerate(threads):
            entry = by_threads.get(count)
            if entry is None:
                continue
            y = row - 0.4 + height * (slot + 0.5)
            _latency_bar(ax, entry, y, height, palette[slot])
            emulated = emulated or entry.emulated
            values.append(entry.p50_us.mean)
            if entry.bound_us:
                cores.add(f"{entry.bound_core}, {entry.bound_source} core")
                values.append(entry.bound_us)

    ax.set_yticks(range(len(methods)))
    ax.set_yticklabels([s.label for s in methods])
    ax.set_xscale("log")
    if values:
        ax.set_xlim(min(values) / 1.6, max(values) * 1.6)
    _readable_log_axis(ax.xaxis)
    ax.set_xlabel("p50 latency (µs, log scale)")

    bound = f"roofline bound: {', '.join(sorted(cores))}" if cores else "no roofline bound"
    timing = " (EMULATION, not device timing)" if emulated else ""
    ax.set_title(f"{device}{timing}\n{bound}", fontsize="small")


def _latency_bar(ax: Axes, entry, y: float, height: float, colour) -> None:
    mean, half = entry.p50_us.mean, _half_width(entry.p50_us)
    # A log axis cannot show an interval reaching below zero, so its low end is clipped.
    low = min(half, mean * 0.95)
    ax.barh(y, mean, height=height, color=colour, label=f"{entry.threads} thread(s)")
    ax.errorbar(mean, y, xerr=[[low], [half]], color="0.25", capsize=2, linewidth=0.8)
    if entry.bound_us:
        ax.plot(
            entry.bound_us,
            y,
            marker="|",
            markersize=9,
            markeredgewidth=2,
            color="black",
            linestyle="none",
            label="roofline bound",
        )


def _search_figure(
    report: TaskReport, output_dir: Path, formats: Sequence[str]
) -> list[FigureFile]:
    fronts: list[SearchFront] = []
    for s in report.summaries:
        fronts.extend(search_fronts(s))
    if not fronts:
        return []
    labels = sorted({front.label for front in fronts})
    fig, axes = plt.subplots(1, len(labels), figsize=(6.0 * len(labels) + 2.5, 4.8), squeeze=False)
    for ax, label in zip(axes[0], labels, strict=True):
        mine = [front for front in fronts if front.label == label]
        _draw_search_fronts(ax, mine)
        ax.set_title(label)
    _figure_legend(fig, axes[0])
    fig.suptitle(f"{report.task}: Pareto fronts of the architecture search (validation split)")
    return [
        _save(
            fig, report, "search-pareto", "Architecture search: Pareto front", output_dir, formats
        )
    ]


def _draw_search_fronts(ax: Axes, fronts: Iterable[SearchFront]) -> None:
    fronts = list(fronts)
    palette = sns.color_palette("deep", len(fronts))
    positive = True
    for colour, front in zip(palette, fronts, strict=True):
        if front.trials:
            ax.scatter(*zip(*front.trials, strict=True), s=12, color="0.7", zorder=1)
        ordered = sorted(front.points)
        positive = positive and all(cost > 0 for cost, _ in ordered)
        ax.step(*zip(*ordered, strict=True), where="post", color=colour, linewidth=1.0, zorder=2)
        ax.scatter(
            *zip(*ordered, strict=True),
            color=colour,
            s=25,
            zorder=3,
            label=f"seed {front.seed} front",
        )
        if front.selected:
            ax.scatter(
                *front.selected,
                marker="*",
                s=180,
                color=colour,
                edgecolors="black",
                zorder=4,
                label=f"seed {front.seed} selected",
            )
    if positive and _spans_decade([cost for f in fronts for cost, _ in f.points]):
        ax.set_xscale("log")
        _readable_log_axis(ax.xaxis)
    else:
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: _si(value)))
    ax.set_xlabel(fronts[0].cost_key if fronts else "cost")
    ax.set_ylabel(fronts[0].score_key if fronts else "score")


def _spans_decade(values: list[float]) -> bool:
    return bool(values) and min(values) > 0 and math.log10(max(values) / min(values)) >= 1.0
