"""The CLI's surface: every subcommand's --help ends with a runnable example; bad use fails clearly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ddn_ray import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", ["run", "tune", "submit", "serve", "report"])
def test_help_shows_an_example(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"example:\n  ddn-ray {command} " in out
    if command in cli.JOB_SCRIPTS:  # the recipe's own options follow
        assert "--config" in out and "--set" in out


def test_top_level_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("run", "tune", "submit", "serve", "report"):
        assert f"ddn-ray {command} " in out


def test_report_of_a_directory_without_a_run_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape("report.json")):
        cli.main(["report", str(tmp_path)])


def test_submit_checks_the_files_before_contacting_a_cluster(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape("jobs/continuous.py")):
        cli.submit("http://127.0.0.1:1", "jobs/configs/elec2.yaml", [], working_dir=str(tmp_path))


def test_unknown_options_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", "runs/x", "--bogus"])
    assert exit_info.value.code == 2 and "--bogus" in capsys.readouterr().err
