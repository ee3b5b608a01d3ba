"""Quantisation methods on LeNet-5 and a few hundred MNIST-sample digits.

One tiny suite runs every mode once; the tests read its rows. Separate tests check that
calibration reads only the training split, and the ONNX helpers on small models.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from support import tiny_suite_table
from torch import nn

from benchmark.budget import Budget
from benchmark.config import parse_suite
from benchmark.errors import MethodError
from benchmark.measure.export import export_onnx, run_onnx
from benchmark.results import ResultStore
from benchmark.runner import SuiteRunner
from benchmark.tasks.registry import TaskSpec, load_task
from benchmark.training import Harness, TrainingConfig
from methods import quantisation
from methods.base import parse_params
from methods.quant_onnx import (
    TrainingCalibrationReader,
    convert_weights_to_fp16,
    fold_weight_quantizers,
)
from methods.quant_qat import Int8QAT, QuantSettings, fold_batch_norms, prepare_qat, quantizers
from methods.quantisation import Fp16, Int8Dynamic, Int8Static
from methods.registry import load_methods

INT8_LABELS = [
    "int8.dynamic",
    "int8.static",
    "int8.static(per_channel=True)",
    "int8.static(calibration=entropy)",
    "int8.static(calibration=percentile)",
    "int8.static(activation_type=uint8)",
    "int8.qat",
    "int8.qat(per_channel=False)",
    "dense+int8.static",
]
FP16_LABELS = ["fp16", "fp16(compute=float16)"]
SUITE_METHODS = [
    {"name": "dense"},
    {"name": "int8.dynamic"},
    {"name": "int8.static"},
    {"name": "int8.static", "params": {"per_channel": True}},
    {"name": "int8.static", "params": {"calibration": "entropy"}},
    {"name": "int8.static", "params": {"calibration": "percentile"}},
    {"name": "int8.static", "params": {"activation_type": "uint8"}},
    {"name": "int8.qat"},
    {"name": "int8.qat", "params": {"per_channel": False}},
    {"name": "fp16"},
    {"name": "fp16", "params": {"compute": "float16"}},
    {"pipeline": ["dense", "int8.static"]},
]
# A LeNet-5 int8 file is expected to be about 3.9x smaller: 431,080 weights drop from 4 to
# 1 byte, and the scales, zero points and int32 biases add a few kilobytes.
MIN_INT8_RATIO = 3.5
MIN_FP16_RATIO = 1.9
BUDGET = {"epochs": 3, "finetune_epochs": 1}


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("quantisation")
    methods = list(SUITE_METHODS)
    if "l1l2.across" in load_methods():
        methods.append({"pipeline": ["l1l2.across", "int8.static"]})
    table = tiny_suite_table(methods, train_limit=300, **BUDGET)
    suite = parse_suite(table, folder / "quantisation.toml")
    SuiteRunner(suite, folder / "out").run()
    return {row["label"]: row for row in ResultStore(folder / "out").rows()}


def _ok(rows: dict[str, dict], label: str) -> dict:
    row = rows[label]
    assert row["status"] == "ok", row.get("reason")
    return row


@pytest.mark.parametrize("label", INT8_LABELS + FP16_LABELS)
def test_row_measured_with_onnxruntime(rows: dict[str, dict], label: str) -> None:
    row = _ok(rows, label)
    assert row["export"]["custom"] is True
    assert row["metrics"]["accuracy_source"] == "onnxruntime"
    assert "torch_test_metric" in row["metrics"]
    assert row["test_reads"] == 2  # the harness's two final measurements, nothing more


@pytest.mark.parametrize("label", INT8_LABELS)
def test_int8_file_smaller(rows: dict[str, dict], label: str) -> None:
    row = _ok(rows, label)
    dense_bytes = _ok(rows, "dense")["export"]["onnx_bytes"]
    assert dense_bytes / row["export"]["onnx_bytes"] >= MIN_INT8_RATIO
    weight_bytes = row["diagnostics"]["quantisation"]["weight_bytes"]
    assert weight_bytes.get("int8", 0) + weight_bytes.get("uint8", 0) >= 400_000
    assert weight_bytes.get("float32", 0) < 20_000


@pytest.mark.parametrize("label", FP16_LABELS)
def test_fp16_file_half_size(rows: dict[str, dict], label: str) -> None:
    row = _ok(rows, label)
    dense_bytes = _ok(rows, "dense")["export"]["onnx_bytes"]
    assert dense_bytes / row["export"]["onnx_bytes"] >= MIN_FP16_RATIO
    assert row["diagnostics"]["quantisation"]["weight_bytes"].get("float16", 0) > 800_000


@pytest.mark.parametrize("label", INT8_LABELS + FP16_LABELS)
def test_accuracy_close_to_float_model(rows: dict[str, dict], label: str) -> None:
    metrics = _ok(rows, label)["metrics"]
    # The float model after one epoch is weak, so int8 rounding flips a few borderline
    # digits; 3 points on 1,000 test digits still catches a broken scale or zero point.
    tolerance = 0.005 if label.startswith("fp16") else 0.03
    assert abs(metrics["test_metric"] - metrics["torch_test_metric"]) <= tolerance


def test_operators_match_mode(rows: dict[str, dict]) -> None:
    labels = INT8_LABELS + FP16_LABELS
    operators = {
        label: _ok(rows, label)["diagnostics"]["quantisation"]["operators"] for label in labels
    }
    assert "ConvInteger" in operators["int8.dynamic"]
    assert "DynamicQuantizeLinear" in operators["int8.dynamic"]
    for label in ("int8.static", "int8.qat"):
        assert operators[label]["QuantizeLinear"] >= 4
        assert operators[label]["DequantizeLinear"] >= 8
    assert "Cast" in operators["fp16"]


def test_static_records_calibration(rows: dict[str, dict]) -> None:
    details = _ok(rows, "int8.static")["diagnostics"]["quantisation"]
    assert details["scheme"] == "S8S8"
    assert details["format"] == "QDQ"
    assert details["calibration"]["split"] == "train"
    assert details["calibration"]["fed"] == details["calibration"]["samples"]
    assert (
        _ok(rows, "int8.static(activation_type=uint8)")["diagnostics"]["quantisation"]["scheme"]
        == "U8S8"
    )


def test_ptq_consumes_pretraining_only(rows: dict[str, dict]) -> None:
    consumed = _ok(rows, "int8.static")["budget_consumed"]
    assert consumed["epochs_by_kind"] == {"pretrain": BUDGET["epochs"] - BUDGET["finetune_epochs"]}


def test_qat_fine_tunes_within_budget(rows: dict[str, dict]) -> None:
    row = _ok(rows, "int8.qat")
    assert row["budget_consumed"]["epochs_by_kind"] == {
        "pretrain": BUDGET["epochs"] - BUDGET["finetune_epochs"],
        "finetune": BUDGET["finetune_epochs"],
    }
    parity = row["diagnostics"]["quantisation"]["parity_vs_fake_quant"]
    assert parity["top1_agreement"] >= 0.95
    # ONNX Runtime must agree with the PyTorch fake-quant model, which is what was trained.
    assert abs(row["metrics"]["test_metric"] - row["metrics"]["torch_test_metric"]) <= 0.01


def test_dense_pipeline_quantises_dense_model(rows: dict[str, dict]) -> None:
    dense, pipeline = _ok(rows, "dense"), _ok(rows, "dense+int8.static")
    assert pipeline["budget_consumed"]["epochs"] == dense["budget_consumed"]["epochs"]
    # The float model of the pipeline is the dense row's model, trained identically.
    assert pipeline["metrics"]["torch_test_metric"] == pytest.approx(
        dense["metrics"]["test_metric"]
    )
    assert pipeline["family"] == "quantisation"


def test_l1l2_pipeline_exports_int8(rows: dict[str, dict]) -> None:
    label = next((label for label in rows if label.startswith("l1l2.across+int8.static")), None)
    if label is None:
        pytest.skip("l1l2.across is not registered")
    row = _ok(rows, label)
    assert row["metrics"]["accuracy_source"] == "onnxruntime"
    assert row["diagnostics"]["quantisation"]["weight_bytes"].get("int8", 0) > 0
    assert row["diagnostics"]["quantisation"]["size_ratio"] >= MIN_INT8_RATIO


# Calibration never reads the test split.


class RecordingReader(TrainingCalibrationReader):
    """Calibration reader that keeps every batch it hands to ONNX Runtime."""

    fed_batches: list[np.ndarray] = []

    def get_next(self):
        feed = super().get_next()
        if feed is not None:
            RecordingReader.fed_batches.append(feed[self.input_name])
        return feed


@pytest.fixture(scope="module")
def task():
    return load_task(TaskSpec("lenet5-mnist-sample", train_limit=300))


def _harness(task, method, tmp_path: Path) -> Harness:
    training = TrainingConfig(threads=1, progress=False)
    return Harness(
        task,
        method,
        Budget(epochs=2, finetune_epochs=1),
        training,
        0,
        tmp_path / "work",
        tmp_path / "cache",
    )


def _rows_of(array: np.ndarray) -> set[bytes]:
    return {np.ascontiguousarray(row, dtype=np.float32).tobytes() for row in array}


def test_static_calibration_reads_training_split(
    task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    RecordingReader.fed_batches = []
    monkeypatch.setattr(quantisation, "TrainingCalibrationReader", RecordingReader)
    method = Int8Static(Int8Static.Params(calibration_samples=100))
    harness = _harness(task, method, tmp_path)
    ctx = harness.new_context()

    assert method.export(task.build_model(), tmp_path / "static.onnx", ctx)

    fed = np.concatenate(RecordingReader.fed_batches)
    assert len(fed) == 100
    train, val, test = (
        _rows_of(getattr(task.data, f"{s}_x").numpy()) for s in ("train", "val", "test")
    )
    fed_rows = _rows_of(fed)
    assert fed_rows <= train
    assert not fed_rows & test
    assert not fed_rows & val
    assert harness.test_reads == 0
    assert "test" not in harness._data_on_device  # the test split never reached the method


@pytest.mark.parametrize("method_cls", [Int8Static, Int8QAT])
def test_export_follows_suite_options(
    method_cls, task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    RecordingReader.fed_batches = []
    monkeypatch.setattr(quantisation, "TrainingCalibrationReader", RecordingReader)
    method = method_cls(method_cls.Params(calibration_samples=100))
    ctx = _harness(task, method, tmp_path).new_context()
    ctx.export_options = {"opset": 18, "dynamic_batch": True}
    model = task.build_model()
    if method_cls is Int8QAT:
        model = method.after_finetune(method.before_finetune(model, ctx), ctx)

    assert method.export(model, tmp_path / "model.onnx", ctx)

    exported = onnx.load(str(tmp_path / "model.onnx"))
    opsets = {entry.domain: entry.version for entry in exported.opset_import}
    assert opsets[""] == 18
    batch_axis = exported.graph.input[0].type.tensor_type.shape.dim[0]
    assert not batch_axis.HasField("dim_value")
    assert run_onnx(tmp_path / "model.onnx", task.data.val_x[:5], batch_size=5).shape == (5, 10)
    if method_cls is Int8Static:
        assert {len(batch) for batch in RecordingReader.fed_batches} == {32}


def test_qat_calibration_reads_training_split(task, tmp_path: Path) -> None:
    method = Int8QAT(Int8QAT.Params(calibration_samples=64))
    harness = _harness(task, method, tmp_path)
    ctx = harness.new_context()

    model = method.before_finetune(task.build_model(), ctx)
    model = method.after_finetune(model, ctx)
    assert method.export(model, tmp_path / "qat.onnx", ctx)

    assert ctx.diagnostics["qat"]["calibration"] == {"split": "train", "samples": 64}
    assert harness.test_reads == 0
    assert "test" not in harness._data_on_device


def test_reader_rejects_zero_samples(task, tmp_path: Path) -> None:
    ctx = _harness(task, Int8Static(), tmp_path).new_context()
    with pytest.raises(ValueError, match="at least one sample"):
        TrainingCalibrationReader(ctx, "input", 0, 1)


def test_reader_strides_divide_batches(task, tmp_path: Path) -> None:
    ctx = _harness(task, Int8Static(), tmp_path).new_context()
    reader = TrainingCalibrationReader(ctx, "input", 120, 1)
    assert len(reader) == 120
    assert 120 % reader.stride() == 0
    reader.set_range(10, 20)
    fed = []
    while (feed := reader.get_next()) is not None:
        fed.append(feed)
    assert len(fed) == 10


# Parameters.


@pytest.mark.parametrize(
    ("method_cls", "values", "field"),
    [
        (Int8Static, {"calibration": "kl"}, "calibration"),
        (Int8Static, {"calibration_samples": 0}, "calibration_samples"),
        (Int8Static, {"percentile": 10.0}, "percentile"),
        (Int8Static, {"activation_type": "int4"}, "activation_type"),
        (Int8Dynamic, {"weight_type": "int16"}, "weight_type"),
        (Fp16, {"compute": "bfloat16"}, "compute"),
        (Int8QAT, {"averaging_constant": 0.0}, "averaging_constant"),
    ],
)
def test_invalid_parameters_rejected(method_cls, values: dict, field: str) -> None:
    with pytest.raises(MethodError, match=field):
        parse_params(method_cls, values, "test")


# Helpers on small models.


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4 * 3 * 3, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _trained_small_net() -> SmallNet:
    torch.manual_seed(0)
    model = SmallNet()
    with torch.no_grad():
        model.features[1].running_mean.uniform_(-0.5, 0.5)
        model.features[1].running_var.uniform_(0.5, 2.0)
        model.features[1].weight.uniform_(0.5, 1.5)
    return model.eval()


def test_fold_batch_norms_keeps_outputs() -> None:
    model = _trained_small_net()
    inputs = torch.randn(8, 1, 8, 8)
    expected = model(inputs)
    assert fold_batch_norms(model) == 1
    assert isinstance(model.features[1], nn.Identity)
    torch.testing.assert_close(model(inputs), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("per_channel", [True, False])
def test_qat_export_folds_weights_to_int8(per_channel: bool, tmp_path: Path) -> None:
    model = _trained_small_net()
    fold_batch_norms(model)
    prepare_qat(model, QuantSettings(per_channel=per_channel))
    inputs = torch.randn(64, 1, 8, 8)
    for quantizer in quantizers(model):
        quantizer.calibrating = True
    with torch.no_grad():
        model(inputs)
    for quantizer in quantizers(model):
        quantizer.calibrating = False
        quantizer.frozen = True

    export_onnx(model, inputs[:1], tmp_path / "qdq.onnx")
    folded = fold_weight_quantizers(onnx.load(str(tmp_path / "qdq.onnx")))
    onnx.checker.check_model(folded)
    onnx.save(folded, str(tmp_path / "int8.onnx"))

    dtypes = {
        numpy_helper.to_array(init).dtype
        for init in folded.graph.initializer
        if len(init.dims) >= 2
    }
    assert dtypes == {np.dtype(np.int8)}
    biases = [init for init in folded.graph.initializer if init.name.endswith("_quantized")]
    assert {numpy_helper.to_array(b).dtype for b in biases} == {np.dtype(np.int32)}
    with torch.no_grad():
        expected = model(inputs).numpy()
    np.testing.assert_allclose(run_onnx(tmp_path / "int8.onnx", inputs), expected, atol=0.05)


def test_fp16_weights_keep_float32_arithmetic(tmp_path: Path) -> None:
    model = _trained_small_net()
    inputs = torch.randn(16, 1, 8, 8)
    export_onnx(model, inputs[:1], tmp_path / "float.onnx")
    converted, count = convert_weights_to_fp16(onnx.load(str(tmp_path / "float.onnx")))
    onnx.save(converted, str(tmp_path / "fp16.onnx"))
    assert count >= 2
    with torch.no_grad():
        expected = model(inputs).numpy()
    np.testing.assert_allclose(run_onnx(tmp_path / "fp16.onnx", inputs), expected, atol=1e-2)


def test_fake_quantize_requires_observation() -> None:
    model = SmallNet().eval()
    prepare_qat(model, QuantSettings())
    with pytest.raises(MethodError, match="calibrate"):
        model(torch.randn(1, 1, 8, 8))


def test_qat_keeps_shared_parameters() -> None:
    model = SmallNet()
    weight = model.classifier[1].weight
    prepare_qat(model, QuantSettings())
    assert model.classifier[1].weight is weight
    assert copy.deepcopy(model).classifier[1].weight is not weight
