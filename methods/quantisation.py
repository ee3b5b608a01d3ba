"""Post-training quantisation with ONNX Runtime: dynamic int8, static int8 and fp16 weights.

Each method starts from the shared dense checkpoint, trains nothing, and deploys an ONNX
file written by its :meth:`~methods.base.Method.export` hook. The harness then measures
accuracy by running that file in ONNX Runtime, so the reported figures are those of the
deployed integer or fp16 model, not of a PyTorch simulation.

Quantisation follows the affine scheme of Jacob et al., "Quantization and Training of
Neural Networks for Efficient Integer-Arithmetic-Only Inference" (CVPR 2018), as ONNX
Runtime implements it (``onnxruntime.quantization``, ONNX Runtime 1.17 or newer)::

    q = saturate(round_half_to_even(x / scale) + zero_point)      x ~ (q - zero_point) * scale

- ``int8.dynamic``: ``quantize_dynamic``. Weights are quantised offline; activation ranges
  are computed per batch at run time (DynamicQuantizeLinear, ConvInteger, MatMulInteger).
- ``int8.static``: ``quantize_static`` in QDQ format, S8S8 (int8 activations and weights) by
  default. Activation ranges come from a calibration subset of the training split, with
  MinMax, Entropy (the clipping threshold that minimises the KL divergence between the
  float and the quantised histograms) or Percentile calibration. ``quant_pre_process`` runs first.
- ``fp16``: float16 storage of the weights, with float32 or float16 arithmetic.

Any compression method can precede these in a pipeline, for example
``pipeline = ["l1l2.across", "int8.static"]``: the last stage that writes its own file
exports the compressed model.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import onnx
from torch import nn

from benchmark.errors import ExportError
from methods.base import Family, Method, RunContext
from methods.quant_onnx import (
    TrainingCalibrationReader,
    calibration_batch_size,
    convert_weights_to_fp16,
    export_with_suite_options,
    preprocess,
    quiet,
    save_atomically,
    summarise_onnx,
)
from methods.registry import register

if TYPE_CHECKING:
    import optuna

__all__ = ["Fp16", "Int8Dynamic", "Int8Static", "OnnxQuantisation"]

logger = logging.getLogger(__name__)

INT_TYPES = ("int8", "uint8")
CALIBRATIONS = ("minmax", "entropy", "percentile")
FP16_COMPUTE = ("float32", "float16")
# ONNX Runtime names a static scheme by activation, then weight type: S8S8, U8S8, ...
_SCHEME_LETTER = {"int8": "S8", "uint8": "U8"}


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if name == "int8" else QuantType.QUInt8


class OnnxQuantisation(Method):
    """Base of methods that quantise the finished model's ONNX export.

    Subclasses implement :meth:`quantise`, which writes the deployed file, usually from the
    float32 export of the model. The base class exports the float model (through
    :meth:`float_model`), writes the result atomically, and records sizes and operator
    counts under ``diagnostics["quantisation"]``.
    """

    family = Family.QUANTISATION
    start_from = "dense"
    # Post-training quantisation trains nothing: the row consumes only the pre-training
    # epochs of the dense checkpoint. In a pipeline, a preceding stage may still fine-tune.
    uses_finetune = False
    requires = ("onnx", "onnxruntime")
    install_hint = "pip install onnxruntime"
    #: Short name of the quantisation mode, for the diagnostics.
    mode: ClassVar[str] = ""

    def quantise(
        self, model: nn.Module, float_path: Path, output: Path, workdir: Path, ctx: RunContext
    ) -> dict[str, Any]:
        """Write the deployed file for ``model`` to ``output``; return diagnostics.

        ``float_path`` is the float32 export of :meth:`float_model`; ``workdir`` is a
        temporary folder for intermediate files.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement quantise()")

    def float_model(self, model: nn.Module) -> nn.Module:
        """Return the float32 model whose export is quantised and sizes are compared to."""
        return model

    def export(self, model: nn.Module, path: Path, ctx: RunContext) -> bool:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="quantisation-", dir=ctx.workdir) as folder:
            workdir = Path(folder)
            float_path = workdir / "float32.onnx"
            float_bytes = export_with_suite_options(self.float_model(model), ctx, float_path)
            output = workdir / "quantised.onnx"
            details = self.quantise(model, float_path, output, workdir, ctx)
            save_atomically(onnx.load(str(output)), path)

        summary = summarise_onnx(path)
        ctx.diagnostics["quantisation"] = {
            "mode": self.mode,
            "float_onnx_bytes": float_bytes,
            "size_ratio": round(float_bytes / summary["onnx_bytes"], 4),
            "seconds": round(time.perf_counter() - started, 3),
            **details,
            **summary,
        }
        logger.info(
            "%s: wrote %s (%d bytes, %.2fx smaller than float32)",
            self.name,
            path.name,
            summary["onnx_bytes"],
            float_bytes / summary["onnx_bytes"],
        )
        return True


@register
class Int8Dynamic(OnnxQuantisation):
    """Dynamic int8 quantisation with ONNX Runtime's ``quantize_dynamic``."""

    name = "int8.dynamic"
    mode = "dynamic"
    summary = (
        "dynamic int8 (ONNX Runtime quantize_dynamic): 8-bit weights, activation ranges per batch"
    )

    @dataclass(frozen=True)
    class Params:
        per_channel: bool = False  # one scale per output channel, else one per tensor
        # "uint8" or "int8" (ONNX Runtime's default). NOTE: with int8 weights, the aarch64
        # ONNX Runtime 1.32 under qemu-aarch64 computed wrong MatMulInteger outputs for
        # LeNet-5 (57% against 97.5% of 400 validation digits on x86), while uint8 weights
        # matched x86 exactly. It is not known whether the emulator or the ARM kernel is
        # at fault.
        weight_type: str = "uint8"
        reduce_range: bool = False  # 7-bit weights, for x86 CPUs without VNNI
        preprocess: bool = True  # run quant_pre_process (shape inference, BN folding) first

        def __post_init__(self) -> None:
            _check_choice("weight_type", self.weight_type, INT_TYPES)

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        return {"per_channel": trial.suggest_categorical("per_channel", [False, True])}

    def quantise(
        self, model: nn.Module, float_path: Path, output: Path, workdir: Path, ctx: RunContext
    ) -> dict[str, Any]:
        from onnxruntime.quantization import quantize_dynamic

        source = float_path
        if self.params.preprocess:
            source = workdir / "preprocessed.onnx"
            preprocess(float_path, source)
        try:
            with quiet():
                quantize_dynamic(
                    str(source),
                    str(output),
                    per_channel=self.params.per_channel,
                    reduce_range=self.params.reduce_range,
                    weight_type=_quant_type(self.params.weight_type),
                )
        except Exception as error:  # onnxruntime raises several types for unsupported graphs
            raise ExportError(
                f"quantize_dynamic failed on {source.name}: {type(error).__name__}: {error}"
            ) from error
        return {"per_channel": self.params.per_channel, "weight_type": self.params.weight_type}


@register
class Int8Static(OnnxQuantisation):
    """Static int8 quantisation in QDQ format with ONNX Runtime's ``quantize_static``.

    Calibration reads the first ``calibration_samples`` images of one seeded shuffled pass
    of the training split (:meth:`RunContext.train_batches`); the validation and test splits
    are never read. Percentile calibration clips at the ``percentile`` of the absolute values.
    """

    name = "int8.static"
    mode = "static"
    summary = "static int8 QDQ (ONNX Runtime quantize_static), calibrated on the training split"

    @dataclass(frozen=True)
    class Params:
        per_channel: bool = False  # one weight scale per output channel, else one per tensor
        calibration: str = "minmax"  # "minmax", "entropy" or "percentile"
        calibration_samples: int = 512  # training images fed to the calibrator
        percentile: float = 99.999  # for "percentile": the kept share of |activations|, in %
        activation_type: str = "int8"  # "int8" (S8S8, the default) or "uint8" (U8S8)
        weight_type: str = "int8"  # "int8" or "uint8"
        symmetric_activations: bool = False  # zero point 0 for activations
        reduce_range: bool = False  # 7-bit weights, for x86 CPUs without VNNI
        preprocess: bool = True  # run quant_pre_process (shape inference, BN folding) first

        def __post_init__(self) -> None:
            _check_choice("calibration", self.calibration, CALIBRATIONS)
            _check_choice("activation_type", self.activation_type, INT_TYPES)
            _check_choice("weight_type", self.weight_type, INT_TYPES)
            if self.calibration_samples < 1:
                raise ValueError(
                    f"calibration_samples must be at least 1, got {self.calibration_samples}"
                )
            if not 50.0 < self.percentile <= 100.0:
                raise ValueError(f"percentile must be in (50, 100], got {self.percentile}")

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "per_channel": trial.suggest_categorical("per_channel", [False, True]),
            "calibration": trial.suggest_categorical("calibration", list(CALIBRATIONS)),
        }

    def quantise(
        self, model: nn.Module, float_path: Path, output: Path, workdir: Path, ctx: RunContext
    ) -> dict[str, Any]:
        from onnxruntime.quantization import QuantFormat, quantize_static

        params = self.params
        source = float_path
        if params.preprocess:
            source = workdir / "preprocessed.onnx"
            preprocess(float_path, source)

        input_name = onnx.load(str(source), load_external_data=False).graph.input[0].name
        reader = TrainingCalibrationReader(
            ctx, input_name, params.calibration_samples, calibration_batch_size(source)
        )
        extra_options = {
            "ActivationSymmetric": params.symmetric_activations,
            "CalibStridedMinMax": reader.stride(),
            "CalibPercentile": params.percentile,
        }
        try:
            with quiet():
                quantize_static(
                    str(source),
                    str(output),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=params.per_channel,
                    reduce_range=params.reduce_range,
                    activation_type=_quant_type(params.activation_type),
                    weight_type=_quant_type(params.weight_type),
                    calibrate_method=self._calibrate_method(),
                    extra_options=extra_options,
                )
        except Exception as error:  # onnxruntime raises several types for unsupported graphs
            raise ExportError(
                f"quantize_static failed on {source.name}: {type(error).__name__}: {error}"
            ) from error

        return {
            "format": "QDQ",
            "scheme": _SCHEME_LETTER[params.activation_type] + _SCHEME_LETTER[params.weight_type],
            "per_channel": params.per_channel,
            "calibration": {
                "method": params.calibration,
                "split": "train",
                "samples": reader.samples,
                "fed": reader.fed,
            },
        }

    def _calibrate_method(self):
        from onnxruntime.quantization import CalibrationMethod

        return {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[self.params.calibration]


@register
class Fp16(OnnxQuantisation):
    """Float16 weights.

    With ``compute = "float32"`` the weights are stored as float16 and cast back to float32
    where they are used, so every runtime can run the file. With ``compute = "float16"``
    the whole graph is converted to float16 by ONNX Runtime's ``convert_float_to_float16``,
    with float32 inputs and outputs; a runtime without float16 kernels inserts casts.
    """

    name = "fp16"
    mode = "fp16"
    summary = "float16 weights (half-size ONNX file); float32 or float16 arithmetic"

    @dataclass(frozen=True)
    class Params:
        compute: str = "float32"  # arithmetic type: "float32" (weights only) or "float16"

        def __post_init__(self) -> None:
            _check_choice("compute", self.compute, FP16_COMPUTE)

    def quantise(
        self, model: nn.Module, float_path: Path, output: Path, workdir: Path, ctx: RunContext
    ) -> dict[str, Any]:
        model = onnx.load(str(float_path))
        if self.params.compute == "float32":
            model, converted = convert_weights_to_fp16(model)
            onnx.save(model, str(output))
            return {"compute": "float32", "fp16_initializers": converted}

        from onnxruntime.transformers.float16 import convert_float_to_float16

        try:
            converted_model = convert_float_to_float16(model, keep_io_types=True)
        except Exception as error:  # the converter raises several types for unusual graphs
            raise ExportError(
                f"float16 conversion failed: {type(error).__name__}: {error}"
            ) from error
        onnx.save(converted_model, str(output))
        return {"compute": "float16"}
