"""Latency figures of result rows, read from the per-device documents that profiling stores.

A row's ``latency`` is None when the suite profiled on no device. Otherwise it maps each device
name to ``{"status": "ok", "emulated": ..., "core": ..., "threads": {"1": {...}, ...}}`` as
written by :func:`benchmark.measure.profiling.profile_model`; a device that failed has
``"status": "failed"`` and no threads. Missing fields read as None, so rows from older or
partial profiles still load.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from benchmark.errors import ConfigError
from benchmark.measure.roofline import roofline_bound
from benchmark.stats import Estimate, describe

__all__ = ["LatencyPoint", "LatencySummary", "latency_points", "summarise_latency"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatencyPoint:
    """One device and thread count of one row; latencies in µs, speed-ups as ratios."""

    device: str
    threads: int
    emulated: bool
    p50_us: float
    p90_us: float | None
    cv: float | None
    floor_us: float | None
    realised_speedup: float | None
    speedup_p25: float | None
    speedup_p75: float | None
    theoretical_speedup: float | None
    attainable_speedup: float | None
    bound_us: float | None
    core: str | None


def latency_points(row: Mapping[str, Any]) -> list[LatencyPoint]:
    """Return the latency points of ``row``; an absent or failed profile gives none."""
    latency = row.get("latency")
    if not isinstance(latency, Mapping):
        return []

    points = []
    for device, document in latency.items():
        if not isinstance(document, Mapping) or document.get("status", "ok") != "ok":
            continue
        threads = document.get("threads")
        if not isinstance(threads, Mapping):
            continue
        for count, entry in threads.items():
            point = _point(device, document, count, entry)
            if point is not None:
                points.append(point)
    return points


def _point(device: str, document: Mapping[str, Any], count: str, entry: Any) -> LatencyPoint | None:
    if not isinstance(entry, Mapping):
        return None
    latency = entry.get("latency") if isinstance(entry.get("latency"), Mapping) else {}
    p50 = _number(entry.get("p50_us"), latency.get("p50_us"))
    if p50 is None:
        return None
    speedup = entry.get("speedup") if isinstance(entry.get("speedup"), Mapping) else {}
    roofline = entry.get("roofline") if isinstance(entry.get("roofline"), Mapping) else {}
    try:
        threads = int(entry.get("intra_op_threads", count))
    except (TypeError, ValueError):
        return None
    return LatencyPoint(
        device=str(device),
        threads=threads,
        emulated=bool(document.get("emulated", False)),
        p50_us=p50,
        p90_us=_number(latency.get("p90_us")),
        cv=_number(latency.get("cv")),
        floor_us=_number(entry.get("floor_us")),
        realised_speedup=_number(entry.get("realised_speedup"), speedup.get("median")),
        speedup_p25=_number(speedup.get("p25")),
        speedup_p75=_number(speedup.get("p75")),
        theoretical_speedup=_number(entry.get("theoretical_speedup")),
        attainable_speedup=_number(entry.get("attainable_speedup")),
        bound_us=_number(roofline.get("bound_us")),
        core=roofline.get("core") or document.get("core"),
    )


def _number(*candidates: Any) -> float | None:
    """Return the first candidate that is a finite number, as a float."""
    for value in candidates:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


@dataclass(frozen=True)
class LatencySummary:
    """One device and thread count of one method, over its seeds.

    ``p50_us`` and ``realised_speedup`` are estimates over the per-seed values (each seed's
    p50 and each seed's median paired ratio). The theoretical and attainable speed-ups and the
    bound are means over seeds. ``bound_core`` names the core of the roofline bound and
    ``bound_source`` says whether the device named it (``device``) or the report chose a
    reference core (``reference``).
    """

    device: str
    threads: int
    emulated: bool
    p50_us: Estimate
    realised_speedup: Estimate | None
    theoretical_speedup: float | None
    attainable_speedup: float | None
    floor_us: float | None
    bound_us: float | None
    bound_core: str | None
    bound_source: str | None

    @property
    def realised_over_theoretical(self) -> float | None:
        if self.realised_speedup is None or not self.theoretical_speedup:
            return None
        return self.realised_speedup.mean / self.theoretical_speedup

    @property
    def realised_over_attainable(self) -> float | None:
        if self.realised_speedup is None or not self.attainable_speedup:
            return None
        return self.realised_speedup.mean / self.attainable_speedup


def summarise_latency(
    rows: Iterable[Mapping[str, Any]], reference_core: str | None = None
) -> list[LatencySummary]:
    """Aggregate the latency points of one method's rows per device and thread count.

    Where no row of a device carries a roofline bound and ``reference_core`` is given, the
    bound is computed for that core from each row's MACs and ONNX file size, so the figure can
    still show measurements beside a bound; it is then marked as a reference bound.
    """
    grouped: dict[tuple[str, int], list[tuple[LatencyPoint, Mapping[str, Any]]]] = defaultdict(list)
    for row in rows:
        for point in latency_points(row):
            grouped[(point.device, point.threads)].append((point, row))

    summaries = []
    for (device, threads), members in sorted(grouped.items()):
        points = [point for point, _ in members]
        realised = [p.realised_speedup for p in points if p.realised_speedup is not None]
        bounds = [p.bound_us for p in points if p.bound_us is not None]
        bound_core = next((p.core for p in points if p.bound_us is not None), None)
        bound_source = "device" if bounds else None
        if not bounds and reference_core:
            bounds = [
                b
                for b in (_reference_bound(row, reference_core, threads) for _, row in members)
                if b
            ]
            bound_core, bound_source = (reference_core, "reference") if bounds else (None, None)
        summaries.append(
            LatencySummary(
                device=device,
                threads=threads,
                emulated=any(p.emulated for p in points),
                p50_us=describe([p.p50_us for p in points]),
                realised_speedup=describe(realised) if realised else None,
                theoretical_speedup=_mean(p.theoretical_speedup for p in points),
                attainable_speedup=_mean(p.attainable_speedup for p in points),
                floor_us=_mean(p.floor_us for p in points),
                bound_us=_mean(bounds),
                bound_core=bound_core,
                bound_source=bound_source,
            )
        )
    return summaries


def _reference_bound(row: Mapping[str, Any], core: str, threads: int) -> float | None:
    macs = _number((row.get("metrics") or {}).get("macs"))
    size = _number((row.get("export") or {}).get("onnx_bytes"))
    if macs is None or size is None:
        return None
    try:
        return roofline_bound(core, int(macs), int(size), threads=threads)["bound_s"] * 1e6
    except ConfigError as error:
        logger.warning("no roofline bound for core %s: %s", core, error)
        return None


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
