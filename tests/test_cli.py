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


def test_dry_run_shows_what_resume_skips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite_file = tmp_path / "plan.toml"
    suite_file.write_text(
        '[suite]\nname = "plan"\nseeds = [0, 1]\n[budget]\nepochs = 1\nfinetune_epochs = 0\n'
        "[training]\nthreads = 1\nprogress = false\n[export]\nparity_samples = 16\n"
        '[[tasks]]\nname = "lenet5-mnist-sample"\ntrain_limit = 200\n[[methods]]\nname = "dense"\n'
    )
    output = tmp_path / "out"
    run = ["run", str(suite_file), "--output", str(output)]
    assert main([*run, "--dry-run"]) == 0
    assert capsys.readouterr().out.count("\trun\n") == 2

    # Keep one row by removing the other, as a killed run would leave the folder.
    assert main(run) == 0
    rows = sorted((output / "rows").glob("*.json"))
    assert len(rows) == 2
    rows[1].unlink()
    capsys.readouterr()

    assert main([*run, "--dry-run"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main([*run, "--dry-run", "--resume"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split("\t")[-1] for line in lines) == ["run", "skip (ok row exists)"]
    assert len(list((output / "rows").glob("*.json"))) == 1
