"""Loaders of VOC segmentation, VOC detection, COCO JSON and face parsing, on written fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.errors import DataError
from benchmark.tasks.dense_formats import (
    IGNORE_LABEL,
    VOC_CLASSES,
    load_coco_detection,
    load_face_parsing,
    load_voc_detection,
    load_voc_segmentation,
)
from benchmark.tasks.dense_tasks import split_dense
from benchmark.tasks.registry import TaskSpec, load_task

# -- fixture writers -----------------------------------------------------------------------


def _write_jpeg(path: Path, width: int = 40, height: int = 30, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def _write_palette_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette([value for i in range(256) for value in (i, 255 - i, (7 * i) % 256)])
    image.save(path)


def _voc_labels(seed: int, width: int = 40, height: int = 30) -> np.ndarray:
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[5:20, 5:25] = 1 + seed % 20  # one object
    labels[5:20, 4] = IGNORE_LABEL  # its void border
    labels[22:28, 30:38] = 15  # a person
    return labels


def write_voc_segmentation(root: Path, count: int = 3) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    ids = [f"2007_{i:06d}" for i in range(count)]
    for i, image_id in enumerate(ids):
        _write_jpeg(voc / "JPEGImages" / f"{image_id}.jpg", seed=i)
        _write_palette_png(voc / "SegmentationClass" / f"{image_id}.png", _voc_labels(i))
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "trainval.txt").write_text("\n".join(ids) + "\n")
    return voc


VOC_XML = """<annotation>
  <filename>{image_id}.jpg</filename>
  <size><width>40</width><height>30</height><depth>3</depth></size>
  <object><name>dog</name><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax><ymax>15</ymax></bndbox></object>
  <object><name>person</name><difficult>1</difficult>
    <bndbox><xmin>21</xmin><ymin>2</ymin><xmax>30</xmax><ymax>28</ymax></bndbox></object>
  <object><name>car</name><difficult>0</difficult>
    <bndbox><xmin>11</xmin><ymin>16</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object>
</annotation>
"""


def write_voc_detection(root: Path, count: int = 3) -> Path:
    voc = root / "VOC2012"
    ids = [f"2008_{i:06d}" for i in range(count)]
    (voc / "Annotations").mkdir(parents=True)
    for i, image_id in enumerate(ids):
        _write_jpeg(voc / "JPEGImages" / f"{image_id}.jpg", seed=i)
        (voc / "Annotations" / f"{image_id}.xml").write_text(VOC_XML.format(image_id=image_id))
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    return voc


def coco_document() -> dict:
    return {
        "images": [
            {"id": 10, "file_name": "a.jpg", "width": 40, "height": 30},
            {"id": 11, "file_name": "b.jpg", "width": 40, "height": 30},
            {"id": 12, "file_name": "c.jpg", "width": 40, "height": 30},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 18, "bbox": [4, 3, 10, 6], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [20, 10, 20, 20], "iscrowd": 0},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [0, 0, 40, 30], "iscrowd": 1},
            {"id": 4, "image_id": 12, "category_id": 18, "bbox": [2, 2, 8, 8]},
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
    }


def write_coco(root: Path, document: dict | None = None) -> tuple[Path, Path]:
    images = root / "images"
    for i, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):
        _write_jpeg(images / name, seed=i)
    annotation_file = root / "annotations.json"
    annotation_file.write_text(json.dumps(document or coco_document()))
    return annotation_file, images


def write_face_parsing(root: Path, count: int = 3) -> Path:
    for i in range(count):
        _write_jpeg(root / "images" / f"face_{i}.jpg", seed=i)
        labels = np.zeros((30, 40), dtype=np.uint8)
        labels[5:25, 10:30] = 1  # skin
        labels[10:12, 14:18] = 4  # left eye
        labels[0:5, :] = 10  # hair
        (root / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels, mode="L").save(root / "labels" / f"face_{i}.png")
    return root


# -- Pascal VOC segmentation ---------------------------------------------------------------


def test_voc_segmentation_loads(tmp_path: Path) -> None:
    write_voc_segmentation(tmp_path)
    dataset = load_voc_segmentation(tmp_path, size=40)
    assert dataset.images.shape == (3, 3, 40, 40)
    assert dataset.masks.shape == (3, 40, 40)
    assert dataset.class_names == VOC_CLASSES
    assert set(np.unique(dataset.masks[1])) == {0, 2, 15, IGNORE_LABEL}


def test_voc_segmentation_rgb_mask_rejected(tmp_path: Path) -> None:
    voc = write_voc_segmentation(tmp_path)
    bad = voc / "SegmentationClass" / "2007_000001.png"
    Image.new("RGB", (40, 30)).save(bad)
    with pytest.raises(DataError, match=r"2007_000001\.png.*mode RGB"):
        load_voc_segmentation(tmp_path)


def test_voc_segmentation_unknown_class_rejected(tmp_path: Path) -> None:
    voc = write_voc_segmentation(tmp_path)
    labels = _voc_labels(0)
    labels[0, 0] = 30
    _write_palette_png(voc / "SegmentationClass" / "2007_000002.png", labels)
    with pytest.raises(DataError, match=r"2007_000002\.png: class index 30"):
        load_voc_segmentation(tmp_path)


def test_voc_segmentation_size_mismatch_rejected(tmp_path: Path) -> None:
    voc = write_voc_segmentation(tmp_path)
    _write_palette_png(voc / "SegmentationClass" / "2007_000000.png", np.zeros((10, 10)))
    with pytest.raises(DataError, match=r"2007_000000\.png: label map is 10x10"):
        load_voc_segmentation(tmp_path)


def test_voc_corrupt_jpeg_rejected(tmp_path: Path) -> None:
    voc = write_voc_segmentation(tmp_path)
    (voc / "JPEGImages" / "2007_000001.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"2007_000001\.jpg: cannot decode"):
        load_voc_segmentation(tmp_path)


def test_voc_missing_image_list_rejected(tmp_path: Path) -> None:
    voc = write_voc_segmentation(tmp_path)
    with pytest.raises(DataError, match=r"val\.txt: image list not found"):
        load_voc_segmentation(voc, image_set="val")


def test_voc_missing_folder_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no VOC folder"):
        load_voc_segmentation(tmp_path)


# -- Pascal VOC detection ------------------------------------------------------------------


def test_voc_detection_loads(tmp_path: Path) -> None:
    write_voc_detection(tmp_path)
    dataset = load_voc_detection(tmp_path, size=80)
    assert dataset.images.shape == (3, 3, 80, 80)
    boxes = dataset.boxes[0]
    # The difficult person is dropped; 1-based inclusive corners become 0-based exclusive,
    # then x scales by 80/40 and y by 80/30.
    assert boxes[:, 4].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("car")]
    assert np.allclose(boxes[0, :4], [0, 0, 40, 15 * 80 / 30])
    assert np.allclose(boxes[1, :4], [20, 15 * 80 / 30, 80, 80])


def test_voc_detection_keeps_difficult_on_request(tmp_path: Path) -> None:
    write_voc_detection(tmp_path)
    dataset = load_voc_detection(tmp_path, size=40, keep_difficult=True)
    assert len(dataset.boxes[0]) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<annotation><object>", "invalid XML"),
        (
            "<annotation><object><name>unicorn</name></object></annotation>",
            "'unicorn', which is not a VOC class",
        ),
        ("<annotation><object><name>dog</name></object></annotation>", "has no <bndbox>"),
        (
            "<annotation><object><name>dog</name><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>3</xmax>"
            "<ymax>4</ymax></bndbox></object></annotation>",
            "non-numeric box coordinate",
        ),
        (
            "<annotation><object><name>dog</name><bndbox><xmin>9</xmin><ymin>1</ymin><xmax>3</xmax>"
            "<ymax>4</ymax></bndbox></object></annotation>",
            "xmax < xmin",
        ),
    ],
    ids=["truncated", "unknown-class", "no-bndbox", "non-numeric", "inverted"],
)
def test_voc_detection_malformed_xml_rejected(tmp_path: Path, text: str, message: str) -> None:
    voc = write_voc_detection(tmp_path)
    (voc / "Annotations" / "2008_000001.xml").write_text(text)
    with pytest.raises(DataError, match=rf"2008_000001\.xml: .*{message}"):
        load_voc_detection(tmp_path)


def test_voc_detection_missing_annotation_rejected(tmp_path: Path) -> None:
    voc = write_voc_detection(tmp_path)
    (voc / "Annotations" / "2008_000002.xml").unlink()
    with pytest.raises(DataError, match=r"2008_000002\.xml: annotation file not found"):
        load_voc_detection(tmp_path)


# -- COCO ----------------------------------------------------------------------------------


def test_coco_loads_and_renumbers_categories(tmp_path: Path) -> None:
    annotation_file, images = write_coco(tmp_path)
    dataset = load_coco_detection(annotation_file, images, size=40)
    assert dataset.class_names == ("car", "dog")  # ascending category id: 3, 18
    assert dataset.images.shape == (3, 3, 40, 40)
    first = dataset.boxes[0]
    assert first[:, 4].tolist() == [1, 0]
    assert np.allclose(first[0, :4], [4, 3 * 40 / 30, 14, 9 * 40 / 30])
    assert len(dataset.boxes[1]) == 0  # the crowd box is dropped; the image stays


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("categories"), "missing list 'categories'"),
        (
            lambda d: d["annotations"][0].update(image_id=99),
            r"annotations\[0\]: image_id 99 is not",
        ),
        (
            lambda d: d["annotations"][1].update(category_id=5),
            r"annotations\[1\]: category_id 5 is not",
        ),
        (
            lambda d: d["annotations"][0].update(bbox=[1, 2, 3]),
            r"annotations\[0\]: expected image_id",
        ),
        (
            lambda d: d["annotations"][3].update(bbox=[1, 2, -3, 4]),
            r"annotations\[3\]: bbox has a negative",
        ),
        (
            lambda d: d["images"][0].pop("file_name"),
            "each image needs an integer id and a file_name",
        ),
    ],
    ids=[
        "no-categories",
        "unknown-image",
        "unknown-category",
        "short-bbox",
        "negative-bbox",
        "no-file-name",
    ],
)
def test_coco_malformed_document_rejected(tmp_path: Path, change, message: str) -> None:
    document = coco_document()
    change(document)
    annotation_file, images = write_coco(tmp_path, document)
    with pytest.raises(DataError, match=rf"annotations\.json: .*{message}"):
        load_coco_detection(annotation_file, images)


def test_coco_invalid_json_rejected(tmp_path: Path) -> None:
    annotation_file, images = write_coco(tmp_path)
    annotation_file.write_text('{"images": [')
    with pytest.raises(DataError, match=r"annotations\.json: invalid JSON"):
        load_coco_detection(annotation_file, images)


def test_coco_missing_image_rejected(tmp_path: Path) -> None:
    annotation_file, images = write_coco(tmp_path)
    (images / "b.jpg").unlink()
    with pytest.raises(DataError, match=r"b\.jpg: image not found"):
        load_coco_detection(annotation_file, images)


# -- face parsing --------------------------------------------------------------------------


def test_face_parsing_loads(tmp_path: Path) -> None:
    write_face_parsing(tmp_path)
    dataset = load_face_parsing(tmp_path, size=40)
    assert dataset.masks.shape == (3, 40, 40)
    assert set(np.unique(dataset.masks)) == {0, 1, 4, 10}
    assert dataset.class_names[3] == "left eye"  # label 4


def test_face_parsing_label_out_of_range_rejected(tmp_path: Path) -> None:
    write_face_parsing(tmp_path)
    Image.fromarray(np.full((30, 40), 11, dtype=np.uint8), mode="L").save(
        tmp_path / "labels" / "face_1.png"
    )
    with pytest.raises(DataError, match=r"face_1\.png: label 11 is out of range"):
        load_face_parsing(tmp_path)


def test_face_parsing_missing_label_rejected(tmp_path: Path) -> None:
    write_face_parsing(tmp_path)
    (tmp_path / "labels" / "face_2.png").unlink()
    with pytest.raises(DataError, match=r"face_2\.png: label map not found"):
        load_face_parsing(tmp_path)


def test_face_parsing_missing_folder_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"images: folder not found"):
        load_face_parsing(tmp_path)


# -- splits of datasets on disk ------------------------------------------------------------


def test_split_dense_segmentation_subset(tmp_path: Path) -> None:
    write_voc_segmentation(tmp_path, count=6)
    dataset = load_voc_segmentation(tmp_path, size=32)
    data = split_dense(dataset, kind="segmentation", classes=[14, 1], test_fraction=0.34)
    # Class 14 is the person (label 15), class 1 is the bicycle (label 2).
    assert data.class_names == ("background", "person", "bicycle")
    labels = set(torch.unique(torch.cat([data.train_y.flatten(), data.test_y.flatten()])).tolist())
    assert labels <= {0, 1, 2, IGNORE_LABEL}
    assert 2 in labels or 2 in set(torch.unique(data.val_y).tolist())


def test_split_dense_detection_subset(tmp_path: Path) -> None:
    document = coco_document()
    document["annotations"][2]["iscrowd"] = 0
    annotation_file, images = write_coco(tmp_path, document)
    dataset = load_coco_detection(annotation_file, images, size=40)
    data = split_dense(dataset, kind="detection", classes=[1, 0], test_fraction=0.34)
    assert data.class_names == ("dog", "car")
    assert data.original_classes == (1, 0)
    assert sum(len(split) for split in (data.train_y, data.val_y, data.test_y)) == 3
    assert data.train_y.shape[1:] == (2, 5)
    everything = torch.cat([data.train_y, data.val_y, data.test_y]).reshape(-1, 5)
    # Two dog boxes (images a and c) and two car boxes (a and b), renumbered dog 0, car 1.
    assert int((everything[:, 4] == 0).sum()) == 2
    assert int((everything[:, 4] == 1).sum()) == 2


def test_split_dense_too_few_images_rejected(tmp_path: Path) -> None:
    annotation_file, images = write_coco(tmp_path)
    dataset = load_coco_detection(annotation_file, images, size=40)
    # The image with only a crowd box has no listed class, which leaves 2 images.
    with pytest.raises(DataError, match="2 usable images"):
        split_dense(dataset, kind="detection", classes=[1, 0])


# -- the registered tasks on these fixtures ------------------------------------------------


@pytest.mark.parametrize(
    ("task_name", "writer"),
    [
        ("segnet-voc", lambda root: write_voc_segmentation(root, count=5)),
        ("griddet-voc", lambda root: write_voc_detection(root, count=5)),
        ("griddet-coco", write_coco),
        ("hourglass-face-parsing", lambda root: write_face_parsing(root, count=5)),
    ],
)
def test_disk_task_trains_one_step(tmp_path: Path, task_name: str, writer) -> None:
    writer(tmp_path)
    task = load_task(TaskSpec(task_name, data_dir=str(tmp_path)))
    assert task.input_shape == (3, 128, 128)
    model = task.build_model(width_mult=0.25)
    outputs = model(task.data.train_x)
    loss = task.loss(outputs, task.data.train_y)
    loss.backward()
    assert torch.isfinite(loss)
    metric = task.new_metric()
    with torch.no_grad():
        metric.update(model.eval()(task.data.test_x), task.data.test_y)
    assert 0.0 <= metric.compute() <= 1.0


def test_disk_task_without_data_dir_rejected() -> None:
    with pytest.raises(DataError, match="needs data_dir"):
        load_task(TaskSpec("griddet-voc"))
