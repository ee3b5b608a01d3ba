"""Segmentation, detection and face-parsing tasks, registered into the task registry.

Importing this module adds its datasets to ``DATASETS`` and its tasks to ``TASKS``;
``benchmark.tasks`` imports it. Every task goes through the same harness as the
classification tasks, with fixed-shape targets so the loop can index them:

- segmentation and face parsing: int64 label maps (N, H, W), 0 the background and
  :data:`~benchmark.tasks.dense_formats.IGNORE_LABEL` void; the model has one output
  channel per class, background included;
- detection: float32 boxes (N, M, 5) = x1, y1, x2, y2, class, padded with rows of class -1
  up to the largest box count of the dataset.

The class-subset option (``classes`` in a suite) keeps the listed object classes,
renumbered in that order. For digit scenes only digits of those classes are pasted. For
datasets on disk the other classes become background (segmentation) or are dropped
(detection), and images left without any listed class are dropped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmark.errors import ConfigError, DataError
from benchmark.tasks import datasets as ds
from benchmark.tasks.dense_formats import (
    IGNORE_LABEL,
    DenseDataset,
    load_coco_detection,
    load_face_parsing,
    load_voc_detection,
    load_voc_segmentation,
)
from benchmark.tasks.dense_metrics import DetectionAP, SegmentationIoU
from benchmark.tasks.dense_models import DENSE_MODELS, GridDetector, encode_grid_targets
from benchmark.tasks.registry import DATASETS, TASKS, DatasetSource, Task, TaskDefinition
from benchmark.tasks.scenes import SceneConfig, make_scenes
from benchmark.tasks.splits import SplitData, _channel_stats, _normalise, stratified_split

__all__ = [
    "BACKGROUND",
    "DENSE_TASKS",
    "SCENE_COUNT",
    "detection_loss",
    "pad_boxes",
    "segmentation_loss",
    "split_dense",
    "split_scenes",
]

# Name of class 0 of segmentation tasks; reports count the other classes as categories.
BACKGROUND = "background"

# Scenes drawn per task before the split fractions apply: 400 test, 160 validation and
# 1,440 training scenes with the default fractions, so an epoch of the default models takes
# seconds on one CPU core.
SCENE_COUNT = 2000

# Side of the images of datasets on disk after resizing, in pixels.
DISK_IMAGE_SIZE = 128

SEGMENTATION, DETECTION, FACE_PARSING = "segmentation", "detection", "face_parsing"


# -- losses and metrics --------------------------------------------------------------------


def segmentation_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Return the pixel-wise cross-entropy, skipping void pixels."""
    return nn.functional.cross_entropy(outputs, targets, ignore_index=IGNORE_LABEL)


def detection_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Return the grid detector's loss, summed per image and averaged over the batch.

    ``BCE(objectness)`` on cells with a box, plus 0.5 times it on empty cells, plus
    5 times (``BCE`` of the centre offsets and smooth-L1 of the log sizes) and the class
    cross-entropy on cells with a box. The weights 5 and 0.5 are YOLO's (Redmon et al.,
    CVPR 2016).
    """
    n, _, gh, gw = outputs.shape
    grid = encode_grid_targets(targets, (gh, gw), GridDetector.stride)
    positive = grid.positive
    objectness = nn.functional.binary_cross_entropy_with_logits(
        outputs[:, 0], positive.float(), reduction="none"
    )
    object_loss = objectness[positive].sum() + 0.5 * objectness[~positive].sum()

    cells = positive.unsqueeze(1).expand(-1, 2, -1, -1)
    offset_loss = nn.functional.binary_cross_entropy_with_logits(
        outputs[:, 1:3][cells], grid.offsets[cells], reduction="sum"
    )
    size_loss = nn.functional.smooth_l1_loss(
        outputs[:, 3:5][cells], grid.log_sizes[cells], reduction="sum"
    )
    class_logits = outputs[:, 5:].permute(0, 2, 3, 1)[positive]
    class_loss = nn.functional.cross_entropy(class_logits, grid.classes[positive], reduction="sum")
    return (object_loss + 5.0 * (offset_loss + size_loss) + class_loss) / n


def _segmentation_metric(task: Task) -> SegmentationIoU:
    return SegmentationIoU(task.num_classes, task.data.class_names)


def _detection_metric(task: Task) -> DetectionAP:
    return DetectionAP(task.num_classes, GridDetector.stride, task.data.class_names)


# -- splits --------------------------------------------------------------------------------


def split_scenes(
    pool: ds.Dataset,
    *,
    kind: str,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    classes: Sequence[int] | None = None,
    train_limit: int | None = None,
    config: SceneConfig = SceneConfig(),  # noqa: B008 (frozen, so sharing the default is safe)
    scene_count: int = SCENE_COUNT,
) -> SplitData:
    """Split the digit pool, then draw the scenes of each split from its own digits.

    The digits are split first (stratified by class, by ``split_seed`` only), so no test
    scene reuses a training digit, and the scenes of a class subset draw from the same digits.
    """
    classes = _check_subset(classes, pool.num_classes, pool.name)
    rest, test_idx = stratified_split(pool.train_labels, test_fraction, split_seed)
    train_pool, val_idx = stratified_split(pool.train_labels[rest], val_fraction, split_seed + 1)
    pools = {"train": rest[train_pool], "val": rest[val_idx], "test": test_idx}

    test_count = int(round(scene_count * test_fraction))
    val_count = int(round((scene_count - test_count) * val_fraction))
    counts = {"train": scene_count - test_count - val_count, "val": val_count, "test": test_count}
    if train_limit is not None:
        counts["train"] = min(counts["train"], train_limit)

    parts = {}
    for offset, (split, indices) in enumerate(pools.items()):
        scenes = make_scenes(
            pool.train_images[indices],
            pool.train_labels[indices],
            counts[split],
            seed=split_seed * 1000 + offset,
            config=config,
            classes=classes,
        )
        parts[split] = DenseDataset(
            pool.name, scenes.images, scenes.masks, scenes.boxes, (), pool.source
        )
    chosen_classes = tuple(classes or range(pool.num_classes))
    names = tuple(pool.class_names[c] for c in chosen_classes)
    return _to_split_data(parts, kind, names, chosen_classes, max_boxes=config.max_objects)


def split_dense(
    dataset: DenseDataset,
    *,
    kind: str,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    classes: Sequence[int] | None = None,
    train_limit: int | None = None,
) -> SplitData:
    """Split a dataset on disk at random into train, validation and test by ``split_seed``."""
    classes = _check_subset(classes, len(dataset.class_names), dataset.name)
    chosen_classes = tuple(classes or range(len(dataset.class_names)))
    if classes is not None:
        dataset = _keep_classes(dataset, classes, kind)
    if len(dataset) < 3:
        raise DataError(f"{dataset.source}: {len(dataset)} usable images; a split needs at least 3")

    order = np.random.default_rng(split_seed).permutation(len(dataset))
    test_count = max(1, int(round(len(order) * test_fraction)))
    val_count = max(1, int(round((len(order) - test_count) * val_fraction)))
    chosen = {
        "test": order[:test_count],
        "val": order[test_count : test_count + val_count],
        "train": order[test_count + val_count :][:train_limit],
    }
    parts = {split: _subset(dataset, np.sort(indices)) for split, indices in chosen.items()}
    box_count = max((len(b) for b in dataset.boxes or []), default=1)
    return _to_split_data(
        parts, kind, dataset.class_names, chosen_classes, max_boxes=max(1, box_count)
    )


def _check_subset(classes: Sequence[int] | None, num_classes: int, name: str) -> list[int] | None:
    if classes is None:
        return None
    classes = [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad or len(set(classes)) != len(classes) or len(classes) < 2:
        raise ConfigError(
            f"classes = {classes} is invalid for {name}; expected at least 2 distinct "
            f"indices in 0..{num_classes - 1}"
        )
    return classes


def _keep_classes(dataset: DenseDataset, classes: list[int], kind: str) -> DenseDataset:
    names = tuple(dataset.class_names[c] for c in classes)
    if kind == DETECTION:
        lookup = np.full(len(dataset.class_names), -1, dtype=np.int64)
        lookup[classes] = np.arange(len(classes))
        boxes = []
        for rows in dataset.boxes or []:
            kept = rows[lookup[rows[:, 4].astype(np.int64)] >= 0].copy()
            kept[:, 4] = lookup[kept[:, 4].astype(np.int64)]
            boxes.append(kept)
        keep = np.array([len(rows) > 0 for rows in boxes], dtype=bool)
        return DenseDataset(
            dataset.name,
            dataset.images[keep],
            None,
            [b for b, k in zip(boxes, keep, strict=True) if k],
            names,
            dataset.source,
        )

    lookup = np.zeros(256, dtype=np.int64)  # unlisted classes become background
    lookup[IGNORE_LABEL] = IGNORE_LABEL
    for new, old in enumerate(classes):
        lookup[old + 1] = new + 1
    masks = lookup[dataset.masks]
    keep = ((masks > 0) & (masks != IGNORE_LABEL)).any(axis=(1, 2))
    return DenseDataset(
        dataset.name, dataset.images[keep], masks[keep], None, names, dataset.source
    )


def _subset(dataset: DenseDataset, indices: np.ndarray) -> DenseDataset:
    return DenseDataset(
        dataset.name,
        dataset.images[indices],
        None if dataset.masks is None else dataset.masks[indices],
        None if dataset.boxes is None else [dataset.boxes[i] for i in indices],
        dataset.class_names,
        dataset.source,
    )


def pad_boxes(boxes: Sequence[np.ndarray], max_boxes: int) -> torch.Tensor:
    """Stack per-image boxes (k, 5) into (N, max_boxes, 5), padding with class -1 rows."""
    padded = np.zeros((len(boxes), max_boxes, 5), dtype=np.float32)
    padded[:, :, 4] = -1
    for i, rows in enumerate(boxes):
        if len(rows) > max_boxes:
            raise DataError(
                f"image {i} has {len(rows)} boxes, more than the padding of {max_boxes}"
            )
        padded[i, : len(rows)] = rows
    return torch.from_numpy(padded)


def _to_split_data(
    parts: dict[str, DenseDataset],
    kind: str,
    names: tuple[str, ...],
    object_classes: tuple[int, ...],
    max_boxes: int,
) -> SplitData:
    """Build the normalised splits; ``object_classes`` are the kept classes' original indices."""
    if len(parts["train"]) == 0:
        raise DataError(f"{parts['train'].source}: the training split is empty")
    mean, std = _channel_stats(parts["train"].images)

    def targets(part: DenseDataset) -> torch.Tensor:
        if kind == DETECTION:
            return pad_boxes(part.boxes or [], max_boxes)
        return torch.from_numpy(np.ascontiguousarray(part.masks, dtype=np.int64))

    if kind == DETECTION:
        class_names, original = names, object_classes
    else:
        # Original mask labels: 0 for the background, then 1 + the original class index.
        class_names = (BACKGROUND, *names)
        original = (0, *(c + 1 for c in object_classes))
    return SplitData(
        train_x=_normalise(parts["train"].images, mean, std),
        train_y=targets(parts["train"]),
        val_x=_normalise(parts["val"].images, mean, std),
        val_y=targets(parts["val"]),
        test_x=_normalise(parts["test"].images, mean, std),
        test_y=targets(parts["test"]),
        class_names=class_names,
        original_classes=original,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )


# -- registration --------------------------------------------------------------------------


def _needs_dir(
    name: str, loader: Callable[[Path], DenseDataset]
) -> Callable[[Path | None], DenseDataset]:
    def load(data_dir: Path | None) -> DenseDataset:
        if data_dir is None:
            raise DataError(
                f"dataset {name!r} needs data_dir in the task; "
                "docs/dense-tasks.md describes the folder layout"
            )
        return loader(Path(data_dir))

    return load


def _load_coco_folder(folder: Path) -> DenseDataset:
    return load_coco_detection(folder / "annotations.json", folder / "images", DISK_IMAGE_SIZE)


DENSE_DATASETS = (
    DatasetSource(
        "digit-scenes",
        lambda d: ds.load_mnist_sample(None if d is None else Path(d) / "mnist_5k.csv.gz"),
        False,
        "64x64 scenes of 1-4 digits from the embedded MNIST sample (offline default)",
    ),
    DatasetSource(
        "voc-segmentation",
        _needs_dir(
            "voc-segmentation", lambda d: load_voc_segmentation(d, "trainval", DISK_IMAGE_SIZE)
        ),
        True,
        "Pascal VOC 2012 segmentation (trainval) in data_dir",
    ),
    DatasetSource(
        "voc-detection",
        _needs_dir("voc-detection", lambda d: load_voc_detection(d, "trainval", DISK_IMAGE_SIZE)),
        True,
        "Pascal VOC detection XML (trainval) in data_dir",
    ),
    DatasetSource(
        "coco-detection",
        _needs_dir("coco-detection", _load_coco_folder),
        True,
        "COCO-format detection: data_dir/annotations.json and data_dir/images/",
    ),
    DatasetSource(
        "face-parsing",
        _needs_dir("face-parsing", lambda d: load_face_parsing(d, DISK_IMAGE_SIZE)),
        True,
        "face parsing in LaPa layout: data_dir/images/ and data_dir/labels/",
    ),
)

_KIND_HOOKS = {
    SEGMENTATION: {
        "metric": "miou",
        "metric_factory": _segmentation_metric,
        "loss_fn": segmentation_loss,
    },
    FACE_PARSING: {
        "metric": "miou",
        "metric_factory": _segmentation_metric,
        "loss_fn": segmentation_loss,
    },
    DETECTION: {"metric": "map50", "metric_factory": _detection_metric, "loss_fn": detection_loss},
}


def _definition(
    name: str, dataset: str, model: str, kind: str, **options: object
) -> TaskDefinition:
    splitter = split_scenes if dataset == "digit-scenes" else split_dense
    # Face parsing is segmentation of face parts; the splits and targets are the same.
    target_kind = DETECTION if kind == DETECTION else SEGMENTATION
    return TaskDefinition(
        name,
        dataset,
        model,
        kind=kind,
        split_data=functools.partial(splitter, kind=target_kind),
        model_factory=DENSE_MODELS[model].factory,
        **_KIND_HOOKS[kind],
        **options,
    )


# 33.3 ms: one frame at 30 frames per second, the real-time target of face parsing.
_REAL_TIME_MS = 33.3

DENSE_TASKS = (
    _definition("segnet-digit-scenes", "digit-scenes", "segnet", SEGMENTATION),
    _definition("hourglass-digit-scenes", "digit-scenes", "hourglass", SEGMENTATION),
    _definition("griddet-digit-scenes", "digit-scenes", "griddet", DETECTION),
    _definition("segnet-voc", "voc-segmentation", "segnet", SEGMENTATION),
    _definition("griddet-voc", "voc-detection", "griddet", DETECTION),
    _definition("griddet-coco", "coco-detection", "griddet", DETECTION),
    _definition(
        "hourglass-face-parsing",
        "face-parsing",
        "hourglass",
        FACE_PARSING,
        latency_budget_ms=_REAL_TIME_MS,
    ),
)


def _register() -> None:
    for source in DENSE_DATASETS:
        DATASETS.setdefault(source.name, source)
    for definition in DENSE_TASKS:
        TASKS.setdefault(definition.name, definition)


_register()
