"""Fully convolutional models for segmentation, face parsing and detection.

Each takes explicit per-layer ``widths`` or a ``width_mult``, like the classification
families, and returns one tensor, so ONNX export and its parity check apply unchanged. All
are built from 3x3 conv + BatchNorm + ReLU blocks, max-pooling and nearest-neighbour
upsampling, with no transposed convolutions. So the complexity counter and the filter
removal of ``methods.removal`` know every layer, and a zeroed channel stays zero until the
next convolution.

- ``segnet``: a small encoder-decoder with U-Net skip connections (Ronneberger, Fischer and
  Brox, MICCAI 2015): three encoder stages, a bottleneck at 1/8 resolution and three decoder
  stages that concatenate the encoder features of their resolution. Output: class logits of
  shape (N, classes, H, W).
- ``hourglass``: an hourglass fully convolutional network in the manner of Newell, Yang and
  Deng (ECCV 2016): three pooled levels, and at each resolution the upsampled decoder path
  is *added* to a skip branch, so the two branches' channels are coupled. Output as above.
- ``griddet``: a single-stage, anchor-free grid detector in the manner of YOLO (Redmon et
  al., CVPR 2016): a backbone of stride 8, then one 1x1 head. Each grid cell predicts
  ``5 + classes`` values, laid out by :data:`DETECTION_LAYOUT`, for the object whose box
  centre falls in it. :func:`encode_grid_targets` and :func:`decode_grid` convert boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from benchmark.errors import ConfigError
from benchmark.tasks.models import ModelFamily, scaled_widths

__all__ = [
    "DENSE_MODELS",
    "DETECTION_LAYOUT",
    "GridDetector",
    "GridTargets",
    "HourglassFCN",
    "SegEncoderDecoder",
    "decode_grid",
    "encode_grid_targets",
]

# Channels of the detector output per grid cell: objectness logit, centre offsets in the
# cell (logits of a sigmoid), log of width and height in units of the stride, class logits.
DETECTION_LAYOUT = ("objectness", "offset_x", "offset_y", "log_width", "log_height", "classes...")


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _check_divisible(input_size: int, factor: int, model: str) -> None:
    if input_size % factor:
        raise ConfigError(f"{model}: input size {input_size} must be a multiple of {factor}")


def _init_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class SegEncoderDecoder(nn.Module):
    """U-Net-style encoder-decoder with three pooled levels.

    ``widths`` = (enc1, enc2, enc3, bottleneck, dec3, dec2, dec1). ``enc1`` runs at full
    resolution, ``enc2`` at 1/2, ``enc3`` at 1/4 and the bottleneck at 1/8. Each decoder
    stage reads the upsampled previous stage concatenated with the encoder output of its
    resolution: ``dec3`` reads ``bottleneck + enc3`` channels, ``dec1`` reads ``dec2 + enc1``.
    """

    default_widths = (8, 16, 32, 64, 32, 16, 8)
    levels = 3

    def __init__(
        self,
        num_classes: int = 11,
        in_channels: int = 1,
        input_size: int = 64,
        widths: Sequence[int] | None = None,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        _check_divisible(input_size, 2**self.levels, "segnet")
        e1, e2, e3, mid, d3, d2, d1 = scaled_widths(
            self.default_widths, widths, width_mult, "segnet"
        )
        self.enc1 = _conv_block(in_channels, e1)
        self.enc2 = _conv_block(e1, e2)
        self.enc3 = _conv_block(e2, e3)
        self.bottleneck = _conv_block(e3, mid)
        self.dec3 = _conv_block(mid + e3, d3)
        self.dec2 = _conv_block(d3 + e2, d2)
        self.dec1 = _conv_block(d2 + e1, d1)
        self.head = nn.Conv2d(d1, num_classes, 1)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip1 = self.enc1(x)
        skip2 = self.enc2(self.pool(skip1))
        skip3 = self.enc3(self.pool(skip2))
        x = self.bottleneck(self.pool(skip3))
        x = self.dec3(torch.cat([self.up(x), skip3], dim=1))
        x = self.dec2(torch.cat([self.up(x), skip2], dim=1))
        x = self.dec1(torch.cat([self.up(x), skip1], dim=1))
        return self.head(x)


class HourglassFCN(nn.Module):
    """Hourglass FCN with additive skips at every resolution.

    ``widths`` = (stem, down1, down2, down3, bottleneck, up3, up2, up1). ``up_i`` is the
    width at the resolution of level ``i - 1``, shared by the upsampled path and the skip
    branch that is added to it.
    """

    default_widths = (16, 24, 32, 48, 48, 32, 24, 16)
    levels = 3

    def __init__(
        self,
        num_classes: int = 11,
        in_channels: int = 3,
        input_size: int = 64,
        widths: Sequence[int] | None = None,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        _check_divisible(input_size, 2**self.levels, "hourglass")
        resolved = scaled_widths(self.default_widths, widths, width_mult, "hourglass")
        stem, downs, mid, ups = resolved[0], resolved[1:4], resolved[4], resolved[5:8]
        self.stem = _conv_block(in_channels, stem)
        level_widths = [stem, *downs]  # channels of the feature map at level 0..3
        self.down = nn.ModuleList(
            _conv_block(level_widths[i], level_widths[i + 1]) for i in range(self.levels)
        )
        self.bottleneck = _conv_block(level_widths[-1], mid)
        # up[0] returns to level 2 (width up3), up[2] to level 0 (width up1).
        up_widths = list(ups)
        self.up = nn.ModuleList()
        self.skip = nn.ModuleList()
        previous = mid
        for step, width in enumerate(up_widths):
            level = self.levels - 1 - step
            self.up.append(_conv_block(previous, width))
            self.skip.append(_conv_block(level_widths[level], width))
            previous = width
        self.head = nn.Conv2d(previous, num_classes, 1)
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.stem(x)]
        for block in self.down:
            features.append(block(self.pool(features[-1])))
        x = self.bottleneck(features[-1])
        for step, (up, skip) in enumerate(zip(self.up, self.skip, strict=True)):
            level = self.levels - 1 - step
            x = up(self.upsample(x)) + skip(features[level])
        return self.head(x)


class GridDetector(nn.Module):
    """Single-stage grid detector of stride 8.

    ``widths`` = (conv1, conv2, conv3, conv4, neck): conv1 at full resolution, a max-pool
    before conv2, conv3 and conv4, then a 3x3 neck and the 1x1 head of ``5 + classes``
    channels per cell.
    """

    default_widths = (16, 32, 64, 64, 64)
    stride = 8

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 64,
        widths: Sequence[int] | None = None,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        _check_divisible(input_size, self.stride, "griddet")
        c1, c2, c3, c4, neck = scaled_widths(self.default_widths, widths, width_mult, "griddet")
        self.backbone = nn.Sequential(
            _conv_block(in_channels, c1),
            nn.MaxPool2d(2),
            _conv_block(c1, c2),
            nn.MaxPool2d(2),
            _conv_block(c2, c3),
            nn.MaxPool2d(2),
            _conv_block(c3, c4),
            _conv_block(c4, neck),
        )
        self.head = nn.Conv2d(neck, 5 + num_classes, 1)
        _init_weights(self)
        with torch.no_grad():
            # A small head and a low objectness everywhere at the start, as most cells are
            # empty (the prior of 0.01 of Lin et al., "Focal Loss for Dense Object Detection").
            nn.init.normal_(self.head.weight, std=0.01)
            self.head.bias.zero_()
            self.head.bias[0] = -math.log(99.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


# -- detector targets and decoding ---------------------------------------------------------


@dataclass
class GridTargets:
    """Per-cell regression targets of :class:`GridDetector`, for a batch."""

    positive: torch.Tensor  # bool (N, gh, gw): a box centre falls in the cell
    offsets: torch.Tensor  # float (N, 2, gh, gw): centre position within the cell, in [0, 1)
    log_sizes: torch.Tensor  # float (N, 2, gh, gw): log(width / stride), log(height / stride)
    classes: torch.Tensor  # int64 (N, gh, gw): class of the cell's box, -1 elsewhere


def encode_grid_targets(boxes: torch.Tensor, grid: tuple[int, int], stride: int) -> GridTargets:
    """Assign each box of ``boxes`` (N, M, 5; class -1 pads) to the cell of its centre.

    When two boxes share a cell, the larger one wins and the other is not learned, the
    usual trade-off of a one-box-per-cell grid.
    """
    n, _, _ = boxes.shape
    gh, gw = grid
    device = boxes.device
    positive = torch.zeros(n, gh, gw, dtype=torch.bool, device=device)
    offsets = torch.zeros(n, 2, gh, gw, device=device)
    log_sizes = torch.zeros(n, 2, gh, gw, device=device)
    classes = torch.full((n, gh, gw), -1, dtype=torch.int64, device=device)

    valid = boxes[..., 4] >= 0
    batch, slot = torch.nonzero(valid, as_tuple=True)
    chosen = boxes[batch, slot]
    width = (chosen[:, 2] - chosen[:, 0]).clamp(min=1.0)
    height = (chosen[:, 3] - chosen[:, 1]).clamp(min=1.0)
    centre_x = (chosen[:, 0] + chosen[:, 2]) / 2 / stride
    centre_y = (chosen[:, 1] + chosen[:, 3]) / 2 / stride
    cell_x = centre_x.floor().long().clamp(0, gw - 1)
    cell_y = centre_y.floor().long().clamp(0, gh - 1)
    # Smaller boxes are written first, so a larger box in the same cell overwrites them.
    for i in torch.argsort(width * height).tolist():
        b, y, x = int(batch[i]), int(cell_y[i]), int(cell_x[i])
        positive[b, y, x] = True
        offsets[b, 0, y, x] = (centre_x[i] - x).clamp(0.0, 1.0)
        offsets[b, 1, y, x] = (centre_y[i] - y).clamp(0.0, 1.0)
        log_sizes[b, 0, y, x] = torch.log(width[i] / stride)
        log_sizes[b, 1, y, x] = torch.log(height[i] / stride)
        classes[b, y, x] = chosen[i, 4].long()
    return GridTargets(positive, offsets, log_sizes, classes)


def decode_grid(
    outputs: torch.Tensor, stride: int, score_threshold: float = 0.01, max_detections: int = 100
) -> list[torch.Tensor]:
    """Turn detector outputs (N, 5 + C, gh, gw) into detections per image.

    Returns one float tensor (k, 6) per image: x1, y1, x2, y2, score, class, sorted by
    score. The score is ``sigmoid(objectness) * softmax(classes)``; each cell proposes its
    best class, and per-class non-maximum suppression at IoU 0.5 removes duplicates.
    """
    outputs = outputs.detach().float()
    n, channels, gh, gw = outputs.shape
    ys, xs = torch.meshgrid(
        torch.arange(gh, device=outputs.device),
        torch.arange(gw, device=outputs.device),
        indexing="ij",
    )
    centre_x = (xs + outputs[:, 1].sigmoid()) * stride
    centre_y = (ys + outputs[:, 2].sigmoid()) * stride
    width = outputs[:, 3].clamp(-6, 6).exp() * stride
    height = outputs[:, 4].clamp(-6, 6).exp() * stride
    probabilities = outputs[:, 5:].softmax(dim=1) * outputs[:, :1].sigmoid()
    score, label = probabilities.max(dim=1)
    boxes = torch.stack(
        [centre_x - width / 2, centre_y - height / 2, centre_x + width / 2, centre_y + height / 2],
        dim=-1,
    )

    detections = []
    for i in range(n):
        keep = score[i].flatten() >= score_threshold
        candidates = torch.cat(
            [boxes[i].reshape(-1, 4), score[i].reshape(-1, 1), label[i].reshape(-1, 1).float()],
            dim=1,
        )[keep]
        detections.append(_class_nms(candidates, 0.5)[:max_detections])
    return detections


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Return the IoU matrix of boxes ``a`` (k, 4) and ``b`` (m, 4) in x1, y1, x2, y2."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=1e-9)


def _class_nms(candidates: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression per class; returns the kept rows by score."""
    order = torch.argsort(candidates[:, 4], descending=True, stable=True)
    candidates = candidates[order]
    if len(candidates) == 0:
        return candidates
    overlaps = box_iou(candidates[:, :4], candidates[:, :4])
    same_class = candidates[:, 5, None] == candidates[None, :, 5]
    suppressed = torch.zeros(len(candidates), dtype=torch.bool)
    for i in range(len(candidates)):
        if suppressed[i]:
            continue
        later = torch.arange(len(candidates)) > i
        suppressed |= later & same_class[i] & (overlaps[i] > iou_threshold)
    return candidates[~suppressed]


DENSE_MODELS: dict[str, ModelFamily] = {
    "segnet": ModelFamily("segnet", SegEncoderDecoder, SegEncoderDecoder.default_widths),
    "hourglass": ModelFamily("hourglass", HourglassFCN, HourglassFCN.default_widths),
    "griddet": ModelFamily("griddet", GridDetector, GridDetector.default_widths),
}
