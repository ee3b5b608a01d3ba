"""Result rows: the versioned schema, environment capture, and atomic storage.

A results folder contains one JSON file per run under ``rows/``, named by the run id. Each file
is written to a temporary name and renamed, so a killed run never leaves a partial row and
never touches the rows already written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from benchmark.errors import ResultsError

__all__ = [
    "SCHEMA_VERSION",
    "ResultStore",
    "capture_environment",
    "run_id",
    "write_json_atomic",
]

logger = logging.getLogger(__name__)

# Bump when the row layout changes; loading rows of another version fails with advice.
SCHEMA_VERSION = 1

STATUS_OK = "ok"
STATUS_FAILED = "failed"

_PACKAGES = (
    "compressbench", "torch", "numpy", "onnx", "onnxruntime", "torch-pruning", "mlxtend",
    "optuna", "nni", "scikit-learn",
)


def run_id(identity: dict[str, Any]) -> str:
    """Return a stable id for a run: a hash of its canonical JSON identity."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(payload, stream, indent=2, default=_json_default)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp creates the file readable by its owner only; rows are shared results.
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a result row")


class ResultStore:
    """The rows of one suite, one JSON file per run, under ``root/rows``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.rows_dir = self.root / "rows"

    def path_for(self, rid: str) -> Path:
        return self.rows_dir / f"{rid}.json"

    def write(self, row: dict[str, Any]) -> Path:
        if row.get("schema_version") != SCHEMA_VERSION:
            raise ResultsError(f"refusing to write a row without schema_version {SCHEMA_VERSION}")
        path = self.path_for(row["run_id"])
        write_json_atomic(path, row)
        return path

    def get(self, rid: str) -> dict[str, Any] | None:
        path = self.path_for(rid)
        if not path.exists():
            return None
        return self._load(path)

    def rows(self) -> list[dict[str, Any]]:
        return list(self.iter_rows())

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        if not self.rows_dir.is_dir():
            return
        for path in sorted(self.rows_dir.glob("*.json")):
            yield self._load(path)

    def _load(self, path: Path) -> dict[str, Any]:
        try:
            row = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ResultsError(f"{path}: unreadable result row ({error}); delete it and rerun with --resume") from error
        version = row.get("schema_version") if isinstance(row, dict) else None
        if version != SCHEMA_VERSION:
            raise ResultsError(
                f"{path}: result row has schema version {version!r}, but this CompressBench "
                f"reads version {SCHEMA_VERSION}; rerun the suite with a new --output folder, "
                "or install the CompressBench version that wrote it"
            )
        return row


def capture_environment(threads: int | None = None) -> dict[str, Any]:
    """Return what the figures of a row depend on: versions, CPU, threads and git commit."""
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": sys.version.split()[0],
        "packages": versions,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads or torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": _git_commit(),
    }


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@functools.lru_cache(maxsize=1)
def _git_commit() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit
