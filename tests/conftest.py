"""Fixtures shared by all tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from support import write_mnist_folder


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Two test processes may share two cores; one thread each keeps timings sane.
    torch.set_num_threads(1)


@pytest.fixture
def mnist_folder(tmp_path: Path) -> Path:
    return write_mnist_folder(tmp_path / "mnist")
