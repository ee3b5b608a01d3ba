"""mIoU and detection AP against values computed by hand on tiny cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.tasks.dense_formats import IGNORE_LABEL
from benchmark.tasks.dense_metrics import DetectionAP, SegmentationIoU, detection_scores
from benchmark.tasks.dense_models import GridDetector, encode_grid_targets
from benchmark.tasks.dense_tasks import detection_loss, pad_boxes


def _one_hot_logits(predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(predictions, num_classes).permute(0, 3, 1, 2).float()


# -- segmentation --------------------------------------------------------------------------


def test_miou_by_hand() -> None:
    targets = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 1]]])
    predictions = torch.tensor([[[0, 1, 1, 1], [0, 2, 0, 1]]])
    metric = SegmentationIoU(3)
    metric.update(_one_hot_logits(predictions, 3), targets)
    # class 0: TP 2 (pixels 0, 4), FP 1 (pixel 6), FN 1 (pixel 1) -> 2/4
    # class 1: TP 3, FP 1 (pixel 1), FN 0 -> 3/4
    # class 2: TP 1, FP 0, FN 1 (pixel 6) -> 1/2
    assert metric.per_class_iou() == pytest.approx([0.5, 0.75, 0.5])
    assert metric.compute() == pytest.approx((0.5 + 0.75 + 0.5) / 3)
    assert metric.summary()["pixel_accuracy"] == pytest.approx(6 / 8)


def test_miou_accumulates_over_batches() -> None:
    targets = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 1]]])
    predictions = torch.tensor([[[0, 1, 1, 1], [0, 2, 0, 1]]])
    whole = SegmentationIoU(3)
    whole.update(_one_hot_logits(predictions, 3), targets)
    halves = SegmentationIoU(3)
    halves.update(_one_hot_logits(predictions[:, :1], 3), targets[:, :1])
    halves.update(_one_hot_logits(predictions[:, 1:], 3), targets[:, 1:])
    assert halves.compute() == pytest.approx(whole.compute())


def test_miou_skips_void_and_absent_classes() -> None:
    targets = torch.tensor([[[0, IGNORE_LABEL, 1, 1]]])
    predictions = torch.tensor([[[0, 1, 1, 0]]])
    metric = SegmentationIoU(4)
    metric.update(_one_hot_logits(predictions, 4), targets)
    # void pixel ignored; class 0: TP 1, FP 1 -> 1/2; class 1: TP 1, FN 1 -> 1/2; 2, 3 absent
    assert metric.per_class_iou() == [pytest.approx(0.5), pytest.approx(0.5), None, None]
    assert metric.compute() == pytest.approx(0.5)


def test_miou_rejects_out_of_range_labels() -> None:
    metric = SegmentationIoU(2)
    with pytest.raises(ValueError, match="outside 0..1"):
        metric.update(torch.zeros(1, 2, 1, 2), torch.tensor([[[0, 5]]]))


def test_miou_of_nothing_raises() -> None:
    with pytest.raises(ValueError, match="empty split"):
        SegmentationIoU(2).compute()


# -- detection -----------------------------------------------------------------------------

GROUND_TRUTH = [np.array([[0, 0, 10, 10, 0]], dtype=np.float64)]


def test_ap_perfect_then_false_positive() -> None:
    detections = [np.array([[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.8, 0]])]
    scores = detection_scores(detections, GROUND_TRUTH, 2)
    # The true positive ranks first: precision 1 at recall 1.
    assert scores["map50_voc"] == pytest.approx(1.0)
    assert scores["map50_coco"] == pytest.approx(1.0)
    assert scores["map_coco"] == pytest.approx(1.0)


def test_ap_false_positive_ranked_first() -> None:
    detections = [np.array([[20, 20, 30, 30, 0.9, 0], [0, 0, 10, 10, 0.8, 0]])]
    scores = detection_scores(detections, GROUND_TRUTH, 2)
    # Recall 1 is reached at precision 1/2, and the envelope is 1/2 at every recall.
    assert scores["map50_voc"] == pytest.approx(0.5)
    assert scores["map50_coco"] == pytest.approx(0.5)


def test_ap_half_recall() -> None:
    ground_truth = [np.array([[0, 0, 10, 10, 0], [20, 20, 30, 30, 0]], dtype=np.float64)]
    detections = [np.array([[0, 0, 10, 10, 0.9, 0]])]
    scores = detection_scores(detections, ground_truth, 2)
    # VOC: precision 1 up to recall 1/2, then 0. COCO samples 101 recall points, and
    # 51 of them (0.00, 0.01, ..., 0.50) lie at or below recall 1/2.
    assert scores["map50_voc"] == pytest.approx(0.5)
    assert scores["map50_coco"] == pytest.approx(51 / 101)


def test_coco_map_averages_iou_thresholds() -> None:
    # IoU = (10 x 7.2) / (10 x 10) = 0.72: a match at thresholds 0.50 to 0.70 (5 of 10).
    detections = [np.array([[0, 0, 10, 7.2, 0.9, 0]])]
    scores = detection_scores(detections, GROUND_TRUTH, 2)
    assert scores["map50_voc"] == pytest.approx(1.0)
    assert scores["map_coco"] == pytest.approx(0.5)


def test_ap_wrong_class_is_false_positive() -> None:
    detections = [np.array([[0, 0, 10, 10, 0.9, 1]])]
    assert detection_scores(detections, GROUND_TRUTH, 2)["map50_voc"] == 0.0


def test_ap_means_over_classes_with_ground_truth() -> None:
    ground_truth = [
        np.array([[0, 0, 10, 10, 0]], dtype=np.float64),
        np.array([[5, 5, 25, 25, 1]], dtype=np.float64),
    ]
    detections = [np.array([[0, 0, 10, 10, 0.9, 0]]), np.array([[40, 40, 50, 50, 0.7, 1]])]
    scores = detection_scores(detections, ground_truth, 3)
    # class 0 AP 1, class 1 AP 0, class 2 has no ground truth and is left out.
    assert scores["per_class_ap50_voc"] == {"0": pytest.approx(1.0), "1": pytest.approx(0.0)}
    assert scores["map50_voc"] == pytest.approx(0.5)


def test_ap_without_detections_is_zero() -> None:
    assert detection_scores([np.zeros((0, 6))], GROUND_TRUTH, 2)["map50_voc"] == 0.0


def test_ap_without_ground_truth_raises() -> None:
    with pytest.raises(ValueError, match="without ground-truth"):
        detection_scores([np.zeros((0, 6))], [np.zeros((0, 5))], 2)


def _perfect_outputs(targets: torch.Tensor, num_classes: int, size: int = 64) -> torch.Tensor:
    """Return detector outputs that decode exactly to ``targets``."""
    stride = GridDetector.stride
    grid = encode_grid_targets(targets, (size // stride, size // stride), stride)
    outputs = torch.full((len(targets), 5 + num_classes, size // stride, size // stride), -20.0)
    outputs[:, 0][grid.positive] = 20.0
    outputs[:, 1:3] = torch.logit(grid.offsets.clamp(1e-6, 1 - 1e-6))
    outputs[:, 3:5] = grid.log_sizes
    classes = grid.classes.clamp(min=0)
    outputs[:, 5:] = -20.0 + 40.0 * torch.nn.functional.one_hot(classes, num_classes).permute(
        0, 3, 1, 2
    )
    return outputs


def test_detection_metric_on_perfect_outputs() -> None:
    boxes = [
        np.array([[2, 3, 20, 25, 4], [30, 30, 60, 62, 1]], dtype=np.float32),
        np.array([[10, 40, 26, 58, 4]], dtype=np.float32),
    ]
    targets = pad_boxes(boxes, 4)
    metric = DetectionAP(5, GridDetector.stride)
    metric.update(_perfect_outputs(targets, 5), targets)
    summary = metric.summary()
    assert metric.compute() == pytest.approx(1.0)
    assert summary["map_coco"] == pytest.approx(1.0)


def test_detection_loss_lowest_on_perfect_outputs() -> None:
    boxes = [np.array([[2, 3, 20, 25, 4], [30, 30, 60, 62, 1]], dtype=np.float32)]
    targets = pad_boxes(boxes, 4)
    perfect = detection_loss(_perfect_outputs(targets, 5), targets)
    noisy = detection_loss(_perfect_outputs(targets, 5) + torch.randn(1, 10, 8, 8), targets)
    # The offsets' binary cross-entropy cannot go below the entropy of the soft targets,
    # which the loss weights by 5; every other term is close to zero.
    offsets = encode_grid_targets(targets, (8, 8), GridDetector.stride).offsets
    offsets = offsets[offsets > 0]
    entropy = -(offsets * offsets.log() + (1 - offsets) * (1 - offsets).log()).sum()
    assert float(perfect) == pytest.approx(5 * float(entropy), abs=1e-3)
    assert float(noisy) > float(perfect)
