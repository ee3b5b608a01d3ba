"""ONNX-side helpers shared by the quantisation methods.

The quantisation methods deploy an ONNX file, so most of their work happens on ONNX graphs.
This module exports the float model, runs ONNX Runtime's pre-processing, reads calibration
data from the training split, folds QAT weight quantisers into int8 initialisers, stores
fp16 weights, and summarises the written file for the result row.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from benchmark.errors import ExportError
from benchmark.measure.export import DEFAULT_OPSET, export_onnx
from methods.base import RunContext

__all__ = [
    "TrainingCalibrationReader",
    "convert_weights_to_fp16",
    "export_with_suite_options",
    "fold_weight_quantizers",
    "preprocess",
    "quiet",
    "save_atomically",
    "summarise_onnx",
]

logger = logging.getLogger(__name__)

# Initialisers with fewer elements stay float32 in the fp16 weight conversion: scalars and
# shape constants would only gain Cast nodes.
_FP16_MIN_ELEMENTS = 16


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Capture what ONNX Runtime's quantisation tools print, and log it at debug level."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    if buffer.getvalue().strip():
        logger.debug("onnxruntime.quantization output:\n%s", buffer.getvalue().rstrip())


def export_with_suite_options(model: nn.Module, ctx: RunContext, path: Path) -> int:
    """Export ``model`` as the harness exports other rows; return the file size in bytes.

    The opset and the batch axis come from ``ctx.export_options`` (the suite's ``[export]``
    table). Without them, the harness defaults apply: opset 17 and a batch fixed at 1.
    """
    options = ctx.export_options
    return export_onnx(
        model,
        ctx.example_input(1).cpu(),
        path,
        opset=options.get("opset", DEFAULT_OPSET),
        dynamic_batch=options.get("dynamic_batch", False),
    )


def preprocess(source: Path, target: Path) -> None:
    """Run ONNX Runtime's ``quant_pre_process``: shape inference and graph optimisation.

    The optimisation folds BatchNormalization into the preceding Conv, so the quantiser
    works on the graph that is deployed.
    """
    from onnxruntime.quantization import quant_pre_process

    try:
        with quiet():
            quant_pre_process(str(source), str(target))
    except Exception as error:  # the tool raises many types for graphs it cannot process
        raise ExportError(
            f"quant_pre_process failed on {source}: {type(error).__name__}: {error}"
        ) from error


def save_atomically(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` next to ``path`` and rename it, so no partial file is ever left."""
    partial = path.with_name(path.name + ".partial")
    onnx.save(model, str(partial))
    os.replace(partial, path)


class TrainingCalibrationReader:
    """ONNX Runtime calibration data reader over a subset of the training split.

    The samples come from :meth:`RunContext.train_batches`, one seeded shuffled pass of the
    training split, so calibration can never read the validation or test split. The first
    ``samples`` images of that pass are fed in chunks of ``batch_size`` (the exported model's
    batch size). ``fed`` counts the images handed to ONNX Runtime.

    ``__len__`` and ``set_range`` let ``quantize_static`` calibrate in strides
    (``CalibStridedMinMax``), which bounds the memory of the histogram calibrators.
    """

    def __init__(self, ctx: RunContext, input_name: str, samples: int, batch_size: int) -> None:
        if samples < 1:
            raise ValueError(f"calibration needs at least one sample, got {samples}")
        images = []
        collected = 0
        for inputs, _ in ctx.train_batches():
            images.append(inputs.detach().cpu().numpy().astype(np.float32))
            collected += len(inputs)
            if collected >= samples:
                break
        pool = np.concatenate(images)[:samples]
        usable = len(pool) - len(pool) % batch_size
        if usable == 0:
            raise ValueError(
                f"the training split has {len(pool)} images, fewer than the model's "
                f"batch size {batch_size}"
            )
        self.input_name = input_name
        self.batches = [pool[i : i + batch_size] for i in range(0, usable, batch_size)]
        self.samples = usable
        self.fed = 0
        self._start, self._end = 0, len(self.batches)
        self._position = 0

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end = start_index, min(end_index, len(self.batches))
        self._position = start_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= self._end:
            return None
        batch = self.batches[self._position]
        self._position += 1
        self.fed += len(batch)
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.set_range(0, len(self.batches))

    def stride(self, limit: int = 64) -> int:
        """Return the largest number of batches, at most ``limit``, that divides the total."""
        return max(
            d for d in range(1, min(limit, len(self.batches)) + 1) if len(self.batches) % d == 0
        )


def calibration_batch_size(path: Path, dynamic: int = 32) -> int:
    """Return the fixed batch size of the model's first input, or ``dynamic`` for a symbolic one."""
    first = onnx.load(str(path), load_external_data=False).graph.input[0]
    dim = first.type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else dynamic


def fold_weight_quantizers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Store quantised weights as integers, as ONNX Runtime's static quantiser does.

    A QAT export contains ``weight (float) -> QuantizeLinear -> DequantizeLinear -> Conv``.
    For every QuantizeLinear whose input, scale and zero point are initialisers, this
    computes the integer tensor with the ONNX formula
    ``q = saturate(round_half_to_even(x / scale) + zero_point)`` and feeds it to the
    DequantizeLinear directly, which removes the float copy of the weights.

    Then the float bias of each Conv or Gemm whose data and weight inputs come from
    DequantizeLinear becomes an int32 tensor with scale ``input_scale * weight_scale`` and
    zero point 0. ONNX Runtime can then fuse the node group into QLinearConv or QGemm.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    _inline_constants(graph, initializers)
    _fold_constant_quantizers(graph, initializers)
    producers = {output: node for node in graph.node for output in node.output}
    _quantize_biases(graph, initializers, producers)

    used = {name for node in graph.node for name in node.input}
    used_initializers = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(used_initializers)
    return model


def _inline_constants(graph: onnx.GraphProto, initializers: dict) -> None:
    """Turn Constant nodes, and Identity nodes of initialisers, into initialisers.

    The TorchScript exporter writes repeated constants (equal scales, zero points) once and
    refers to them through Identity nodes; the quantiser folding needs them as initialisers.
    """
    kept_nodes = []
    for node in graph.node:
        tensor = None
        if node.op_type == "Identity" and node.input[0] in initializers:
            tensor = numpy_helper.to_array(initializers[node.input[0]])
        elif node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensor = numpy_helper.to_array(node.attribute[0].t)
        if tensor is None:
            kept_nodes.append(node)
            continue
        proto = numpy_helper.from_array(tensor, node.output[0])
        graph.initializer.append(proto)
        initializers[proto.name] = proto
    del graph.node[:]
    graph.node.extend(kept_nodes)


def _fold_constant_quantizers(graph: onnx.GraphProto, initializers: dict) -> None:
    kept_nodes = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or not all(
            name in initializers for name in node.input[:3]
        ):
            kept_nodes.append(node)
            continue
        values = numpy_helper.to_array(initializers[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
        zero_point = numpy_helper.to_array(initializers[node.input[2]])
        axis = _attribute(node, "axis", 1)
        quantized = _quantize(values, scale, zero_point, axis)
        name = node.output[0]
        tensor = numpy_helper.from_array(quantized, name)
        graph.initializer.append(tensor)
        initializers[name] = tensor
    del graph.node[:]
    graph.node.extend(kept_nodes)


def _quantize(
    values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int
) -> np.ndarray:
    """Apply ONNX QuantizeLinear to constant data; ``axis`` is used for 1-D scales."""
    if scale.ndim == 1 and values.ndim > 0:
        shape = [1] * values.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero_point = zero_point.reshape(shape)
    info = np.iinfo(zero_point.dtype)
    rounded = np.rint(values / scale) + zero_point.astype(np.int64)
    return np.clip(rounded, info.min, info.max).astype(zero_point.dtype)


def _quantize_biases(graph: onnx.GraphProto, initializers: dict, producers: dict) -> None:
    new_nodes = []
    for node in graph.node:
        if (
            node.op_type in ("Conv", "Gemm")
            and len(node.input) > 2
            and node.input[2] in initializers
        ):
            data_dq, weight_dq = producers.get(node.input[0]), producers.get(node.input[1])
            if _is_dequantize(data_dq) and _is_dequantize(weight_dq):
                scales = _bias_scale(data_dq, weight_dq, initializers)
                dequantize = (
                    None if scales is None else _bias_dequantize(node, scales, graph, initializers)
                )
                if dequantize is not None:
                    new_nodes.append(dequantize)
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)


def _is_dequantize(node: onnx.NodeProto | None) -> bool:
    return node is not None and node.op_type == "DequantizeLinear"


def _bias_scale(
    data_dq: onnx.NodeProto, weight_dq: onnx.NodeProto, initializers: dict
) -> np.ndarray | None:
    if data_dq.input[1] not in initializers or weight_dq.input[1] not in initializers:
        return None
    data_scale = numpy_helper.to_array(initializers[data_dq.input[1]]).astype(np.float32)
    weight_scale = numpy_helper.to_array(initializers[weight_dq.input[1]]).astype(np.float32)
    if data_scale.size != 1:
        return None
    return (data_scale.reshape(()) * weight_scale).astype(np.float32)


def _bias_dequantize(
    node: onnx.NodeProto, scales: np.ndarray, graph: onnx.GraphProto, initializers: dict
) -> onnx.NodeProto | None:
    """Rewire ``node`` to an int32 bias; return its DequantizeLinear, or None on overflow.

    A bias that does not fit int32 at this scale (a pruned, all-zero filter with a nonzero
    bias, say) stays float, and ONNX Runtime then runs that node in float.
    """
    bias = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0).astype(np.float32)
    ratio = np.rint(bias / safe)
    limit = np.iinfo(np.int32)
    if not np.all(np.isfinite(ratio)) or np.abs(ratio).max(initial=0) > limit.max:
        return None
    quantized = ratio.astype(np.int32)

    base = node.input[2]
    names = {
        "q": f"{base}_quantized",
        "scale": f"{base}_quantized_scale",
        "out": f"{base}_dequantized",
    }
    tensors = [
        numpy_helper.from_array(quantized, names["q"]),
        numpy_helper.from_array(safe.reshape(-1) if safe.ndim else safe, names["scale"]),
    ]
    for tensor in tensors:
        graph.initializer.append(tensor)
        initializers[tensor.name] = tensor
    node.input[2] = names["out"]
    return helper.make_node(
        "DequantizeLinear",
        [names["q"], names["scale"]],
        [names["out"]],
        name=f"{base}_DequantizeLinear",
        axis=0,
    )


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def convert_weights_to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Store float32 weights as float16 and cast them back to float32 where they are used.

    The arithmetic stays float32, so only the weight rounding changes the outputs; this is
    the fp16 storage that runtimes without fp16 arithmetic can use. Returns the model and
    the number of converted initialisers.
    """
    graph = model.graph
    casts = []
    converted = 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < _FP16_MIN_ELEMENTS:
            continue
        values = numpy_helper.to_array(init)
        name = init.name
        stored = f"{name}_fp16"
        init.CopyFrom(numpy_helper.from_array(values.astype(np.float16), stored))
        casts.append(
            helper.make_node("Cast", [stored], [name], name=f"{name}_Cast", to=TensorProto.FLOAT)
        )
        converted += 1
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return model, converted


def summarise_onnx(path: Path) -> dict[str, Any]:
    """Return the file size, the operator counts and the weight bytes by element type."""
    model = onnx.load(str(path))
    operators = Counter(node.op_type for node in model.graph.node)
    weight_bytes: Counter[str] = Counter()
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        weight_bytes[str(array.dtype)] += array.nbytes
    return {
        "onnx_bytes": path.stat().st_size,
        "operators": dict(sorted(operators.items())),
        "weight_bytes": dict(sorted(weight_bytes.items())),
    }
