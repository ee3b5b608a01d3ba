"""Segmentation and detection metrics, accumulated batch by batch like the classification ones.

- :class:`SegmentationIoU`: a confusion matrix over all labelled pixels, then per class
  ``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` and mIoU, the mean over the classes present in the
  targets or predictions (background included, as in Pascal VOC). Pixels labelled
  :data:`~benchmark.tasks.dense_formats.IGNORE_LABEL` are not counted.
- :class:`DetectionAP`: detections decoded from the grid detector, matched to the ground
  truth by pycocotools' ``COCOeval`` (the COCO reference implementation), which gives COCO
  mAP (AP averaged over IoU 0.50:0.05:0.95, 101-point interpolation) and AP at IoU 0.5.
  The VOC-style mAP@0.5 reuses COCOeval's greedy matches at IoU 0.5 and takes the area under
  the precision envelope at every recall step (the all-point interpolation of VOC 2010 and
  later). :func:`detection_scores` computes all three for given detections.

``compute()`` returns the task's headline value in [0, 1]; ``summary()`` returns every
figure, for the result row.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence

import numpy as np
import torch

from benchmark.tasks.dense_formats import IGNORE_LABEL
from benchmark.tasks.dense_models import decode_grid
from benchmark.tasks.metrics import Metric

__all__ = ["DetectionAP", "SegmentationIoU", "detection_scores", "voc_average_precision"]

logger = logging.getLogger(__name__)


class SegmentationIoU(Metric):
    """mIoU of per-pixel class logits (N, C, H, W) against label maps (N, H, W)."""

    name = "miou"

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        self.num_classes = num_classes
        self.class_names = (
            tuple(class_names) if class_names is not None else tuple(map(str, range(num_classes)))
        )
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        predictions = outputs.argmax(dim=1).flatten().cpu()
        labels = targets.flatten().cpu()
        keep = labels != IGNORE_LABEL
        if bool(((labels[keep] < 0) | (labels[keep] >= self.num_classes)).any()):
            raise ValueError(
                "segmentation targets contain labels outside "
                f"0..{self.num_classes - 1} and {IGNORE_LABEL}"
            )
        index = labels[keep] * self.num_classes + predictions[keep]
        self.confusion += torch.bincount(index, minlength=self.num_classes**2).reshape(
            self.num_classes, -1
        )

    def per_class_iou(self) -> list[float | None]:
        """Return IoU per class; None for a class absent from both targets and predictions."""
        true_positive = self.confusion.diag().double()
        union = (
            self.confusion.sum(dim=0).double() + self.confusion.sum(dim=1).double() - true_positive
        )
        return [
            float(tp / u) if u > 0 else None for tp, u in zip(true_positive, union, strict=True)
        ]

    def compute(self) -> float:
        if int(self.confusion.sum()) == 0:
            raise ValueError("mIoU of an empty split is undefined")
        present = [iou for iou in self.per_class_iou() if iou is not None]
        return sum(present) / len(present)

    def summary(self) -> dict[str, object]:
        total = int(self.confusion.sum())
        return {
            "miou": self.compute(),
            "pixel_accuracy": float(self.confusion.diag().sum()) / total,
            "per_class_iou": dict(zip(self.class_names, self.per_class_iou(), strict=True)),
        }


class DetectionAP(Metric):
    """VOC-style mAP@0.5 (``compute()``) and COCO mAP of :class:`GridDetector` outputs.

    Targets are (N, M, 5) boxes x1, y1, x2, y2, class, padded with class -1.
    """

    name = "map50"

    def __init__(
        self,
        num_classes: int,
        stride: int,
        class_names: Sequence[str] | None = None,
        score_threshold: float = 0.01,
        max_detections: int = 100,
    ) -> None:
        self.num_classes = num_classes
        self.stride = stride
        self.class_names = (
            tuple(class_names) if class_names is not None else tuple(map(str, range(num_classes)))
        )
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.detections: list[np.ndarray] = []
        self.ground_truth: list[np.ndarray] = []
        self._scores: dict[str, object] | None = None

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        decoded = decode_grid(outputs, self.stride, self.score_threshold, self.max_detections)
        for detections, boxes in zip(decoded, targets.detach().cpu(), strict=True):
            self.detections.append(detections.cpu().numpy())
            self.ground_truth.append(boxes[boxes[:, 4] >= 0].numpy())
        self._scores = None

    def compute(self) -> float:
        return float(self.summary()["map50_voc"])  # type: ignore[arg-type]

    def summary(self) -> dict[str, object]:
        if self._scores is None:
            self._scores = detection_scores(
                self.detections, self.ground_truth, self.num_classes, self.class_names
            )
        return self._scores


def detection_scores(
    detections: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    max_detections: int = 100,
) -> dict[str, object]:
    """Score detections against ground truth with pycocotools.

    ``detections[i]`` is (k, 6): x1, y1, x2, y2, score, class for image ``i``, and
    ``ground_truth[i]`` is (m, 5): x1, y1, x2, y2, class. Returns ``map50_voc`` (VOC
    all-point AP at IoU 0.5), ``map50_coco`` and ``map_coco`` (COCO's 101-point AP at IoU 0.5
    and averaged over 0.50:0.95), and the VOC AP per class. Classes without ground truth are
    left out of every mean. Raises ``ValueError`` when there is no ground truth at all.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = tuple(class_names) if class_names is not None else tuple(map(str, range(num_classes)))
    ground, results = _coco_documents(detections, ground_truth, num_classes)
    if not ground["annotations"]:
        raise ValueError("detection AP is undefined without ground-truth boxes")
    if not results:
        zero = {
            names[c]: 0.0 for c in sorted({int(a["category_id"]) for a in ground["annotations"]})
        }
        return {"map50_voc": 0.0, "map50_coco": 0.0, "map_coco": 0.0, "per_class_ap50_voc": zero}

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
        coco = COCO()
        coco.dataset = ground
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(results), iouType="bbox")
        evaluation.params.maxDets = [1, 10, max_detections]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    per_class = voc_average_precision(evaluation, iou_index=0)
    return {
        "map50_voc": float(np.mean(list(per_class.values()))),
        "map50_coco": max(0.0, float(evaluation.stats[1])),
        "map_coco": max(0.0, float(evaluation.stats[0])),
        "per_class_ap50_voc": {names[c]: ap for c, ap in per_class.items()},
    }


def _coco_documents(
    detections: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray], num_classes: int
) -> tuple[dict[str, list], list[dict[str, object]]]:
    """Return the COCO ground-truth document and the result list; image ids start at 1."""
    images, annotations, results = [], [], []
    for image_id, (found, truth) in enumerate(zip(detections, ground_truth, strict=True), start=1):
        images.append({"id": image_id})
        for x1, y1, x2, y2, label in np.asarray(truth, dtype=np.float64).reshape(-1, 5):
            width, height = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [x1, y1, width, height],
                    "area": width * height,
                    "iscrowd": 0,
                }
            )
        for x1, y1, x2, y2, score, label in np.asarray(found, dtype=np.float64).reshape(-1, 6):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    categories = [{"id": c, "name": str(c)} for c in range(num_classes)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def voc_average_precision(evaluation: object, iou_index: int = 0) -> dict[int, float]:
    """Return the all-point interpolated AP per category from an evaluated ``COCOeval``.

    Uses the matches of ``evaluation.evalImgs`` at ``params.iouThrs[iou_index]`` for the
    whole area range and the largest ``maxDets``: detections ranked by score over all images,
    then ``AP = Σ_k (r_k - r_{k-1}) · max_{j ≥ k} p_j``. Categories without ground truth are
    omitted.
    """
    params = evaluation.params  # type: ignore[attr-defined]
    area_count, image_count = len(params.areaRng), len(params.imgIds)
    max_detections = params.maxDets[-1]
    average_precision = {}
    for k, category in enumerate(params.catIds):
        # evalImgs is ordered category-major, then area range, then image (COCOeval.evaluate).
        start = k * area_count * image_count
        entries = [e for e in evaluation.evalImgs[start : start + image_count] if e is not None]  # type: ignore[attr-defined]
        positives = sum(int(np.count_nonzero(np.logical_not(e["gtIgnore"]))) for e in entries)
        if positives == 0:
            continue
        scores = (
            np.concatenate([e["dtScores"][:max_detections] for e in entries])
            if entries
            else np.zeros(0)
        )
        matched = (
            np.concatenate([e["dtMatches"][iou_index, :max_detections] for e in entries])
            if entries
            else np.zeros(0)
        )
        ignored = (
            np.concatenate([e["dtIgnore"][iou_index, :max_detections] for e in entries])
            if entries
            else np.zeros(0)
        )
        order = np.argsort(-scores, kind="mergesort")
        matched, ignored = matched[order], ignored[order].astype(bool)
        true_positive = np.cumsum((matched != 0) & ~ignored)
        false_positive = np.cumsum((matched == 0) & ~ignored)
        average_precision[int(category)] = _area_under_envelope(
            true_positive, false_positive, positives
        )
    return average_precision


def _area_under_envelope(
    true_positive: np.ndarray, false_positive: np.ndarray, positives: int
) -> float:
    if true_positive.size == 0:
        return 0.0
    recall = np.concatenate([[0.0], true_positive / positives, [1.0]])
    precision = np.concatenate(
        [[0.0], true_positive / np.maximum(true_positive + false_positive, 1e-12), [0.0]]
    )
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))
