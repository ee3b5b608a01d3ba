"""Helpers for tests: small suites on the embedded MNIST sample, and idx/CIFAR file writers."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.config import Suite, parse_suite


def tiny_suite_table(
    methods: list[dict[str, Any]] | None = None,
    *,
    seeds: tuple[int, ...] = (0,),
    epochs: int = 2,
    finetune_epochs: int = 1,
    train_limit: int = 300,
    name: str = "tiny",
    **extra: Any,
) -> dict[str, Any]:
    """Return a suite table that trains LeNet-5 on a few hundred MNIST-sample digits."""
    table: dict[str, Any] = {
        "suite": {"name": name, "seeds": list(seeds)},
        "budget": {"epochs": epochs, "finetune_epochs": finetune_epochs},
        "training": {"batch_size": 64, "lr": 0.05, "threads": 1, "progress": False},
        "export": {"parity_samples": 32},
        "tasks": [{"name": "lenet5-mnist-sample", "train_limit": train_limit}],
        "methods": methods if methods is not None else [{"name": "dense"}],
    }
    table.update(extra)
    return table


def tiny_suite(tmp_path: Path, methods: list[dict[str, Any]] | None = None, **options: Any) -> Suite:
    return parse_suite(tiny_suite_table(methods, **options), tmp_path / "tiny.toml")


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write ``array`` (uint8) in LeCun's idx format."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        payload = gzip.compress(payload)
        path = path.with_name(path.name + ".gz")
    path.write_bytes(payload)
    return path


def write_mnist_folder(folder: Path, train: int = 60, test: int = 20, compress: bool = False, seed: int = 0) -> Path:
    """Write the four idx files of a small MNIST-like dataset with every class present."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return folder


def write_cifar_folder(root: Path, num_classes: int = 10, per_batch: int = 20, seed: int = 0) -> Path:
    """Write a small CIFAR folder in the python-pickle format."""
    rng = np.random.default_rng(seed)

    def batch(count: int, label_key: bytes) -> dict[bytes, Any]:
        return {
            b"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
            label_key: [int(i % num_classes) for i in range(count)],
        }

    if num_classes == 10:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for i in range(1, 6):
            (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per_batch, b"labels")))
        (folder / "test_batch").write_bytes(pickle.dumps(batch(per_batch, b"labels")))
        names = {b"label_names": [f"class{i}".encode() for i in range(10)]}
        (folder / "batches.meta").write_bytes(pickle.dumps(names))
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        (folder / "train").write_bytes(pickle.dumps(batch(per_batch * 10, b"fine_labels")))
        (folder / "test").write_bytes(pickle.dumps(batch(per_batch * 5, b"fine_labels")))
        names = {b"fine_label_names": [f"class{i}".encode() for i in range(100)]}
        (folder / "meta").write_bytes(pickle.dumps(names))
    return folder
