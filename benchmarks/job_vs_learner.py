"""The main job against its own learner: rows/s of the Ray job (HTTP serving, Ray Data hand-off, Train worker,
controller, replica sync) and of the same learner, strategy and windows replayed in one process.

    python benchmarks/job_vs_learner.py [--windows 50 1000] [--rows 45312] [--profile 15]

For each window size W:

* **learner** (the oracle): ``train.replay_in_process`` on Elec2 (``jobs/configs/elec2_builtin.yaml``): predict a
  window with the model trained on every window before it, then learn it; no Ray, no HTTP, one process.
* **job**: ``python jobs/continuous.py --config jobs/configs/elec2.yaml`` (Elec2's CSV read as a user's table, the
  same rows bit for bit) on its own local cluster, as ``make run`` starts it. Its rows/s are over the stream
  (``run.stream_s``: from the first window served to the last one learned and on every replica); start-up (Ray,
  Serve, Train's worker group) and shut-down are given apart.

Accuracy is over every row for both (each row answered before its label was learned); ``agree`` is the share of
rows where the served answer equals the oracle's. The two run one after the other, never at once.

``--profile S``: during the first job, py-spy records the driver, the Train worker, one replica and the
controller for ``S`` seconds once the stream is warm (idle time included: where each waits), writes their flame
graphs to ``runs/profiles/`` and prints each process's heaviest frames.

Output: a table on stdout (recorded in benchmarks/results/job_vs_learner.txt).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddn_ray import config
from ddn_ray.train import replay_in_process
from ddn_ray.usecases import datasets

# role: (a mark in its command line, a mark of the stacks summarised, py-spy's --idle). The driver's and the
# Train worker's main loops are timed with their waits (where each waits is the finding); the replica and the
# controller mostly wait for work, so for them only samples on a CPU count, as a share of the duration.
ROLES = {
    "driver": ("jobs/continuous.py", "<module> (continuous.py", True),
    "worker": ("RayTrainWorker", "train_loop_per_worker", True),
    "replica": ("ServeReplica", "", False),
    "controller": ("ControllerActor", "", False),
}
RATE_HZ = 100


def run_job(
    window: int, rows: int, out: Path, profile_s: float, overrides: list[str]
) -> tuple[dict, np.ndarray, dict[str, list[str]]]:
    """The main job as ``make run`` starts it; returns its report, served predictions and profile summaries."""
    cmd = [
        sys.executable,
        str(ROOT / "jobs" / "continuous.py"),
        "--config",
        str(ROOT / "jobs" / "configs" / "elec2.yaml"),
        "--set",
        f"stream.window_size={window}",
        "--set",
        f"data.max_rows={rows}",
        "--set",
        f"report.output_dir={out}",
        "--set",
        f"run_name=w{window}",
        "--set",
        f"storage_path={out / 'storage'}",
        *(a for o in overrides for a in ("--set", o)),
    ]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    with open(out / f"w{window}.log", "w") as log:
        job = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        profiles = profile(job.pid, out, profile_s) if profile_s > 0 else {}
        if job.wait(timeout=3600) != 0:
            raise RuntimeError(f"the job failed: see {out / f'w{window}.log'}")
    report = json.loads((out / f"w{window}" / "report.json").read_text())
    served = np.load(out / f"w{window}" / "predictions.npz")
    assert np.array_equal(served["offset"], np.arange(rows)), "the job did not serve every row once"
    return report, served["prediction"], profiles


def profile(pid: int, out: Path, seconds: float) -> dict[str, list[str]]:
    """py-spy each role's process for ``seconds`` once the stream is warm; return each one's heaviest frames."""
    import psutil

    deadline = time.monotonic() + 300
    found: dict[str, int] = {}
    while time.monotonic() < deadline and len(found) < len(ROLES):
        time.sleep(2.0)
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        for p in procs:
            try:
                line = " ".join(p.cmdline())
            except psutil.Error:
                continue
            for role, (mark, _, _) in ROLES.items():
                if mark in line and role not in found:
                    found[role] = p.pid
    time.sleep(20.0)  # the stream's first windows (warm-up) are not what we profile
    target = ROOT / "runs" / "profiles"
    target.mkdir(parents=True, exist_ok=True)
    spies = {}
    for role, p in found.items():
        cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(p), "--duration", str(int(seconds))]
        cmd += ["--rate", str(RATE_HZ), "--format", "raw", "--output", str(out / f"{role}.txt")]
        spies[role] = subprocess.Popen(
            cmd + ["--idle"] * ROLES[role][2], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    summaries = {}
    for role, spy in spies.items():
        spy.wait()
        raw = out / f"{role}.txt"
        if raw.exists():
            (target / f"{role}.txt").write_text(raw.read_text())
            summaries[role] = heaviest(raw, ROLES[role][1], None if ROLES[role][2] else seconds * RATE_HZ)
    return summaries


def heaviest(raw: Path, stack_mark: str, of_samples: float | None, top: int = 10) -> list[str]:
    """The frames of our code (``ddn_ray``, ``jobs``) with the largest inclusive share of the stacks that hold
    ``stack_mark`` (of ``of_samples`` when given: a share of the whole duration), one line per source line."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack_mark not in stack:
            continue
        n = int(count)
        total += n
        seen = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            key = f"{name} ({where.rsplit('/', 1)[-1]}"
            if key not in seen and ("ddn_ray/" in frame or "continuous.py" in frame):
                seen.add(key)
                inclusive[key] += n
    denominator = of_samples or max(total, 1)
    return [f"{100 * n / denominator:5.1f}% {k}" for k, n in inclusive.most_common(top)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, nargs="+", default=[50, 1000])
    parser.add_argument("--rows", type=int, default=45_312)
    parser.add_argument("--profile", type=float, default=0.0, help="py-spy the first job for this many seconds")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="for the job, e.g. train.use_gpu=true"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = config.load(ROOT / "jobs" / "configs" / "elec2_builtin.yaml", {"data": {"max_rows": args.rows}})
    table = datasets.load_elec2(base.data.path, base.data.max_rows)
    y = table.labels
    lines = []
    profiles: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="job_vs_learner-") as tmp:
        for i, w in enumerate(args.windows):
            cfg = base.model_copy(update={"stream": base.stream.model_copy(update={"window_size": w})})
            t0 = time.perf_counter()
            oracle = replay_in_process(cfg, table).predictions
            oracle_s = time.perf_counter() - t0
            report, served, prof = run_job(w, len(y), Path(tmp), args.profile if i == 0 else 0.0, args.set)
            profiles |= {f"W={w} {k}": v for k, v in prof.items()}
            run = report["run"]
            job_rate, oracle_rate = len(y) / run["stream_s"], len(y) / oracle_s
            acc_o, acc_j = float(np.mean(oracle == y)), float(np.mean(served == y))
            lines.append(
                f"| {w:5d} | {len(y):,} | {oracle_s:6.1f} | {oracle_rate:7,.0f} | {run['stream_s']:6.1f} "
                f"| {job_rate:7,.0f} | **{job_rate / oracle_rate:.2f}x** | {run['wall_s'] - run['stream_s']:6.1f} "
                f"| {acc_o:.2%} | {acc_j:.2%} | {100 * (acc_j - acc_o):+.2f} | {np.mean(served == oracle):.2%} |"
            )
            print(lines[-1], flush=True)
    print()
    print(
        f"Elec2, {len(y):,} rows; {base.train.optimizer} lr={base.train.lr} batch={base.train.batch_size} "
        f"epochs/window={base.train.epochs_per_window}; job: {base.train.num_workers} Train worker, "
        f"{base.serve.num_replicas} replicas, max_lag_windows={base.stream.max_lag_windows}"
        + (f"; job overrides: {' '.join(args.set)}" if args.set else "")
    )
    print(
        "| W | rows | learner s | learner rows/s | job stream s | job rows/s | job / learner | job start+stop s "
        "| learner accuracy | job accuracy | points | agree |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    for role, top in profiles.items():
        print(f"\npy-spy, {role} ({args.profile:.0f} s), inclusive share (driver, worker: of their main loop's time):")
        print("\n".join(f"    {t}" for t in top))


if __name__ == "__main__":
    main()
