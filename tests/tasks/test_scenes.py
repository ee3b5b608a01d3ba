"""Digit scenes: determinism, masks against boxes, class subsets and the task splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.errors import ConfigError, DataError
from benchmark.tasks.datasets import load_mnist_sample
from benchmark.tasks.dense_tasks import split_scenes
from benchmark.tasks.scenes import SceneConfig, make_scenes


@pytest.fixture(scope="module")
def pool():
    return load_mnist_sample()


def _scenes(pool, seed: int, count: int = 40, **options):
    return make_scenes(pool.train_images, pool.train_labels, count, seed=seed, **options)


def test_same_seed_same_scenes(pool) -> None:
    first, second = _scenes(pool, 3), _scenes(pool, 3)
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.masks, second.masks)
    assert all(np.array_equal(a, b) for a, b in zip(first.boxes, second.boxes, strict=True))
    assert first.sources == second.sources


def test_other_seed_other_scenes(pool) -> None:
    assert not np.array_equal(_scenes(pool, 3).images, _scenes(pool, 4).images)


def test_scene_shapes_and_counts(pool) -> None:
    scenes = _scenes(pool, 0, count=60)
    assert scenes.images.shape == (60, 1, 64, 64)
    assert scenes.images.dtype == np.uint8
    assert scenes.masks.shape == (60, 64, 64)
    counts = [len(boxes) for boxes in scenes.boxes]
    assert min(counts) >= 1
    assert max(counts) <= 4
    assert len(set(counts)) > 1


def test_boxes_enclose_their_mask_pixels(pool) -> None:
    scenes = _scenes(pool, 1)
    for mask, boxes, sources in zip(scenes.masks, scenes.boxes, scenes.sources, strict=True):
        covered = np.zeros_like(mask, dtype=bool)
        for x1, y1, x2, y2, label in boxes.astype(int):
            assert 0 <= x1 < x2 <= 64
            assert 0 <= y1 < y2 <= 64
            covered[y1:y2, x1:x2] = True
            assert (mask[y1:y2, x1:x2] == label + 1).any()
        assert not (mask[~covered] > 0).any()
        assert [int(pool.train_labels[s]) for s in sources] == [int(b[4]) for b in boxes]


def test_mask_pixels_are_ink(pool) -> None:
    scenes = _scenes(pool, 2)
    assert (scenes.images[:, 0][scenes.masks > 0] >= 96).all()


def test_class_subset_remaps_labels(pool) -> None:
    scenes = _scenes(pool, 5, classes=[7, 2])
    digits = {int(pool.train_labels[s]) for sources in scenes.sources for s in sources}
    assert digits == {7, 2}
    labels = {int(b[4]) for boxes in scenes.boxes for b in boxes}
    assert labels == {0, 1}
    assert set(np.unique(scenes.masks)) == {0, 1, 2}
    for boxes, sources in zip(scenes.boxes, scenes.sources, strict=True):
        for box, source in zip(boxes, sources, strict=True):
            assert int(box[4]) == [7, 2].index(int(pool.train_labels[source]))


def test_invalid_scene_config_rejected() -> None:
    with pytest.raises(ConfigError, match="min_objects"):
        SceneConfig(min_objects=3, max_objects=2)
    with pytest.raises(ConfigError, match="sides"):
        SceneConfig(min_scale=40, max_scale=80)


def test_empty_subset_pool_rejected(pool) -> None:
    with pytest.raises(DataError, match="no digits"):
        make_scenes(pool.train_images[:10], np.zeros(10, dtype=np.int64), 2, seed=0, classes=[3, 4])


def test_split_scenes_deterministic(pool) -> None:
    first = split_scenes(pool, kind="detection", train_limit=50, scene_count=200)
    second = split_scenes(pool, kind="detection", train_limit=50, scene_count=200)
    assert first.sizes() == {"train": 50, "val": 16, "test": 40}
    assert torch.equal(first.train_x, second.train_x)
    assert torch.equal(first.test_y, second.test_y)
    assert first.train_y.shape == (50, 4, 5)
    assert first.class_names == tuple(str(d) for d in range(10))


def test_split_scenes_segmentation_targets(pool) -> None:
    data = split_scenes(pool, kind="segmentation", classes=[1, 8], scene_count=100)
    assert data.class_names == ("background", "1", "8")
    assert data.original_classes == (0, 2, 9)
    assert data.train_y.dtype == torch.int64
    assert set(torch.unique(data.train_y).tolist()) == {0, 1, 2}


def test_split_scenes_draws_from_disjoint_digits(pool, monkeypatch) -> None:
    drawn: list[set[bytes]] = []
    original = make_scenes

    def recording(images, labels, count, **options):
        drawn.append({image.tobytes() for image in images})
        return original(images, labels, count, **options)

    monkeypatch.setattr("benchmark.tasks.dense_tasks.make_scenes", recording)
    split_scenes(pool, kind="segmentation", scene_count=20)
    train, val, test = drawn
    assert not train & test
    assert not val & test
