"""Fixtures shared by all tests."""

from __future__ import annotations

import subprocess
import sys
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


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the example plugin package into a folder of its own; return that folder."""
    target = tmp_path_factory.mktemp("plugin-site")
    source = Path(__file__).parent / "example_plugin"
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
        "--target", str(target), str(source),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return target
