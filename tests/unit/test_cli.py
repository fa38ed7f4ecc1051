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


def test_sigterm_to_a_foreground_command_stops_its_child_and_everything_the_child_left(tmp_path) -> None:
    """``ddn-ray serve`` runs ``serve run`` through ``run_foreground``: a SIGTERM reaches the child as SIGINT,
    and what the child started (here a grandchild that ignores SIGTERM, as Ray's agents do) dies with it."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    child = tmp_path / "child.py"
    child.write_text(
        textwrap.dedent(
            f"""
            import signal, subprocess, sys, time
            code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
            g = subprocess.Popen([sys.executable, "-c", code])
            open({str(tmp_path / "grandchild.pid")!r}, "w").write(str(g.pid))
            def stop(*_):
                open({str(tmp_path / "got_sigint")!r}, "w").write("yes")
                sys.exit(0)
            signal.signal(signal.SIGINT, stop)
            time.sleep(600)
            """
        )
    )
    wrapper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys; from ddn_ray.cli import run_foreground; sys.exit(run_foreground([sys.executable, {str(child)!r}]))",
        ]
    )
    pid_file = tmp_path / "grandchild.pid"
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=20) == 0
    assert (tmp_path / "got_sigint").read_text() == "yes"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        # a zombie until its parent is reaped: gone from the process table's point of view when its state is Z
        status = Path(f"/proc/{grandchild}/status")
        if status.exists() and "State:\tZ" in status.read_text():
            break
        time.sleep(0.05)
    else:
        os.kill(grandchild, signal.SIGKILL)
        raise AssertionError("the grandchild outlived the command")
