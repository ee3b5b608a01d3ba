"""Benchmark: wall time of a small suite with 1 and 2 worker processes, and their ratio.

Runs LeNet-5 on the MNIST sample, dense and a half-width model, over four seeds, each run
with one torch thread, through ``--executor processes``. Prints both wall times and the ratio
2 workers / 1 worker (the target is <= 0.6 on 2 cores). Run it with
``python -m benchmark.executor_speedup``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from benchmark.config import parse_suite
from benchmark.executors import ProcessExecutor
from benchmark.runner import SuiteRunner

SUITE = {
    "suite": {"name": "speedup", "seeds": [0, 1, 2, 3]},
    "budget": {"epochs": 3, "finetune_epochs": 1},
    "training": {"threads": 1, "progress": False, "lr": 0.02},
    "export": {"parity_samples": 64},
    "tasks": [{"name": "lenet5-mnist-sample", "train_limit": 2000}],
    "methods": [{"name": "dense"}],
}


def time_suite(workers: int, seeds: int) -> float:
    table = {**SUITE, "suite": {**SUITE["suite"], "seeds": list(range(seeds))}}
    with TemporaryDirectory() as folder:
        suite = parse_suite(table, Path(folder) / "speedup.toml")
        suite = dataclasses.replace(suite)
        started = time.perf_counter()
        SuiteRunner(suite, Path(folder) / "out", executor=ProcessExecutor(workers)).run()
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="runs in the suite (one per seed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    one = time_suite(1, args.seeds)
    two = time_suite(2, args.seeds)
    print(f"suite: {args.seeds} dense LeNet-5 runs, 3 epochs on 2,000 MNIST-sample images, 1 thread each")
    print(f"processes, 1 worker:  {one:.1f} s")
    print(f"processes, 2 workers: {two:.1f} s")
    print(f"ratio 2 workers / 1 worker: {two / one:.3f}  (target <= 0.6 on 2 cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
