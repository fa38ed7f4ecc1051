"""The main job against its own learner: rows/s of the Ray job (HTTP serving, the window hand-off, Train worker,
controller, replica sync) and of the same learner, strategy and windows replayed in one process.

    python benchmarks/job_vs_learner.py [--windows 50 1000] [--rows 45312] [--profile 15]
                                        [--workers 2] [--outside-rps 20] [--set train.use_gpu=true]

For each window size W:

* **learner** (the oracle): ``train.replay_in_process`` on Elec2 (``jobs/configs/elec2_builtin.yaml``): predict a
  window with the model trained on every window before it, then learn it; no Ray, no HTTP, one process.
* **job**: ``python jobs/continuous.py --config jobs/configs/elec2.yaml`` (Elec2's CSV read as a user's table, the
  same rows bit for bit) on its own local cluster, as ``make run`` starts it. Its rows/s are over the stream
  (``run.stream_s``: from the first window served to the last one learned and on every replica); start-up (Ray,
  Serve, Train's worker group) and shut-down are given apart.

``--workers N``: the first W again with N Train workers (DDP; each rank learns its half of a window, so rows
agree with the one-process learner less). ``--outside-rps R``: the first W again while an outside client sends
R one-row requests/s to the job's ``/predict`` (serving while training: the load's latency and failures).

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
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
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


class OutsideLoad:
    """A steady outside client of the job's Serve app: ``rps`` requests/s of one named record each to
    ``/predict`` from one thread (a 1-row request every ``1/rps`` s), from the app's first answer to the job's
    end. Collects latencies (s) and failures: those before the last answer (the app was up), and those after it
    (the job had deleted its app at its end) apart."""

    def __init__(self, url: str, rps: float, features: list[str]) -> None:
        self.url, self.period, self.features = url, 1.0 / rps, features
        self.latencies: list[float] = []
        self.outcomes: list[tuple[bool, str]] = []  # (answered, status or exception), in order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        s, rng = requests.Session(), np.random.default_rng(0)
        started = False
        while not self._stop.is_set():
            body = {"records": [dict(zip(self.features, rng.random(len(self.features)).round(4).tolist()))]}
            t0 = time.perf_counter()
            try:
                status = str(s.post(self.url, json=body, timeout=30).status_code)
            except requests.RequestException as exc:
                status = type(exc).__name__
            ok = status == "200"
            if ok:
                started = True
                self.latencies.append(time.perf_counter() - t0)
            if started:  # before the app's first answer, the job is still starting
                self.outcomes.append((ok, status))
            self._stop.wait(max(0.0, self.period - (time.perf_counter() - t0)))

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        ms = 1000 * np.array(self.latencies or [float("nan")])
        last = max((i for i, (ok, _) in enumerate(self.outcomes) if ok), default=-1)
        during = [status for ok, status in self.outcomes[: last + 1] if not ok]
        after = [status for ok, status in self.outcomes[last + 1 :]]
        return {
            "ok": len(self.latencies),
            "failed": len(during),
            "failed_as": sorted(set(during)),
            "after_app_deleted": len(after),
            "after_as": sorted(set(after)),
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
        }


def run_job(
    name: str, window: int, rows: int, out: Path, profile_s: float, overrides: list[str], outside_rps: float = 0.0
) -> tuple[dict, np.ndarray, dict[str, list[str]], dict[str, float] | None]:
    """The main job as ``make run`` starts it; returns its report, served predictions, profile summaries and the
    outside load's figures (``outside_rps > 0``)."""
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
        f"run_name={name}",  # its own run: the same name would resume the one before
        "--set",
        f"storage_path={out / 'storage'}",
        *(a for o in overrides for a in ("--set", o)),
    ]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    job_cfg = config.load(ROOT / "jobs" / "configs" / "elec2.yaml")
    url = f"http://{job_cfg.serve.host}:{job_cfg.serve.port}/predict"
    with open(out / f"{name}.log", "w") as log:
        job = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        load = OutsideLoad(url, outside_rps, list(job_cfg.data.features or [])) if outside_rps > 0 else None
        profiles = profile(job.pid, out, profile_s) if profile_s > 0 else {}
        code = job.wait(timeout=3600)
        outside = load.stop() if load is not None else None
        if code != 0:
            raise RuntimeError(f"the job failed: see {out / f'{name}.log'}")
    report = json.loads((out / name / "report.json").read_text())
    served = np.load(out / name / "predictions.npz")
    assert np.array_equal(served["offset"], np.arange(rows)), "the job did not serve every row once"
    report["phases"] = window_phases(out / "storage" / name)
    return report, served["prediction"], profiles, outside


def window_phases(storage: Path) -> dict[str, tuple[float, float]]:
    """Where a window's time goes, from the run's controller journal (one clock, the controller's): per learned
    window ``w`` (the first 40 windows, warm-up, left out), ``(p50, mean)`` ms of

    * ``learn``: the learner's step on the Train worker (``step_s``; the in-process learner pays the same);
    * ``publish -> every replica``: the version's arrival at the controller to the last replica's ack (off the
      stream's path since the window's requests wait in their replica, ``?min_version``);
    * ``cycle, less learning``: one publish to the next less the step: the driver waking, the window's requests
      (their wait for the replica to load the version included), its hand-off to the worker (queue, block), the
      publish's way to the controller; and anything the worker did between windows (a checkpoint);
    * ``cycle``: one publish to the next;
    * ``stalls``: the share of windows whose cycle exceeds 3x the median cycle.
    """
    import statistics

    (journal,) = storage.glob("controller/*/journal.jsonl")
    lines = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    step = {e["metrics"]["index"]: 1e3 * e["metrics"]["step_s"] for e in lines if e["op"] == "progress"}
    pub = {e["meta"]["window"]: e for e in lines if e["op"] == "publish" and e["meta"].get("window", -1) >= 0}
    acks: dict[int, float] = {}
    for e in lines:
        if e["op"] == "ack":
            acks[e["version"]] = max(acks.get(e["version"], 0.0), e["t"])
    phases: dict[str, list[float]] = collections.defaultdict(list)
    for w in sorted(pub):
        nxt = pub.get(w + 1)
        if w < 40 or nxt is None or pub[w]["version"] not in acks or w + 1 not in step:
            continue
        t_pub, t_acked = pub[w]["published_s"], acks[pub[w]["version"]]
        phases["learn"].append(step[w + 1])
        phases["publish -> every replica"].append(1e3 * (t_acked - t_pub))
        phases["cycle, less learning"].append(1e3 * (nxt["published_s"] - t_pub) - step[w + 1])
        phases["cycle"].append(1e3 * (nxt["published_s"] - t_pub))
    if not phases:
        return {}
    out = {k: (statistics.median(v), statistics.fmean(v)) for k, v in phases.items()}
    median_cycle = out["cycle"][0]
    stalls = 100.0 * float(np.mean([c > 3 * median_cycle for c in phases["cycle"]]))
    return out | {"stalls (cycle > 3x median), % of windows": (stalls, stalls)}


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
    parser.add_argument("--workers", type=int, nargs="*", default=[], help="also: the first W with these worker counts")
    parser.add_argument("--outside-rps", type=float, default=0.0, help="also: the first W under this outside load")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = config.load(ROOT / "jobs" / "configs" / "elec2_builtin.yaml", {"data": {"max_rows": args.rows}})
    table = datasets.load_elec2(base.data.path, base.data.max_rows)
    y = table.labels
    first = args.windows[0]
    cases: list[tuple[str, int, list[str], float]] = [(f"W={w}", w, [], 0.0) for w in args.windows]
    cases += [(f"W={first}, {n} Train workers", first, [f"train.num_workers={n}"], 0.0) for n in args.workers]
    if args.outside_rps > 0:
        cases.append((f"W={first}, {args.outside_rps:g} req/s outside", first, [], args.outside_rps))
    lines, loads, phases, driver = [], [], [], []
    profiles: dict[str, list[str]] = {}
    oracles: dict[int, tuple[np.ndarray, float]] = {}
    with tempfile.TemporaryDirectory(prefix="job_vs_learner-") as tmp:
        for i, (label, w, extra, rps) in enumerate(cases):
            if w not in oracles:
                cfg = base.model_copy(update={"stream": base.stream.model_copy(update={"window_size": w})})
                t0 = time.perf_counter()
                oracles[w] = (replay_in_process(cfg, table).predictions, time.perf_counter() - t0)
            oracle, oracle_s = oracles[w]
            prof_s = args.profile if i == 0 else 0.0
            report, served, prof, outside = run_job(f"case{i}", w, len(y), Path(tmp), prof_s, args.set + extra, rps)
            profiles |= {f"{label} {k}": v for k, v in prof.items()}
            run = report["run"]
            job_rate, oracle_rate = len(y) / run["stream_s"], len(y) / oracle_s
            acc_o, acc_j = float(np.mean(oracle == y)), float(np.mean(served == y))
            lines.append(
                f"| {label} | {len(y):,} | {oracle_s:6.1f} | {oracle_rate:7,.0f} | {run['stream_s']:6.1f} "
                f"| {job_rate:7,.0f} | **{job_rate / oracle_rate:.2f}x** | {run['wall_s'] - run['stream_s']:6.1f} "
                f"| {acc_o:.2%} | {acc_j:.2%} | {100 * (acc_j - acc_o):+.2f} | {np.mean(served == oracle):.2%} |"
            )
            print(lines[-1], flush=True)
            phases.append(
                f"| {label} | "
                + " | ".join(f"{p50:.1f} / {mean:.1f}" for p50, mean in report["phases"].values())
                + " |"
            )
            phase_names = list(report["phases"])
            driver.append(
                f"| {label} | "
                + " | ".join(f"{1e3 * p['p50']:.1f} / {1e3 * p['mean']:.1f}" for p in run["driver_window_s"].values())
                + " |"
            )
            driver_names = list(run["driver_window_s"])
            if outside is not None:
                loads.append(
                    f"| {label} | {outside['ok']:,} | {outside['failed']} {outside['failed_as'] or ''} "
                    f"| {outside['after_app_deleted']} {outside['after_as'] or ''} | {outside['p50_ms']:.1f} "
                    f"| {outside['p99_ms']:.1f} | {report['http']['latency_s']['p50'] * 1000:.1f} |"
                )
                print(loads[-1], flush=True)
    print()
    print(
        f"Elec2, {len(y):,} rows; {base.train.optimizer} lr={base.train.lr} batch={base.train.batch_size} "
        f"epochs/window={base.train.epochs_per_window}; job: {base.train.num_workers} Train worker "
        f"({base.train.cpus_per_worker} CPU), {base.serve.num_replicas} replicas ({base.serve.cpus_per_replica} CPU "
        f"each), max_lag_windows={base.stream.max_lag_windows}; ray.init(num_cpus={base.ray.num_cpus})"
        + (f"; job overrides: {' '.join(args.set)}" if args.set else "")
    )
    print(
        "| job | rows | learner s | learner rows/s | job stream s | job rows/s | job / learner | job start+stop s "
        "| learner accuracy | job accuracy | points | agree |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    if phases:
        print("\nper window, p50 / mean ms, from the controller's journal (windows 40 on; see window_phases):")
        print("| job | " + " | ".join(phase_names) + " |")
        print("|---" * (len(phase_names) + 1) + "|")
        print("\n".join(phases))
        print("\nthe driver's time per window, p50 / mean ms (the report's run.driver_window_s):")
        print("| job | " + " | ".join(driver_names) + " |")
        print("|---" * (len(driver_names) + 1) + "|")
        print("\n".join(driver))
    if loads:
        print("\noutside load (1-row named records to /predict while the job runs):")
        print(
            "| job | outside requests ok | failed while the app was up | failed after the job deleted it "
            "| outside p50 ms | outside p99 ms | job's own requests p50 ms, less their hold |"
        )
        print("|---|---|---|---|---|---|---|")
        print("\n".join(loads))
    for role, top in profiles.items():
        print(f"\npy-spy, {role} ({args.profile:.0f} s), inclusive share (driver, worker: of their main loop's time):")
        print("\n".join(f"    {t}" for t in top))


if __name__ == "__main__":
    main()
