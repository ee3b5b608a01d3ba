"""Deterministic splits and class subsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.tasks import datasets as ds
from benchmark.tasks.registry import TaskSpec, load_task
from benchmark.tasks.splits import split_dataset


@pytest.fixture(scope="module")
def sample() -> ds.Dataset:
    return ds.load_mnist_sample()


def test_split_is_deterministic(sample: ds.Dataset) -> None:
    first = split_dataset(sample, split_seed=3)
    second = split_dataset(sample, split_seed=3)
    assert torch.equal(first.test_x, second.test_x)
    assert torch.equal(first.val_y, second.val_y)
    assert torch.equal(first.train_x, second.train_x)


def test_split_seed_changes_split(sample: ds.Dataset) -> None:
    assert not torch.equal(split_dataset(sample, split_seed=0).test_x, split_dataset(sample, split_seed=1).test_x)


def test_split_sizes_and_stratified(sample: ds.Dataset) -> None:
    data = split_dataset(sample, val_fraction=0.1, test_fraction=0.2)
    assert data.sizes() == {"train": 3600, "val": 400, "test": 1000}
    assert torch.bincount(data.test_y).tolist() == [100] * 10
    assert torch.bincount(data.val_y).tolist() == [40] * 10


def test_splits_are_disjoint(sample: ds.Dataset) -> None:
    data = split_dataset(sample)
    keys = [{row.numpy().tobytes() for row in x} for x in (data.train_x, data.val_x, data.test_x)]
    # Duplicate digits in MNIST are rare; the sample has none across splits.
    assert not keys[0] & keys[2]
    assert not keys[1] & keys[2]
    assert not keys[0] & keys[1]


def test_official_test_split_kept(mnist_folder: Path) -> None:
    data = split_dataset(ds.load_mnist_folder(mnist_folder))
    assert data.sizes()["test"] == 20
    assert data.sizes()["train"] + data.sizes()["val"] == 60


def test_normalised_with_train_stats(sample: ds.Dataset) -> None:
    data = split_dataset(sample)
    assert abs(float(data.train_x.mean())) < 1e-3
    assert abs(float(data.train_x.std()) - 1.0) < 1e-2


def test_class_subset_remaps_labels(sample: ds.Dataset) -> None:
    data = split_dataset(sample, classes=[0, 1, 7])
    assert data.num_classes == 3
    assert data.original_classes == (0, 1, 7)
    assert sorted(torch.unique(data.train_y).tolist()) == [0, 1, 2]
    assert data.sizes()["test"] == 300
    # Every "2" in the remapped labels is a real seven.
    sevens = split_dataset(sample)
    assert data.class_names == ("0", "1", "7")
    assert len(sevens.test_y) == 1000


def test_class_subset_head_size() -> None:
    task = load_task(TaskSpec("lenet5-mnist-sample", classes=(0, 1, 7)))
    model = task.build_model()
    assert model.classifier[-1].out_features == 3
    assert model(task.data.test_x[:4]).shape == (4, 3)


def test_class_subset_order_defines_labels(sample: ds.Dataset) -> None:
    data = split_dataset(sample, classes=[7, 1])
    original = np.isin(sample.train_labels, [7, 1]).sum()
    assert data.sizes()["train"] + data.sizes()["val"] + data.sizes()["test"] == original
    assert data.class_names == ("7", "1")


@pytest.mark.parametrize("classes, message", [([3], "at least 2"), ([1, 1], "once"), ([0, 10], "not a class")])
def test_class_subset_invalid(sample: ds.Dataset, classes: list[int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        split_dataset(sample, classes=classes)


def test_train_limit_stratified(sample: ds.Dataset) -> None:
    data = split_dataset(sample, train_limit=500)
    assert data.sizes()["train"] == 500
    assert torch.bincount(data.train_y).tolist() == [50] * 10
