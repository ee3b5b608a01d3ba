"""Loaders for segmentation, detection and face-parsing datasets on disk.

Formats:

- Pascal VOC 2012 segmentation: ``JPEGImages/<id>.jpg``, palette PNG masks in
  ``SegmentationClass/<id>.png`` (0 background, 1..20 the classes, 255 void), and the image
  list ``ImageSets/Segmentation/<image_set>.txt``;
- Pascal VOC detection: ``Annotations/<id>.xml`` with one ``<object>`` per box and the list
  ``ImageSets/Main/<image_set>.txt``;
- COCO detection JSON: ``images``, ``annotations`` (``bbox`` = x, y, width, height in
  pixels) and ``categories``, with the images in a folder;
- face parsing as in LaPa: ``images/<id>.jpg`` and greyscale label maps ``labels/<id>.png``
  of the same size, 0 the background and 1..K-1 the face parts.

Every loader resizes images to ``size`` x ``size`` pixels (bilinear) and masks with nearest
neighbours, and scales boxes to match, so the splits are fixed-shape tensors. Non-square
images are stretched. Errors raise :class:`~benchmark.errors.DataError` naming the file.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from benchmark.errors import DataError

__all__ = [
    "IGNORE_LABEL",
    "LAPA_CLASSES",
    "VOC_CLASSES",
    "DenseDataset",
    "find_voc_root",
    "load_coco_detection",
    "load_face_parsing",
    "load_voc_detection",
    "load_voc_segmentation",
]

logger = logging.getLogger(__name__)

# Mask value of pixels that no metric or loss counts (VOC's object borders).
IGNORE_LABEL = 255

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

# LaPa's labels 1..10; label 0 is the background.
LAPA_CLASSES = (
    "skin",
    "left eyebrow",
    "right eyebrow",
    "left eye",
    "right eye",
    "nose",
    "upper lip",
    "inner mouth",
    "lower lip",
    "hair",
)


@dataclass
class DenseDataset:
    """Images with per-pixel labels, boxes, or both, resized to one square size.

    Mask value 0 is the background, ``k + 1`` is ``class_names[k]`` and
    :data:`IGNORE_LABEL` is void. Box class ``k`` is ``class_names[k]``.
    """

    name: str
    images: np.ndarray  # uint8 (N, C, S, S)
    masks: np.ndarray | None  # int64 (N, S, S)
    # One float32 array of shape (k, 5) per image: x1, y1, x2, y2 (exclusive), class index.
    boxes: list[np.ndarray] | None
    class_names: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.images)


# -- Pascal VOC ----------------------------------------------------------------------------


def find_voc_root(folder: Path) -> Path:
    """Return the VOC year folder (holding JPEGImages) inside or at ``folder``."""
    folder = Path(folder)
    for candidate in (
        folder,
        folder / "VOC2012",
        folder / "VOCdevkit" / "VOC2012",
        folder / "VOCdevkit" / "VOC2007",
    ):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DataError(
        f"{folder}: no VOC folder found; expected JPEGImages/ in it, "
        "in VOC2012/ or in VOCdevkit/VOC2012/"
    )


def load_voc_segmentation(
    folder: Path, image_set: str = "trainval", size: int = 128
) -> DenseDataset:
    """Load the VOC segmentation images listed in ``ImageSets/Segmentation/<image_set>.txt``."""
    root = find_voc_root(folder)
    ids = _read_image_list(root / "ImageSets" / "Segmentation" / f"{image_set}.txt")
    images, masks = [], []
    allowed = np.zeros(256, dtype=bool)
    allowed[: len(VOC_CLASSES) + 1] = True
    allowed[IGNORE_LABEL] = True
    for image_id in ids:
        image = _open_image(root / "JPEGImages" / f"{image_id}.jpg", "RGB")
        mask_path = root / "SegmentationClass" / f"{image_id}.png"
        labels = _open_label_map(mask_path, image.size)
        bad = np.unique(labels[~allowed[labels]])
        if bad.size:
            raise DataError(
                f"{mask_path}: class index {int(bad[0])} is not a VOC label; "
                f"expected 0..{len(VOC_CLASSES)} or 255"
            )
        images.append(_resize_image(image, size))
        masks.append(_resize_labels(labels, size))
    return DenseDataset(
        "voc-segmentation",
        np.stack(images),
        np.stack(masks).astype(np.int64),
        None,
        VOC_CLASSES,
        str(root),
    )


def load_voc_detection(
    folder: Path, image_set: str = "trainval", size: int = 128, keep_difficult: bool = False
) -> DenseDataset:
    """Load the VOC detection images listed in ``ImageSets/Main/<image_set>.txt``.

    VOC coordinates are 1-based and inclusive, so ``xmin`` becomes ``xmin - 1`` and ``xmax``
    stays as the exclusive edge. Objects marked difficult are dropped unless
    ``keep_difficult``, since VOC's evaluation ignores them.
    """
    root = find_voc_root(folder)
    ids = _read_image_list(root / "ImageSets" / "Main" / f"{image_set}.txt")
    images, boxes = [], []
    for image_id in ids:
        image = _open_image(root / "JPEGImages" / f"{image_id}.jpg", "RGB")
        objects = parse_voc_annotation(root / "Annotations" / f"{image_id}.xml", keep_difficult)
        images.append(_resize_image(image, size))
        boxes.append(_scale_boxes(objects, image.size, size))
    return DenseDataset("voc-detection", np.stack(images), None, boxes, VOC_CLASSES, str(root))


def parse_voc_annotation(path: Path, keep_difficult: bool = False) -> np.ndarray:
    """Return the boxes of one VOC XML file as float32 (k, 5): x1, y1, x2, y2, class index."""
    try:
        tree = ElementTree.parse(path)
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except ElementTree.ParseError as error:
        raise DataError(f"{path}: invalid XML ({error})") from error

    rows = []
    for number, obj in enumerate(tree.getroot().iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise DataError(f"{path}: object {number} has class {name!r}, which is not a VOC class")
        if not keep_difficult and (obj.findtext("difficult") or "0").strip() == "1":
            continue
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{path}: object {number} ({name}) has no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (
                float(box.findtext(key) or "") for key in ("xmin", "ymin", "xmax", "ymax")
            )
        except ValueError:
            raise DataError(
                f"{path}: object {number} ({name}) has a missing or non-numeric box coordinate"
            ) from None
        if xmax < xmin or ymax < ymin:
            raise DataError(f"{path}: object {number} ({name}) has xmax < xmin or ymax < ymin")
        rows.append([xmin - 1, ymin - 1, xmax, ymax, VOC_CLASSES.index(name)])
    return np.asarray(rows, dtype=np.float32).reshape(-1, 5)


# -- COCO ----------------------------------------------------------------------------------


def load_coco_detection(annotation_file: Path, image_dir: Path, size: int = 128) -> DenseDataset:
    """Load a COCO-format detection JSON and its images.

    Categories are renumbered 0..K-1 in ascending order of their ids. Crowd annotations
    (``iscrowd = 1``) are dropped, and images without annotations are kept as negatives.
    """
    annotation_file = Path(annotation_file)
    document = _read_json(annotation_file)
    categories = _coco_list(document, "categories", annotation_file)
    try:
        by_id = {int(c["id"]): str(c["name"]) for c in categories}
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(
            f"{annotation_file}: each category needs an integer id and a name ({error})"
        ) from None
    category_ids = sorted(by_id)
    category_index = {cid: k for k, cid in enumerate(category_ids)}

    entries = _coco_list(document, "images", annotation_file)
    try:
        image_files = {int(entry["id"]): str(entry["file_name"]) for entry in entries}
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(
            f"{annotation_file}: each image needs an integer id and a file_name ({error})"
        ) from None
    rows: dict[int, list[list[float]]] = {image_id: [] for image_id in image_files}
    for number, annotation in enumerate(_coco_list(document, "annotations", annotation_file)):
        parsed = _parse_coco_annotation(annotation, number, annotation_file, rows, category_index)
        if parsed is not None:
            rows[parsed[0]].append(parsed[1])

    images, boxes = [], []
    for image_id, file_name in image_files.items():
        image = _open_image(Path(image_dir) / file_name, "RGB")
        objects = np.asarray(rows[image_id], dtype=np.float32).reshape(-1, 5)
        images.append(_resize_image(image, size))
        boxes.append(_scale_boxes(objects, image.size, size))
    if not images:
        raise DataError(f"{annotation_file}: the 'images' list is empty")
    names = tuple(by_id[cid] for cid in category_ids)
    return DenseDataset(
        "coco-detection", np.stack(images), None, boxes, names, str(annotation_file)
    )


def _parse_coco_annotation(
    annotation: Any, number: int, path: Path, images: dict[int, Any], categories: dict[int, int]
) -> tuple[int, list[float]] | None:
    where = f"{path}: annotations[{number}]"
    try:
        image_id, category_id = int(annotation["image_id"]), int(annotation["category_id"])
        x, y, width, height = (float(v) for v in annotation["bbox"])
    except (KeyError, TypeError, ValueError):
        raise DataError(
            f"{where}: expected image_id, category_id and bbox = [x, y, width, height]"
        ) from None
    if image_id not in images:
        raise DataError(f"{where}: image_id {image_id} is not in the 'images' list")
    if category_id not in categories:
        raise DataError(f"{where}: category_id {category_id} is not in the 'categories' list")
    if width < 0 or height < 0:
        raise DataError(f"{where}: bbox has a negative width or height: {annotation['bbox']}")
    if annotation.get("iscrowd", 0):
        return None
    return image_id, [x, y, x + width, y + height, categories[category_id]]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: invalid JSON ({error})") from error
    if not isinstance(document, dict):
        raise DataError(f"{path}: expected a JSON object with images, annotations and categories")
    return document


def _coco_list(document: dict[str, Any], key: str, path: Path) -> list[Any]:
    value = document.get(key)
    if not isinstance(value, list):
        raise DataError(
            f"{path}: missing list {key!r}; a COCO detection file needs images, "
            "annotations and categories"
        )
    return value


# -- face parsing --------------------------------------------------------------------------


def load_face_parsing(
    folder: Path,
    size: int = 128,
    class_names: Sequence[str] = LAPA_CLASSES,
    image_dir: str = "images",
    label_dir: str = "labels",
) -> DenseDataset:
    """Load face images and their label maps (LaPa layout; CelebAMask-HQ once merged).

    ``class_names`` names labels 1..K; a label map holding a value above K is rejected.
    """
    folder = Path(folder)
    images_folder, labels_folder = folder / image_dir, folder / label_dir
    for path in (images_folder, labels_folder):
        if not path.is_dir():
            raise DataError(
                f"{path}: folder not found; a face-parsing dataset needs "
                f"{image_dir}/ and {label_dir}/"
            )
    files = sorted(
        p for p in images_folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )
    if not files:
        raise DataError(f"{images_folder}: no .jpg or .png images")

    images, masks = [], []
    for path in files:
        image = _open_image(path, "RGB")
        label_path = labels_folder / f"{path.stem}.png"
        labels = _open_label_map(label_path, image.size)
        if labels.max(initial=0) > len(class_names):
            raise DataError(
                f"{label_path}: label {int(labels.max())} is out of range; "
                f"expected 0..{len(class_names)}"
            )
        images.append(_resize_image(image, size))
        masks.append(_resize_labels(labels, size))
    return DenseDataset(
        "face-parsing",
        np.stack(images),
        np.stack(masks).astype(np.int64),
        None,
        tuple(class_names),
        str(folder),
    )


# -- shared helpers ------------------------------------------------------------------------


def _read_image_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").split()
    except FileNotFoundError:
        raise DataError(f"{path}: image list not found") from None
    if not lines:
        raise DataError(f"{path}: the image list is empty")
    return lines


def _open_image(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert(mode)
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: cannot decode the image ({error})") from error


def _open_label_map(path: Path, expected_size: tuple[int, int]) -> np.ndarray:
    """Read a palette or greyscale PNG of class indices as int64 (H, W)."""
    try:
        with Image.open(path) as image:
            image.load()
            mode, labels = image.mode, np.asarray(image)
    except FileNotFoundError:
        raise DataError(f"{path}: label map not found") from None
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: cannot decode the label map ({error})") from error
    if mode not in ("P", "L"):
        raise DataError(
            f"{path}: label map has mode {mode}; expected a palette (P) or greyscale (L) "
            "PNG of class indices"
        )
    if labels.shape[::-1] != tuple(expected_size):
        raise DataError(
            f"{path}: label map is {labels.shape[1]}x{labels.shape[0]} but its image is "
            f"{expected_size[0]}x{expected_size[1]}"
        )
    return labels.astype(np.int64)


def _resize_image(image: Image.Image, size: int) -> np.ndarray:
    resized = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    return resized.reshape(size, size, -1).transpose(2, 0, 1)


def _resize_labels(labels: np.ndarray, size: int) -> np.ndarray:
    # Nearest neighbour, so no label is ever blended with another.
    return np.asarray(Image.fromarray(labels.astype(np.uint8)).resize((size, size), Image.NEAREST))


def _scale_boxes(boxes: np.ndarray, image_size: tuple[int, int], size: int) -> np.ndarray:
    width, height = image_size
    scaled = boxes.copy()
    scaled[:, [0, 2]] = np.clip(scaled[:, [0, 2]] * (size / width), 0, size)
    scaled[:, [1, 3]] = np.clip(scaled[:, [1, 3]] * (size / height), 0, size)
    return scaled
