"""A killed driver: the main job on Elec2 run as ``python jobs/continuous.py`` (its own local Ray cluster),
SIGKILLed mid-run, then started again with the same ``run_name``.

    python benchmarks/driver_kill.py [--rows 6000] [--kill-after-windows 30]

Measured (one clock, ``time.monotonic``):

* the kill: rows whose answers were on disk (``served/``), and how long until no process the driver had
  started was left (Ray's GCS and raylet exit by themselves; the driver's reaper kills its agents);
* the restart: seconds until its first window was served, the offset it resumed at (its checkpoint), the
  windows served and trained again, and its report: rows, every offset once, each attempt's share.

Prints a table; exits 1 when a process outlived the driver by 20 s or the report misses or repeats a row.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--kill-after-windows", type=int, default=30)
    args = parser.parse_args()

    from ddn_ray import config
    from ddn_ray.cli import served_report

    out = ROOT / "runs" / "bench_driver_kill"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    run_name = f"driver-kill-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = config.load(
        ROOT / "jobs" / "configs" / "elec2.yaml",
        {
            "data": {"max_rows": args.rows},
            "stream": {"window_size": 100},
            "train": {"checkpoint_every_windows": 10},
            "report": {"output_dir": str(out / "runs"), "static_windows": 5},
            "serve": {"port": 18410},
            "storage_path": str(out / "storage"),
            "run_name": run_name,
        },
    )
    (out / "job.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    run_dir = Path(cfg.storage_path) / run_name
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, str(ROOT / "jobs" / "continuous.py"), "--config", str(out / "job.yaml")]

    def windows_on_disk() -> list[Path]:
        return sorted(run_dir.glob("served/*/w*.parquet"))

    # 1. the first attempt, killed once it has served --kill-after-windows windows
    with open(out / "first.log", "w") as log:
        driver = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while len(windows_on_disk()) < args.kill_after_windows and time.monotonic() < deadline:
            if driver.poll() is not None:
                sys.exit(f"the first attempt ended before the kill; see {out / 'first.log'}")
            time.sleep(0.05)
        started = {}
        for p in psutil.Process(driver.pid).children(recursive=True):
            try:
                started[p.pid] = p.create_time()
            except psutil.NoSuchProcess:
                continue
        killed_at = time.monotonic()
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    left = dict(started)
    while left and time.monotonic() - killed_at < 20:
        for pid, t in list(left.items()):
            try:
                p = psutil.Process(pid)
                if p.create_time() != t or p.status() == psutil.STATUS_ZOMBIE:
                    del left[pid]
            except psutil.NoSuchProcess:
                del left[pid]
        time.sleep(0.1)
    all_gone_s = time.monotonic() - killed_at
    for pid, t in left.items():  # what outlived it, by PID (then the run fails)
        try:
            if psutil.Process(pid).create_time() == t:
                psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    before = served_report(run_dir, write=False)

    # 2. the same run again: it resumes at its checkpoint
    first_attempt = {p.parent for p in windows_on_disk()}
    restart_at = time.monotonic()
    with open(out / "second.log", "w") as log:
        second = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        first_new = None
        while second.poll() is None:
            if first_new is None and any(p.parent not in first_attempt for p in windows_on_disk()):
                first_new = time.monotonic() - restart_at
            time.sleep(0.05)
    wall_s = time.monotonic() - restart_at
    if second.returncode != 0:
        sys.exit(f"the resumed attempt failed; see {out / 'second.log'}")
    report = json.loads((Path(cfg.report.output_dir) / run_name / "report.json").read_text())
    with np.load(Path(cfg.report.output_dir) / run_name / "predictions.npz") as z:
        offsets = z["offset"]
    once = bool(len(offsets) == args.rows and (offsets == np.arange(args.rows)).all())
    first, resumed = report["run"]["attempts"]
    again = before["offsets"][1] - resumed["first_offset"]

    print(f"# python benchmarks/driver_kill.py --rows {args.rows} --kill-after-windows {args.kill_after_windows}")
    print(f"# ({time.strftime('%Y-%m-%d')}, 2 CPUs), run {run_name}, 100-row windows, a checkpoint every 10")
    print("\n| SIGKILL of the driver (its own local cluster) | measured |")
    print("|---|---|")
    print(f"| rows whose answers were on disk at the kill | {before['rows_served']:,} |")
    print(f"| kill -> no process the driver started left | {all_gone_s:.1f} s ({len(started)} processes) |")
    print(f"| processes that outlived it by 20 s | {len(left)} |")
    print(f"| restart -> its first window served | {first_new:.1f} s |")
    print(f"| resumed at offset (its checkpoint) | {resumed['first_offset']:,} |")
    print(f"| rows served again after the restart (answered by both attempts) | {again:,} |")
    print(f"| resumed attempt, start to report | {wall_s:.1f} s |")
    print(
        f"| the report: rows, every offset once, attempts' shares | {report['run']['rows_served']:,}, "
        f"{'yes' if once else 'NO'}, {first['rows']:,} + {resumed['rows']:,} |"
    )
    sys.exit(0 if once and not left else 1)


if __name__ == "__main__":
    main()
