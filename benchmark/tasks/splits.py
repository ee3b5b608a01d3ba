"""Deterministic train/validation/test splits, class subsets and normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from benchmark.errors import ConfigError
from benchmark.tasks.datasets import Dataset

__all__ = ["SplitData", "select_classes", "split_dataset", "stratified_split"]


@dataclass
class SplitData:
    """Normalised float32 tensors of the three splits, held in memory.

    The validation split chooses checkpoints and hyperparameters; the test split is read
    once per run, for the final figures.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: tuple[str, ...]
    # Original label of each remapped class, e.g. (0, 1, 7) for a three-class subset.
    original_classes: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held out) with ``fraction`` of each class held out.

    The result depends only on the labels, the fraction and the seed.
    """
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        count = int(round(len(members) * fraction))
        held_out.append(members[:count])
    held = np.sort(np.concatenate(held_out)) if held_out else np.array([], dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[held] = False
    return np.flatnonzero(mask), held


def select_classes(
    images: np.ndarray, labels: np.ndarray, classes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the samples of ``classes`` and remap their labels to 0..len(classes)-1."""
    lookup = np.full(int(labels.max(initial=0)) + 1, -1, dtype=np.int64)
    for new, old in enumerate(classes):
        if old < len(lookup):
            lookup[old] = new
    keep = np.isin(labels, np.asarray(classes))
    return images[keep], lookup[labels[keep]]


def split_dataset(
    dataset: Dataset,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    classes: Sequence[int] | None = None,
    train_limit: int | None = None,
) -> SplitData:
    """Split ``dataset`` into normalised train, validation and test tensors.

    A dataset with an official test set keeps it as the test split, and the validation
    split is ``val_fraction`` of its training images. Otherwise the test split is
    ``test_fraction`` of all images. Both are stratified and depend only on ``split_seed``,
    never on the run seed, so every method and seed is scored on the same test images.
    ``train_limit`` keeps a stratified subset of the training split (quick mode).
    """
    classes = _check_classes(classes, dataset)
    train_images, train_labels = dataset.train_images, dataset.train_labels
    test_images, test_labels = dataset.test_images, dataset.test_labels
    if classes is not None:
        train_images, train_labels = select_classes(train_images, train_labels, classes)
        if test_images is not None:
            test_images, test_labels = select_classes(test_images, test_labels, classes)

    if test_images is None:
        rest, test_idx = stratified_split(train_labels, test_fraction, split_seed)
        test_images, test_labels = train_images[test_idx], train_labels[test_idx]
        train_images, train_labels = train_images[rest], train_labels[rest]

    rest, val_idx = stratified_split(train_labels, val_fraction, split_seed + 1)
    val_images, val_labels = train_images[val_idx], train_labels[val_idx]
    train_images, train_labels = train_images[rest], train_labels[rest]

    if train_limit is not None and train_limit < len(np.unique(train_labels)):
        raise ConfigError(
            f"train_limit = {train_limit} keeps fewer training images than the "
            f"{len(np.unique(train_labels))} classes; raise it to at least one image per class"
        )
    if train_limit is not None and train_limit < len(train_labels):
        keep_fraction = train_limit / len(train_labels)
        _, keep = stratified_split(train_labels, keep_fraction, split_seed + 2)
        train_images, train_labels = train_images[keep], train_labels[keep]

    mean, std = _channel_stats(train_images)
    original = tuple(classes) if classes is not None else tuple(range(dataset.num_classes))
    names = tuple(dataset.class_names[c] for c in original)
    return SplitData(
        train_x=_normalise(train_images, mean, std),
        train_y=torch.from_numpy(np.ascontiguousarray(train_labels)),
        val_x=_normalise(val_images, mean, std),
        val_y=torch.from_numpy(np.ascontiguousarray(val_labels)),
        test_x=_normalise(test_images, mean, std),
        test_y=torch.from_numpy(np.ascontiguousarray(test_labels)),
        class_names=names,
        original_classes=original,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )


def _check_classes(classes: Sequence[int] | None, dataset: Dataset) -> list[int] | None:
    if classes is None:
        return None
    classes = list(classes)
    if len(classes) < 2:
        raise ConfigError(f"classes = {classes}: a class subset needs at least 2 classes")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"classes = {classes}: each class may appear once")
    bad = [c for c in classes if not (isinstance(c, int) and 0 <= c < dataset.num_classes)]
    if bad:
        raise ConfigError(
            f"classes = {classes}: {bad[0]!r} is not a class of {dataset.name}; "
            f"expected integers in 0..{dataset.num_classes - 1}"
        )
    return classes


def _channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Statistics of the training split only, so nothing leaks from validation or test.
    scaled = images.astype(np.float64) / 255.0
    mean = scaled.mean(axis=(0, 2, 3))
    std = scaled.std(axis=(0, 2, 3))
    return mean, np.maximum(std, 1e-6)


def _normalise(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    scaled = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return scaled.sub_(mean_t).div_(std_t).contiguous()
