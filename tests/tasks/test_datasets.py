"""Loaders, on small files that the tests write."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
from support import write_cifar_folder, write_idx, write_mnist_folder

from benchmark.errors import ConfigError, DataError
from benchmark.tasks import datasets as ds
from benchmark.tasks.registry import TaskSpec, load_task


@pytest.mark.parametrize("compress", [False, True])
def test_idx_folder_loads(tmp_path: Path, compress: bool) -> None:
    folder = write_mnist_folder(tmp_path / "m", train=30, test=10, compress=compress)
    data = ds.load_mnist_folder(folder)
    assert data.train_images.shape == (30, 1, 28, 28)
    assert data.test_images.shape == (10, 1, 28, 28)
    assert data.train_labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert data.train_images.dtype == np.uint8


def test_idx_values_round_trip(tmp_path: Path) -> None:
    images = np.arange(2 * 28 * 28, dtype=np.uint32).reshape(2, 28, 28) % 256
    path = write_idx(tmp_path / "x-idx3-ubyte", images.astype(np.uint8))
    assert np.array_equal(ds.read_idx_file(path), images.astype(np.uint8))


def test_idx_truncated_names_file(tmp_path: Path) -> None:
    folder = write_mnist_folder(tmp_path / "m", train=30, test=10)
    target = folder / "train-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(DataError) as error:
        ds.load_mnist_folder(folder)
    assert str(target) in str(error.value)
    assert "truncated" in str(error.value)


def test_idx_bad_magic_names_file(tmp_path: Path) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="not an idx file") as error:
        ds.read_idx_file(path)
    assert str(path) in str(error.value)


def test_corrupt_gzip_names_file(tmp_path: Path) -> None:
    folder = write_mnist_folder(tmp_path / "m", train=30, test=10, compress=True)
    target = folder / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:15])
    with pytest.raises(DataError, match="gzip") as error:
        ds.load_mnist_folder(folder)
    assert str(target) in str(error.value)


def test_idx_missing_file_listed(tmp_path: Path) -> None:
    folder = write_mnist_folder(tmp_path / "m")
    (folder / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match="missing t10k-images-idx3-ubyte"):
        ds.load_mnist_folder(folder)


def test_idx_labels_out_of_range(tmp_path: Path) -> None:
    folder = write_mnist_folder(tmp_path / "m", train=10, test=10)
    write_idx(folder / "train-labels-idx1-ubyte", np.full(10, 12, dtype=np.uint8))
    with pytest.raises(DataError, match="labels range over 12..12"):
        ds.load_mnist_folder(folder)


def test_fashion_mnist_user_folder(tmp_path: Path) -> None:
    folder = write_mnist_folder(tmp_path / "fashion")
    data = ds.load_fashion_mnist(folder)
    assert data.name == "fashion-mnist"
    assert data.class_names[9] == "ankle boot"


def test_mnist_sample_csv_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(20, 784))
    labels = np.arange(20) % 10
    lines = [",".join(map(str, [*row, label])) for row, label in zip(pixels, labels, strict=False)]
    path = tmp_path / "mnist_5k.csv.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    data = ds.load_mnist_sample(path)
    assert data.train_images.shape == (20, 1, 28, 28)
    assert np.array_equal(data.train_images.reshape(20, -1), pixels.astype(np.uint8))
    assert data.test_images is None


def test_mnist_sample_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text("1,2,3\n")
    with pytest.raises(DataError, match="784 pixels") as error:
        ds.load_mnist_sample(path)
    assert str(path) in str(error.value)


def test_mnist_sample_shipped() -> None:
    data = ds.load_mnist_sample()
    assert data.train_images.shape == (5000, 1, 28, 28)
    assert np.bincount(data.train_labels).tolist() == [500] * 10


@pytest.mark.parametrize("num_classes", [10, 100])
def test_cifar_folder_loads(tmp_path: Path, num_classes: int) -> None:
    write_cifar_folder(tmp_path, num_classes)
    data = ds.load_cifar(tmp_path, num_classes)
    assert data.train_images.shape[1:] == (3, 32, 32)
    assert data.num_classes == num_classes
    assert data.class_names[1] == "class1"


def test_cifar_corrupt_pickle_names_file(tmp_path: Path) -> None:
    folder = write_cifar_folder(tmp_path, 10)
    target = folder / "data_batch_3"
    target.write_bytes(target.read_bytes()[:50])
    with pytest.raises(DataError, match="corrupt CIFAR pickle") as error:
        ds.load_cifar(tmp_path, 10)
    assert str(target) in str(error.value)


def test_cifar_wrong_row_size(tmp_path: Path) -> None:
    folder = write_cifar_folder(tmp_path, 10)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match="3072 bytes") as error:
        ds.load_cifar(folder, 10)
    assert "test_batch" in str(error.value)


def test_download_without_torchvision(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    try:
        import torchvision  # noqa: F401
    except Exception:
        with pytest.raises(DataError, match="compressbench\\[torchvision\\]"):
            ds.download_with_torchvision("mnist", tmp_path)
    else:
        pytest.skip("torchvision is installed; the missing-package error cannot be shown")


def test_task_needs_data_dir() -> None:
    with pytest.raises(DataError, match="needs data_dir"):
        load_task(TaskSpec("vgg16-cifar10"))


def test_unknown_task_lists_known() -> None:
    with pytest.raises(ConfigError, match="lenet5-mnist-sample"):
        load_task(TaskSpec("lenet9-imagenet"))


def test_cifar_task_from_folder(tmp_path: Path) -> None:
    write_cifar_folder(tmp_path, 10)
    task = load_task(TaskSpec("resnet56-cifar10", data_dir=str(tmp_path), model_options=(("width_mult", 0.25),)))
    assert task.input_shape == (3, 32, 32)
    model = task.build_model()
    assert model.fc.out_features == 10
