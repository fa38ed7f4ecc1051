"""Faults under load: the main job on Elec2 while an outside client sends 20 requests/s, with one SIGKILL of a
Serve replica, later one of the Train worker, and later one of the controller actor, in the same run.

    python benchmarks/faults.py [--rows 12000] [--rps 20]

Measured on one clock (``time.monotonic``, system-wide on Linux, the controller's too):

* the outside load: requests sent, failed (not a 200), latency p50 / p99, before and after each kill;
* the stream: the gap between consecutive published versions (one per window) before the kills (median)
  and the longest gap after each kill, i.e. how long the stream stood still;
* the replica kill: when the dead replica stopped being expected (the next version counted as served) and
  when Serve's replacement served its first version;
* the worker kill: when the restarted worker group published its first version, the checkpoint window it
  resumed from and the windows it trained again;
* the controller kill: when Ray's restart had restored it from its journal, when each replica re-attached,
  when the next version was published, and how many versions it restored.

Prints a table; exits 1 when a request failed or the run lost a row.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests

PORT = 18400


def _replica_pids(ray: Any, app: str) -> dict[str, int]:
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    out = {}
    for n in names:
        if n.startswith(f"SERVE_REPLICA::{app}#"):
            actor = ray.get_actor(n, namespace="serve")
            out[n.rsplit("#", 1)[1]] = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))
    return out


class Load:
    """An outside client: ``rps`` requests/s of one Elec2 record to ``/predict``, each recorded with its send time."""

    def __init__(self, url: str, rps: float, record: dict[str, float]) -> None:
        self.url, self.period_s, self.record = url, 1.0 / rps, record
        self.sent: list[tuple[float, int, float]] = []  # (sent at, status, latency s)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        next_at = time.monotonic()
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                status = session.post(self.url, json={"records": [self.record]}, timeout=10).status_code
            except requests.RequestException:
                status = -1
            self.sent.append((t0, status, time.monotonic() - t0))
            next_at += self.period_s
            time.sleep(max(0.0, next_at - time.monotonic()))

    def between(self, t0: float, t1: float) -> tuple[int, int, float, float]:
        rows = [(s, lat) for at, s, lat in self.sent if t0 <= at < t1]
        if not rows:
            return 0, 0, float("nan"), float("nan")
        lat = sorted(x for _, x in rows)
        return (
            len(rows),
            sum(s != 200 for s, _ in rows),
            lat[len(lat) // 2],
            lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=12000)
    parser.add_argument("--rps", type=float, default=20.0)
    parser.add_argument("--replica-kill-window", type=int, default=20)
    parser.add_argument("--worker-kill-window", type=int, default=60)
    parser.add_argument("--controller-kill-window", type=int, default=90)
    args = parser.parse_args()

    import ray

    from ddn_ray import config
    from ddn_ray.cli import _repo_root
    from ddn_ray.usecases import datasets

    sys.path.insert(0, str(_repo_root() / "jobs"))
    import continuous  # the main job's recipe

    storage = Path("runs/bench_faults")
    cfg = config.load(
        ROOT / "jobs" / "configs" / "elec2.yaml",
        {
            "data": {"max_rows": args.rows},
            "stream": {"window_size": 100},
            "train": {"checkpoint_every_windows": 5},
            "serve": {"port": PORT},
            "storage_path": str(storage / "storage"),
            "report": {"output_dir": str(storage / "runs")},
            "run_name": f"faults-{time.strftime('%Y%m%d-%H%M%S')}",
        },
    )
    record = dict(zip(cfg.data.features, datasets.load_elec2(cfg.data.path, 1).features[0].tolist()))
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "30")
    ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, log_to_driver=False, namespace=cfg.ray.namespace)
    load = Load(f"http://127.0.0.1:{PORT}/predict", args.rps, record)
    events: dict[str, Any] = {}
    summaries: list[dict[str, Any]] = []  # the controller's, polled: the report keeps only the last versions

    def faults() -> None:
        ckpt_dir = Path(cfg.storage_path, cfg.run_name)
        while "controller_kill_s" not in events:
            try:
                controller = ray.get_actor(cfg.controller.name, namespace=cfg.ray.namespace)
                summary = ray.get(controller.summary.remote())
                progress = summary["progress"]
            except Exception:  # noqa: BLE001 (the job has not started its controller yet)
                time.sleep(0.2)
                continue
            done = progress[-1]["index"] if progress else -1
            if done >= 0 and not load.thread.is_alive():
                load.thread.start()
                events["load_start_s"] = time.monotonic()
            if "replica_kill_s" not in events and done >= args.replica_kill_window:
                pids = _replica_pids(ray, cfg.serve.app_name)
                victim = sorted(pids)[0]
                events["replica_kill_s"], events["replica"] = time.monotonic(), victim
                os.kill(pids[victim], signal.SIGKILL)
            summaries[:] = [summary]
            ckpts = sorted(ckpt_dir.glob("checkpoint_*/meta.json"), key=lambda p: p.stat().st_mtime)
            registered = ckpts and time.time() - ckpts[0].stat().st_mtime > 3.0  # Train registers at its 2 s poll
            worker_due = "worker_kill_s" not in events and "replica_kill_s" in events
            if worker_due and done >= args.worker_kill_window and registered:
                trainer = ray.get(controller.wait_trainer_ready.remote(1.0))
                events["worker_kill_s"], events["worker_done"] = time.monotonic(), done
                os.kill(trainer["pid"], signal.SIGKILL)
            if "worker_kill_s" in events and done >= args.controller_kill_window:
                pid = ray.get(controller.pid.remote())
                events["controller_kill_s"], events["controller_done"] = time.monotonic(), done
                events["versions_at_kill"] = len(summary["versions"])
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        while not load.stop.is_set():  # every version, until the job ends
            with contextlib.suppress(Exception):
                summaries[:] = [ray.get(controller.summary.remote())]
            time.sleep(0.5)

    killer = threading.Thread(target=faults, daemon=True)
    killer.start()
    t0 = time.monotonic()
    report = continuous.main(cfg)
    load.stop.set()
    end_s = time.monotonic()
    ray.shutdown()

    all_versions = summaries[-1]["versions"]
    versions = [v for v in all_versions if v["meta"].get("window") is not None and not v["meta"].get("resumed")]
    publish = sorted(v["published_s"] for v in versions)
    gaps = [(b, b - a) for a, b in itertools.pairwise(publish)]
    k_rep, k_wrk, k_ctl = (events.get(k) for k in ("replica_kill_s", "worker_kill_s", "controller_kill_s"))
    if k_rep is None or k_wrk is None or k_ctl is None:
        sys.exit(f"a fault was not injected: {events}")
    before = statistics.median(g for at, g in gaps if at < k_rep)
    after_rep = max(g for at, g in gaps if k_rep <= at < k_wrk)
    after_wrk = max(g for at, g in gaps if k_wrk <= at < k_ctl)
    after_ctl = max(g for at, g in gaps if at >= k_ctl)
    (ctl,) = report["run"]["controller_restarts"]
    reattached = [ctl["restored_s"] + s - k_ctl for s in ctl["reattached_s"].values()]
    next_version = min(v["published_s"] for v in versions if v["published_s"] > k_ctl) - k_ctl
    # the replica kill: the first version every live replica served after it, and the replacement's first ack
    served_after = [v for v in all_versions if v["published_s"] >= k_rep and v["all_served_s"] is not None]
    first_served = served_after[0]["published_s"] + served_after[0]["all_served_s"] - k_rep if served_after else None
    old = set([v for v in all_versions if v["published_s"] < k_rep][-1]["expected_replicas"])
    new_acks = [
        v["published_s"] + s - k_rep
        for v in all_versions
        for r, s in v["served_s"].items()
        if r not in old and v["published_s"] + s >= k_rep
    ]
    (restart,) = report["run"]["trainer_restarts"]
    resumed = [v["published_s"] - k_wrk for v in versions if k_wrk < v["published_s"] < k_ctl]
    load_t0 = events["load_start_s"]
    end_s = publish[-1]  # the last window's version; after it the job deletes its app (the load's 404s are not faults)
    late = collections.Counter(s for at, s, _ in load.sent if at >= end_s and s != 200)
    phases = [
        ("before the kills", load_t0, k_rep),
        ("replica kill -> worker kill", k_rep, k_wrk),
        ("worker kill -> controller kill", k_wrk, k_ctl),
        ("after the controller kill", k_ctl, end_s),
    ]

    print(f"# python benchmarks/faults.py --rows {args.rows} --rps {args.rps:g}  ({time.strftime('%Y-%m-%d')}, 2 CPUs)")
    print(
        f"# run {cfg.run_name}: {report['run']['rows_served']:,} rows served of {args.rows:,}, "
        f"{report['run']['windows']} windows, {time.monotonic() - t0:.0f} s"
    )
    print(f"\n| outside load (1 row, {args.rps:g} req/s) | requests | failed | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    failed = 0
    for name, a, b in phases:
        n, f, p50, p99 = load.between(a, b)
        failed += f
        print(f"| {name} | {n} | {f} | {p50 * 1000:.1f} | {p99 * 1000:.1f} |")
    print("\n| fault | what was measured | seconds |")
    print("|---|---|---|")
    print(f"| none | median gap between versions (one per window) before the kills | {before:.2f} |")
    print(f"| SIGKILL of a Serve replica | longest gap between versions after it | {after_rep:.2f} |")
    print(f"| | kill -> the next version served by every live replica | {first_served:.2f} |")
    print(
        f"| | kill -> Serve's replacement serving its first version | {min(new_acks):.2f} |"
        if new_acks
        else "| | replacement | none |"
    )
    print(
        f"| SIGKILL of the Train worker (after window {events['worker_done']}) | longest gap between versions after it | {after_wrk:.2f} |"
    )
    print(f"| | kill -> the restarted worker group's first version | {min(resumed):.2f} |")
    print(
        f"| SIGKILL of the controller (after window {events['controller_done']}) "
        f"| longest gap between versions after it | {after_ctl:.2f} |"
    )
    print(f"| | kill -> restarted by Ray and restored from its journal | {ctl['restored_s'] - k_ctl:.2f} |")
    print(f"| | kill -> every replica re-attached ({len(reattached)}) | {max(reattached):.2f} |")
    print(f"| | kill -> the next version published | {next_version:.2f} |")
    print(
        f"\nworker restart: resumed at the checkpoint of window {restart['next_window']}, "
        f"windows trained again {restart['trained_again']}, sent again {len(restart['resent'])}"
    )
    print(
        f"controller restart: {ctl['versions']} versions restored ({events['versions_at_kill']} published before "
        f"the kill), {ctl['journal_lines']:,} journal lines replayed"
    )
    lost = args.rows - report["run"]["rows_served"]
    print(f"after the last version (the job deleting its app): {sum(late.values())} answers not 200 {dict(late)}")
    print(f"rows lost: {lost}; outside requests failed: {failed}; job requests failed: {report['http']['failed']}")
    sys.exit(1 if failed or lost or report["http"]["failed"] else 0)


if __name__ == "__main__":
    main()
