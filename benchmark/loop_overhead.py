"""Benchmark: epoch time of the harness loop against a plain PyTorch loop.

Both loops train LeNet-5 on the embedded MNIST sample with the same batch size, optimiser,
threads and in-memory tensors. Epochs alternate between the two loops (plain, harness,
plain, ...) so that machine noise hits both alike, and the script prints the median of the
per-pair ratios. Run it with ``python -m benchmark.loop_overhead``; the target is <= 1.05.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from benchmark.budget import Budget
from benchmark.tasks.registry import TaskSpec, load_task
from benchmark.training import Harness, TrainingConfig
from methods.dense import Dense


def plain_epoch(model, optimizer, x, y, batch_size: int, generator: torch.Generator) -> float:
    started = time.perf_counter()
    order = torch.randperm(len(y), generator=generator)
    model.train()
    for start in range(0, len(y), batch_size):
        index = order[start : start + batch_size]
        loss = torch.nn.functional.cross_entropy(model(x.index_select(0, index)), y.index_select(0, index))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="timed epochs per loop")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    task = load_task(TaskSpec("lenet5-mnist-sample"))
    config = TrainingConfig(
        lr=0.01, batch_size=args.batch_size, threads=args.threads, progress=False, schedule="constant"
    )
    x, y = task.data.train_x, task.data.train_y

    plain_model = task.build_model()
    plain_optimizer = torch.optim.SGD(plain_model.parameters(), lr=config.lr, momentum=config.momentum)
    generator = torch.Generator().manual_seed(0)

    with TemporaryDirectory() as folder:
        harness = Harness(task, Dense(), Budget(epochs=args.epochs + 1), config, 0, Path(folder), Path(folder))
        harness_model = task.build_model()
        ctx = harness.new_context()
        plain_epoch(plain_model, plain_optimizer, x, y, args.batch_size, generator)  # warm-up
        harness.train_phase(harness_model, 1, "main", ctx, checkpoint="last")

        plain_times, loop_times, full_times = [], [], []
        for _ in range(args.epochs):
            plain_times.append(plain_epoch(plain_model, plain_optimizer, x, y, args.batch_size, generator))
            started = time.perf_counter()
            harness.train_phase(harness_model, 1, "main", ctx, checkpoint="last")
            full_times.append(time.perf_counter() - started)
            loop_times.append(harness.history[-1]["seconds"])

    loop_ratio = statistics.median(h / p for h, p in zip(loop_times, plain_times, strict=False))
    full_ratio = statistics.median(h / p for h, p in zip(full_times, plain_times, strict=False))
    print(f"LeNet-5, MNIST sample ({len(y)} training images), batch {args.batch_size}, {args.threads} threads")
    print(f"plain PyTorch epoch: median {statistics.median(plain_times) * 1000:.1f} ms over {args.epochs} epochs")
    print(f"harness training epoch: median {statistics.median(loop_times) * 1000:.1f} ms")
    print(f"ratio harness / plain (training loop): {loop_ratio:.3f}  (target <= 1.05)")
    print(f"ratio with per-epoch validation and checkpoint bookkeeping: {full_ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
