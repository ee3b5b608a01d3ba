"""Benchmark: how repeatable is the p50 latency of the profiling protocol on ``local``?

Exports the dense LeNet-5 (conv 20/50, fc 500) once, profiles it ``--repeats`` times on the
host with the default protocol (each profile a fresh process), and prints each p50 and the
coefficient of variation of the p50s. The target is a CV of at most 5%. Run it as::

    python -m benchmark.profile_stability [--repeats 5] [--threads 1] [--min-seconds 2]

Exit status 0 when the CV meets ``--target``, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from benchmark.measure.profiling import ProfileSettings, profile_model

logger = logging.getLogger(__name__)


def export_lenet(path: Path) -> Path:
    """Export a seeded dense LeNet-5 for 1x28x28 inputs to ``path`` (opset 17, batch 1)."""
    import torch

    from benchmark.tasks.models import LeNet5

    torch.manual_seed(0)
    model = LeNet5().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (torch.randn(1, 1, 28, 28),), str(path), dynamo=False, opset_version=17
        )
    return path


def measure_p50s(model: Path, settings: ProfileSettings, repeats: int) -> tuple[list[float], dict]:
    """Profile ``model`` ``repeats`` times on ``local``; return the p50s in µs and the CPU info."""
    p50s, cpu = [], {}
    for repeat in range(repeats):
        result = profile_model(model, settings)["local"]
        if result["status"] != "ok":
            raise SystemExit(f"profile {repeat + 1} failed: {result['error']}")
        threads = str(settings.threads[0])
        p50s.append(result["threads"][threads]["p50_us"])
        cpu = result["environment"]["cpu"]
        logger.info("profile %d/%d: p50 %.1f µs", repeat + 1, repeats, p50s[-1])
    return p50s, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="number of profiles (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument(
        "--min-seconds", type=float, default=2.0, help="timed part of each profile in seconds"
    )
    parser.add_argument(
        "--target", type=float, default=0.05, help="maximum acceptable CV (default 0.05)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    settings = ProfileSettings(
        threads=(args.threads,), min_seconds=args.min_seconds, top_operators=0
    )
    with tempfile.TemporaryDirectory(prefix="compressbench-stability-") as folder:
        model = export_lenet(Path(folder) / "lenet5.onnx")
        p50s, cpu = measure_p50s(model, settings, args.repeats)
        p50s = np.asarray(p50s)

    cv = float(p50s.std(ddof=1) / p50s.mean())
    host = cpu.get("model_name") or cpu.get("core") or platform.machine()
    print(
        f"host: {host} ({cpu.get('logical_cpus')} logical CPUs), {args.threads} thread(s), "
        f"min {settings.min_queries} queries and {args.min_seconds} s per profile"
    )
    print("p50 per profile (µs): " + ", ".join(f"{value:.1f}" for value in p50s))
    print(
        f"mean p50 {p50s.mean():.1f} µs, CV of p50 over {args.repeats} profiles: {cv:.2%} "
        f"(target <= {args.target:.0%})"
    )
    return 0 if cv <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
