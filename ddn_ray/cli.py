"""The ``ddn-ray`` command line.

Subcommands run the job recipes in ``jobs/`` (found in the current directory, or next
to an editable install), so the CLI and ``ray job submit`` run the very same script.

Example:
    ddn-ray run --config jobs/configs/elec2.yaml --set data.max_rows=8000
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

__all__ = ["main"]

JOBS = {"run": "continuous.py"}


def _job_path(script: str) -> Path:
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        path = root / "jobs" / script
        if path.is_file():
            return path
    raise SystemExit(f"ddn-ray: jobs/{script} not found in {Path.cwd()} or beside the package; run from the repo root")


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and run the chosen job's recipe as ``__main__``."""
    parser = argparse.ArgumentParser(
        prog="ddn-ray",
        description="Dynamic deep networks on Ray.",
        epilog="example: ddn-ray run --config jobs/configs/elec2.yaml --set data.max_rows=8000",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="the main job: continuous train-and-serve with a report",
        epilog="example: ddn-ray run --config jobs/configs/elec2.yaml --set train.num_workers=2",
        add_help=False,
    )
    run.add_argument("-h", "--help", action="store_true")
    args, rest = parser.parse_known_args(argv)
    script = _job_path(JOBS[args.command])
    sys.argv = [str(script), *rest, *(["--help"] if args.help else [])]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
