"""Hand-made result rows for the report tests: every field a figure or table reads.

The rows follow the layout that the runner, evaluation and profiling write (schema version
1). Their numbers are made up so that each figure has data. There are dense and a pruned
method over three seeds, a λ sweep of a regulariser, and a quantised method. An architecture
search stores a Pareto front in its diagnostics, latency covers a native and an emulated
device, and one run failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.results import SCHEMA_VERSION, ResultStore, run_id

TASK = "lenet5-mnist-sample"
DENSE_FILTERS = {"features.0": 20, "features.2": 50, "classifier.1": 500, "classifier.3": 10}
DENSE_MACS = 2_293_000
DENSE_PARAMS = 431_080
BUDGET = {"epochs": 12, "finetune_epochs": 3, "tuning_trials": 0}


def make_row(
    method: str,
    seed: int,
    test_metric: float,
    *,
    params: dict[str, Any] | None = None,
    label: str | None = None,
    family: str = "baseline",
    filters: dict[str, int] | None = None,
    macs: int = DENSE_MACS,
    n_params: int = DENSE_PARAMS,
    latency: dict[str, Any] | None = None,
    diagnostics: dict[str, Any] | None = None,
    status: str = "ok",
    reason: str | None = None,
) -> dict[str, Any]:
    """Return one result row; ``params`` are the method's full parameters."""
    identity = {
        "task": {
            "name": TASK,
            "classes": None,
            "model_options": {},
            "val_fraction": 0.1,
            "test_fraction": 0.2,
            "split_seed": 0,
            "train_limit": None,
        },
        "method": method,
        "params": {method: dict(params or {})},
        "seed": seed,
        "budget": dict(BUDGET),
        "training": {"optimizer": "sgd", "lr": 0.05},
        "quick": False,
    }
    filters = dict(filters or DENSE_FILTERS)
    layers = [
        {
            "name": name,
            "kind": "conv" if name.startswith("features") else "linear",
            "filters": count,
            "params": 0,
            "nonzero_params": 0,
            "macs": 0,
            "nonzero_macs": 0,
        }
        for name, count in filters.items()
    ]
    row = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id(identity),
        "suite": "report-test",
        "identity": identity,
        "label": label or method,
        "family": family,
        "status": status,
        "reason": reason,
        "environment": {
            "cpu": "Test CPU",
            "machine": "x86_64",
            "torch_threads": 1,
            "git_commit": "abc123",
            "packages": {"torch": "2.13.0"},
        },
        "timings": {"train_s": 1.0, "total_s": 2.0},
    }
    if status != "ok":
        return row
    row.update(
        {
            "metrics": {
                "val_metric": test_metric + 0.002,
                "test_metric": test_metric,
                "metric": "accuracy",
                "params": n_params,
                "nonzero_params": n_params,
                "macs": macs,
                "nonzero_macs": macs,
                "filters": filters,
                "layers": layers,
            },
            "export": {
                "custom": False,
                "onnx_bytes": n_params * 4 + 1000,
                "parity": {"max_abs_diff": 1e-6, "passed": True},
            },
            "flags": [],
            "latency": latency,
            "budget_consumed": {
                "epochs": 12,
                "epochs_by_kind": {"main": 9, "finetune": 3},
                "tuning_trials": 0,
            },
            "diagnostics": diagnostics or {},
            "test_reads": 1,
        }
    )
    return row


def latency_document(
    p50_us: float,
    speedup: float | None,
    macs: int,
    emulated: bool = False,
    core: str | None = None,
    threads: tuple[int, ...] = (1, 2, 4),
) -> dict[str, Any]:
    """One device's entry as profiling writes it, with p50 shrinking as threads grow."""
    entries = {}
    for count in threads:
        p50 = p50_us / (1 + 0.6 * (count - 1))
        entry = {
            "intra_op_threads": count,
            "inter_op_threads": 1,
            "latency": {"p50_us": p50, "p90_us": p50 * 1.1, "cv": 0.03},
            "p50_us": p50,
            "floor_us": 30.0,
            "realised_speedup": speedup,
            "theoretical_speedup": DENSE_MACS / macs if speedup else None,
            "attainable_speedup": (DENSE_MACS / macs) * 0.8 if speedup else None,
        }
        if speedup:
            entry["speedup"] = {"median": speedup, "p25": speedup * 0.95, "p75": speedup * 1.05}
        if core:
            entry["roofline"] = {
                "core": core,
                "bound_us": 2.0 * macs / (8 * 1.5e9 * min(count, 4)) * 1e6,
            }
        entries[str(count)] = entry
    return {
        "status": "ok",
        "emulated": emulated,
        "timing": "emulation" if emulated else "device",
        "core": core,
        "threads": entries,
    }


def sample_rows() -> list[dict[str, Any]]:
    """Rows of a small but complete suite on one task."""
    rows = []
    seeds = (0, 1, 2)
    dense_acc = (0.981, 0.978, 0.983)
    for seed, acc in zip(seeds, dense_acc, strict=True):
        latency = {
            "local": latency_document(250.0 + seed, None, DENSE_MACS),
            "qemu-aarch64": latency_document(
                61000.0, None, DENSE_MACS, emulated=True, core="cortex-a72", threads=(1,)
            ),
        }
        rows.append(make_row("dense", seed, acc, latency=latency))

    pruned = {"features.0": 8, "features.2": 20, "classifier.1": 500, "classifier.3": 10}
    for seed, acc in zip(seeds, (0.975, 0.972, 0.978), strict=True):
        latency = {"local": latency_document(95.0 + seed, 2.6, 600_000)}
        rows.append(
            make_row(
                "magnitude",
                seed,
                acc,
                family="pruning",
                filters=pruned,
                macs=600_000,
                n_params=180_000,
                latency=latency,
            )
        )

    for lam, kept, drop in ((1e-4, (18, 45), 0.000), (1e-3, (10, 25), 0.004), (1e-2, (4, 9), 0.03)):
        for seed, acc in zip(seeds, dense_acc, strict=True):
            filters = {
                "features.0": kept[0],
                "features.2": kept[1],
                "classifier.1": 500,
                "classifier.3": 10,
            }
            macs = int(DENSE_MACS * (kept[0] / 20) * (kept[1] / 50)) + 260_000
            rows.append(
                make_row(
                    "l1l2.across",
                    seed,
                    acc - drop - 0.001 * seed,
                    params={"lam": lam, "tau": 0.01},
                    label=f"l1l2.across(lam={lam})",
                    family="regulariser",
                    filters=filters,
                    macs=macs,
                    n_params=int(DENSE_PARAMS * kept[1] / 50),
                    diagnostics={"alive_filters": [[20, 50], list(kept)], "threshold": 0.01},
                )
            )

    for seed, acc in zip(seeds, (0.979, 0.980, 0.977), strict=True):
        rows.append(make_row("int8.static", seed, acc, family="quantisation"))

    # The layout of nas.widths: diagnostics["search"] holds the front, every trial and the
    # selected one, with the minimised objective in "cost".
    front = [
        {"val_metric": 0.95, "cost": 300_000, "macs": 300_000},
        {"val_metric": 0.97, "cost": 800_000, "macs": 800_000},
        {"val_metric": 0.98, "cost": 1_900_000, "macs": 1_900_000},
    ]
    trials = front + [
        {"val_metric": 0.94, "cost": 900_000, "macs": 900_000},
        {"val_metric": 0.96, "cost": 2_000_000, "macs": 2_000_000},
    ]
    search = {
        "objective": "macs",
        "cost_unit": "MACs",
        "pareto_front": front,
        "trials_table": trials,
        "selected": front[1],
        "pareto_table": "| trial |",
    }
    rows.append(
        make_row(
            "nas",
            0,
            0.972,
            family="search",
            macs=800_000,
            n_params=200_000,
            diagnostics={"search": search},
        )
    )

    rows.append(
        make_row("broken", 0, 0.0, status="failed", reason="MethodError: lam must be > 0, got -1")
    )
    return rows


def write_rows(root: Path, rows: list[dict[str, Any]] | None = None) -> Path:
    """Write ``rows`` (default :func:`sample_rows`) as a results folder under ``root``."""
    store = ResultStore(root)
    for row in rows if rows is not None else sample_rows():
        store.write(row)
    return root


def shared_report(tmp_path_factory) -> Path:
    """Write the sample rows and their full report once per test session; return the report folder.

    Drawing every figure takes seconds, so the figure, table and HTML tests share one report
    under the session's base temporary folder.
    """
    from benchmark.report import write_report

    results = tmp_path_factory.getbasetemp() / "shared-sample-report" / "suite"
    report = results / "report"
    if not (report / "report.html").is_file():
        write_rows(results)
        write_report(results)
    return report
