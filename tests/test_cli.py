"""Command-line errors: bad options and folders give one clear line and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.cli import main


def test_report_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    error = capsys.readouterr().err
    assert "results folder" in error
    assert "not found" in error


def test_report_rows_folder_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rows").mkdir()
    assert main(["report", str(tmp_path / "rows")]) == 2
    assert f"here {tmp_path}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (["--threads", "0"], "--threads must be at least 1"),
        (["--max-retries", "-1"], "--max-retries must be 0 or more"),
        (["--retry-failed"], "add --resume"),
        (["--address", "127.0.0.1:1"], "--executor ray only"),
    ],
)
def test_run_rejects_bad_options(options: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "default", "--dry-run", *options]) == 2
    assert message in capsys.readouterr().err
