"""Quantisation-aware training (QAT), exported as a QDQ ONNX model with int8 weights.

Implements the simulated quantisation of Jacob et al., "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference" (CVPR 2018). During fine-tuning,
every Conv2d and Linear layer quantises its input, its weight and its output::

    fake_quant(x) = (clamp(round(x / scale) + zero_point, -128, 127) - zero_point) * scale

with a straight-through gradient that is 1 inside the representable range and 0 outside
(``torch.fake_quantize_per_tensor_affine`` and ``torch.fake_quantize_per_channel_affine``).
Weights are symmetric int8, per output channel by default (``scale = max|w| / 127``).
Activation ranges start from a MinMax calibration on a subset of the training split and
then follow an exponential moving average of each batch's min and max.

BatchNorm layers that directly follow a convolution are folded into it first, as ONNX
Runtime does at inference, so the quantised weights are the deployed ones.

Export writes the fake quantisers as QuantizeLinear/DequantizeLinear pairs and then stores
the weights as int8 and the biases as int32 (see
:func:`methods.quant_onnx.fold_weight_quantizers`), the layout that ONNX Runtime's static
quantiser produces, so ONNX Runtime runs QLinearConv and QGemm kernels.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.errors import MethodError
from benchmark.measure.export import run_onnx
from methods.base import RunContext
from methods.quant_onnx import export_with_suite_options, fold_weight_quantizers
from methods.quantisation import OnnxQuantisation
from methods.registry import register

if TYPE_CHECKING:
    import optuna

__all__ = [
    "FakeQuantize",
    "Int8QAT",
    "QuantConv2d",
    "QuantLinear",
    "fold_batch_norms",
    "prepare_qat",
]

logger = logging.getLogger(__name__)

QMIN, QMAX = -128, 127
# Smallest scale; keeps all-zero tensors (pruned filters) from dividing by zero.
_MIN_SCALE = 1e-8


class FakeQuantize(nn.Module):
    """Simulated int8 quantisation of a tensor, with its range observer.

    States: while ``calibrating``, the observer records the running min and max and the
    input passes unchanged. In training mode it follows an exponential moving average of
    each batch's min and max (``averaging_constant``) and quantises. Once ``frozen``, the
    scale and zero point are constants, which the ONNX export writes as initialisers.

    ``for_weight = True`` marks a weight quantiser: it is symmetric, reads the range of the
    current weight on every call until frozen, and quantises per channel along ``axis``
    when ``per_channel`` is set.
    """

    def __init__(
        self,
        *,
        for_weight: bool = False,
        per_channel: bool = False,
        channels: int = 1,
        axis: int = 0,
        symmetric: bool = False,
        averaging_constant: float = 0.01,
    ) -> None:
        super().__init__()
        self.for_weight = for_weight
        self.per_channel = per_channel and for_weight
        self.axis = axis
        self.symmetric = symmetric or for_weight
        self.averaging_constant = averaging_constant
        self.calibrating = False
        self.frozen = False
        self.enabled = True
        self.observed = False
        shape = (channels,) if self.per_channel else ()
        self.register_buffer("min_val", torch.zeros(shape))
        self.register_buffer("max_val", torch.zeros(shape))
        self.register_buffer("scale", torch.ones(shape))
        self.register_buffer("zero_point", torch.zeros(shape, dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if not self.frozen and (self.for_weight or self.calibrating or self.training):
            self._observe(x.detach())
        if self.calibrating:
            return x
        if not self.observed:
            raise MethodError(
                "a QAT fake quantiser ran before observing any data; calibrate it first"
            )
        if self.per_channel:
            return torch.fake_quantize_per_channel_affine(
                x, self.scale, self.zero_point, self.axis, QMIN, QMAX
            )
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, QMIN, QMAX)

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        if self.per_channel:
            dims = [d for d in range(x.dim()) if d != self.axis]
            low, high = x.amin(dim=dims), x.amax(dim=dims)
        else:
            low, high = x.min(), x.max()

        if self.for_weight or not self.observed:
            self.min_val.copy_(low)
            self.max_val.copy_(high)
        elif self.calibrating:
            torch.minimum(self.min_val, low, out=self.min_val)
            torch.maximum(self.max_val, high, out=self.max_val)
        else:
            self.min_val.add_(self.averaging_constant * (low - self.min_val))
            self.max_val.add_(self.averaging_constant * (high - self.max_val))
        self.observed = True
        self._update_qparams()

    def _update_qparams(self) -> None:
        low = torch.clamp(self.min_val, max=0.0)
        high = torch.clamp(self.max_val, min=0.0)
        if self.symmetric:
            # The range [-127, 127] keeps zero exact and the weights symmetric, as ONNX
            # Runtime's symmetric int8 weights do.
            scale = torch.maximum(-low, high) / QMAX
            zero_point = torch.zeros_like(self.zero_point)
        else:
            scale = (high - low) / (QMAX - QMIN)
            zero_point = (
                torch.round(QMIN - low / scale.clamp(min=_MIN_SCALE))
                .clamp(QMIN, QMAX)
                .to(torch.int32)
            )
        self.scale.copy_(scale.clamp(min=_MIN_SCALE))
        self.zero_point.copy_(zero_point)

    def extra_repr(self) -> str:
        kind = "weight" if self.for_weight else "activation"
        granularity = f"per_channel(axis={self.axis})" if self.per_channel else "per_tensor"
        return f"{kind}, {granularity}, symmetric={self.symmetric}, frozen={self.frozen}"


@dataclass(frozen=True)
class QuantSettings:
    """Quantisation settings that :func:`prepare_qat` applies to each layer."""

    per_channel: bool = True
    symmetric_activations: bool = False
    averaging_constant: float = 0.01

    def activation(self) -> FakeQuantize:
        return FakeQuantize(
            symmetric=self.symmetric_activations, averaging_constant=self.averaging_constant
        )

    def weight(self, channels: int) -> FakeQuantize:
        return FakeQuantize(for_weight=True, per_channel=self.per_channel, channels=channels)


class QuantConv2d(nn.Conv2d):
    """Conv2d with fake-quantised input, weight and output; it shares the float Parameters."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, settings: QuantSettings) -> QuantConv2d:
        quant = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        quant.weight, quant.bias = conv.weight, conv.bias
        quant.input_quantizer = settings.activation()
        quant.weight_quantizer = settings.weight(conv.out_channels)
        quant.output_quantizer = settings.activation()
        return quant.to(conv.weight.device).train(conv.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quantizer(x)
        weight = self.weight_quantizer(self.weight)
        return self.output_quantizer(self._conv_forward(x, weight, self.bias))


class QuantLinear(nn.Linear):
    """Linear with fake-quantised input, weight and output; it shares the float Parameters."""

    @classmethod
    def from_float(cls, linear: nn.Linear, settings: QuantSettings) -> QuantLinear:
        quant = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        quant.weight, quant.bias = linear.weight, linear.bias
        quant.input_quantizer = settings.activation()
        quant.weight_quantizer = settings.weight(linear.out_features)
        quant.output_quantizer = settings.activation()
        return quant.to(linear.weight.device).train(linear.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quantizer(x)
        weight = self.weight_quantizer(self.weight)
        return self.output_quantizer(F.linear(x, weight, self.bias))


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def prepare_qat(model: nn.Module, settings: QuantSettings) -> int:
    """Replace every Conv2d and Linear of ``model`` in place; return how many were replaced."""
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) in (nn.Conv2d, nn.Linear)
    ]
    for name, module in targets:
        quant_cls = QuantConv2d if isinstance(module, nn.Conv2d) else QuantLinear
        _replace_module(model, name, quant_cls.from_float(module, settings))
    return len(targets)


def quantizers(model: nn.Module) -> list[FakeQuantize]:
    return [module for module in model.modules() if isinstance(module, FakeQuantize)]


@torch.no_grad()
def fold_batch_norms(model: nn.Module) -> int:
    """Fold each BatchNorm2d that is the only consumer of a Conv2d into it; return the count.

    The pairs are found by tracing the model with ``torch.fx``. A model that cannot be
    traced keeps its BatchNorm layers and logs a warning. ONNX Runtime then runs those
    layers in float between the quantised ones.
    """
    from torch.fx import symbolic_trace
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    try:
        graph = symbolic_trace(model).graph
    except Exception as error:  # torch.fx raises many types for untraceable code
        logger.warning(
            "cannot trace %s to fold BatchNorm (%s); QAT keeps the BN layers",
            type(model).__name__,
            error,
        )
        return 0

    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        source = node.args[0]
        if getattr(source, "op", None) != "call_module" or len(source.users) != 1:
            continue
        if type(modules.get(source.target)) is nn.Conv2d:
            pairs.append((source.target, node.target))

    for conv_name, bn_name in pairs:
        conv, bn = modules[conv_name], modules[bn_name]
        weight, bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
        )
        conv.weight, conv.bias = weight, bias
        _replace_module(model, bn_name, nn.Identity())
    return len(pairs)


@register
class Int8QAT(OnnxQuantisation):
    """Quantisation-aware fine-tuning of the dense checkpoint, deployed as int8 QDQ ONNX."""

    name = "int8.qat"
    mode = "qat"
    uses_finetune = True
    summary = "quantisation-aware training (Jacob et al., CVPR 2018), exported as int8 QDQ ONNX"

    @dataclass(frozen=True)
    class Params:
        per_channel: bool = True  # one weight scale per output channel, else one per tensor
        symmetric_activations: bool = False  # zero point 0 for activations
        averaging_constant: float = 0.01  # weight of each batch in the moving average of ranges
        calibration_samples: int = 512  # training images that set the initial activation ranges
        fold_batchnorm: bool = True  # fold BN into the preceding conv before quantising

        def __post_init__(self) -> None:
            if not 0.0 < self.averaging_constant <= 1.0:
                raise ValueError(
                    f"averaging_constant must be in (0, 1], got {self.averaging_constant}"
                )
            if self.calibration_samples < 1:
                raise ValueError(
                    f"calibration_samples must be at least 1, got {self.calibration_samples}"
                )

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "averaging_constant": trial.suggest_float("averaging_constant", 1e-3, 0.1, log=True)
        }

    def before_finetune(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        params = self.params
        folded = fold_batch_norms(model) if params.fold_batchnorm else 0
        settings = QuantSettings(
            params.per_channel, params.symmetric_activations, params.averaging_constant
        )
        layers = prepare_qat(model, settings)
        if layers == 0:
            raise MethodError(f"{self.name}: the model has no Conv2d or Linear layer to quantise")
        seen = self._calibrate(model, ctx)
        ctx.diagnostics["qat"] = {
            "quantised_layers": layers,
            "folded_batchnorms": folded,
            "calibration": {"split": "train", "samples": seen},
        }
        return model

    @torch.no_grad()
    def _calibrate(self, model: nn.Module, ctx: RunContext) -> int:
        """Set the initial activation ranges by MinMax over training images; return the count."""
        was_training = model.training
        model.eval()
        for quantizer in quantizers(model):
            quantizer.calibrating = True
        seen = 0
        for inputs, _ in ctx.train_batches():
            model(inputs[: self.params.calibration_samples - seen])
            seen += min(len(inputs), self.params.calibration_samples - seen)
            if seen >= self.params.calibration_samples:
                break
        for quantizer in quantizers(model):
            quantizer.calibrating = False
        model.train(was_training)
        return seen

    def after_finetune(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        with torch.no_grad():
            for quantizer in quantizers(model):
                if quantizer.for_weight:
                    quantizer._observe(_weight_of(model, quantizer))
                quantizer.frozen = True
        return model

    def float_model(self, model: nn.Module) -> nn.Module:
        float_copy = copy.deepcopy(model)
        for quantizer in quantizers(float_copy):
            quantizer.enabled = False
        return float_copy

    def quantise(
        self, model: nn.Module, float_path: Path, output: Path, workdir: Path, ctx: RunContext
    ) -> dict[str, Any]:
        qdq_path = workdir / "fake_quant.onnx"
        export_with_suite_options(model, ctx, qdq_path)
        folded = fold_weight_quantizers(onnx.load(str(qdq_path)))
        onnx.save(folded, str(output))
        return {
            "format": "QDQ",
            "scheme": "S8S8",
            "per_channel": self.params.per_channel,
            "parity_vs_fake_quant": self._parity(model, output, ctx),
        }

    @torch.no_grad()
    def _parity(
        self, model: nn.Module, path: Path, ctx: RunContext, samples: int = 64
    ) -> dict[str, float]:
        """Compare the deployed file with the PyTorch fake-quant model on training images."""
        inputs = ctx.example_input(samples).cpu()
        reference = copy.deepcopy(model).cpu().eval()
        expected = reference(inputs).numpy()
        actual = run_onnx(path, inputs)
        agreement = (
            float(np.mean(expected.argmax(1) == actual.argmax(1)))
            if expected.ndim == 2
            else math.nan
        )
        return {
            "max_abs_diff": float(np.max(np.abs(actual - expected))),
            "top1_agreement": agreement,
        }


def _weight_of(model: nn.Module, quantizer: FakeQuantize) -> torch.Tensor:
    for module in model.modules():
        if isinstance(module, (QuantConv2d, QuantLinear)) and module.weight_quantizer is quantizer:
            return module.weight.detach()
    raise MethodError("a weight quantiser is not attached to any quantised layer")
