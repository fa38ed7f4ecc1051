"""The main job on a two-node Ray cluster started on this machine: Train workers and replicas on both nodes.

    python benchmarks/two_nodes.py [--rows 45312] [--window 50]

Starts a head (``ray start --head --block``) and a second node (``ray start --address=... --block``) on
127.0.0.1, each with its own pinned ports and 1 logical CPU, so the job's 2 Train workers (0.5 CPU each) and 2
replicas (0.25 CPU each) cannot all fit on one node. Serve's HTTP proxy runs on the head only (two nodes on one
machine would bind the same port). The main job (``jobs/continuous.py``, Elec2's CSV) joins it through
``RAY_ADDRESS``; while it runs, the benchmark notes the node of every Train worker and replica (Ray's state
API). Then the same job runs on one node of 2 CPUs (the same total), started the same way.

Both nodes share this machine's 2 cores: the figure is what crossing nodes costs (the object manager moving
each window's block and each version's weights between raylets, DDP over TCP), not a speed-up.
Stops what it started by PID. Output: a table (recorded in benchmarks/results/two_nodes.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddn_ray.reaper import descendants, reap

BIN = Path(sys.executable).parent
GCS_PORT, SERVE_PORT, DASHBOARD_PORT = 6393, 18260, 18265
NODE_PORTS = [  # (node manager, object manager, min worker, max worker, metrics, agent grpc, agent listen, runtime env)
    (18270, 18271, 18300, 18399, 18272, 18273, 18274, 18275),
    (18280, 18281, 18400, 18499, 18282, 18283, 18284, 18285),
]


def start_node(k: int, cpus: int, temp_dir: Path, log: Path) -> subprocess.Popen:
    """``ray start --block`` for node ``k`` (0: the head) with its own ports; returns the process."""
    nm, om, wmin, wmax, metrics, agent_grpc, agent_listen, rte = NODE_PORTS[k]
    cmd = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0"]
    cmd += [f"--node-manager-port={nm}", f"--object-manager-port={om}", f"--min-worker-port={wmin}"]
    cmd += [
        f"--max-worker-port={wmax}",
        f"--metrics-export-port={metrics}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
    ]
    cmd += [f"--dashboard-agent-listen-port={agent_listen}", f"--runtime-env-agent-port={rte}", "--disable-usage-stats"]
    if k == 0:
        cmd += ["--head", f"--port={GCS_PORT}", f"--temp-dir={temp_dir}", "--include-dashboard=true"]
        cmd += ["--dashboard-host=127.0.0.1", f"--dashboard-port={DASHBOARD_PORT}", "--ray-client-server-port=18266"]
    else:
        cmd += [f"--address=127.0.0.1:{GCS_PORT}"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop_nodes(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each ``ray start --block`` (worker node first), then kill what is left of what they started."""
    started = {pid: t for p in procs for pid, t in descendants(p.pid).items()}
    for p in reversed(procs):
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
    time.sleep(5.0)  # what SIGTERM reached is gone by now; the agents ignore it (issue 17)
    reap(started)


def wait_nodes(n: int, timeout_s: float = 120) -> None:
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(1 for node in ray.nodes() if node["Alive"]) >= n:
            return
        time.sleep(1.0)
    raise TimeoutError(f"{n} nodes did not join within {timeout_s} s")


def placements() -> dict[str, list[str]]:
    """Node id (first 8 hex) of every live Train worker and Serve replica, by kind."""
    from ray.util.state import list_actors

    out: dict[str, list[str]] = {"train worker": [], "replica": []}
    for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000):
        kind = (
            "train worker" if "RayTrainWorker" in a.class_name else "replica" if "Predictor" in a.class_name else None
        )
        if kind:
            out[kind].append(a.node_id[:8])
    return out


def run(nodes: int, rows: int, window: int, tmp: Path) -> dict[str, Any]:
    import ray
    from ray import serve

    temp_dir = Path(f"/tmp/ddnray_2n_{os.getpid()}_{nodes}")
    shutil.rmtree(temp_dir, ignore_errors=True)
    cpus = [1, 1] if nodes == 2 else [2]
    procs = [start_node(0, cpus[0], temp_dir, tmp / f"head{nodes}.log")]
    try:
        time.sleep(5.0)
        for k in range(1, nodes):
            procs.append(start_node(k, cpus[k], temp_dir, tmp / f"node{nodes}-{k}.log"))
        ray.init(address=f"127.0.0.1:{GCS_PORT}", namespace="ddn_ray", log_to_driver=False)
        wait_nodes(nodes)
        # Serve's proxy on the head only: two nodes on one machine cannot both bind the HTTP port
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": SERVE_PORT})
        out = tmp / f"n{nodes}"
        cmd = [sys.executable, str(ROOT / "jobs" / "continuous.py"), "--config", str(ROOT / "jobs/configs/elec2.yaml")]
        for o in (
            f"data.max_rows={rows}",
            f"stream.window_size={window}",
            "train.num_workers=2",
            f"serve.port={SERVE_PORT}",
            f"report.output_dir={out}",
            f"storage_path={out / 'storage'}",
            "run_name=two_nodes",
        ):
            cmd += ["--set", o]
        env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{GCS_PORT}", "RAY_AUTH_MODE": "disabled", "TQDM_DISABLE": "1"}
        job = subprocess.Popen(cmd, env=env, stdout=open(tmp / f"job{nodes}.log", "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
        seen: dict[str, list[str]] = {}
        while job.poll() is None:
            now = placements()
            if len(now["train worker"]) >= 2 and len(now["replica"]) >= 2:
                seen = now
            time.sleep(3.0)
        if job.returncode != 0:
            raise RuntimeError(f"the job failed: see {tmp / f'job{nodes}.log'}")
        report = json.loads((out / "two_nodes" / "report.json").read_text())
        serve.shutdown()
        ray.shutdown()
        return {"report": report, "placements": seen}
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop_nodes(procs)
        shutil.rmtree(temp_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=45_312)
    parser.add_argument("--window", type=int, default=50)
    args = parser.parse_args(argv)
    lines = []
    with tempfile.TemporaryDirectory(prefix="two_nodes-") as tmp:
        for nodes in (2, 1):
            r = run(nodes, args.rows, args.window, Path(tmp))
            run_, fresh = r["report"]["run"], r["report"]["freshness_s"]
            where = "; ".join(f"{k}s on {', '.join(v)}" for k, v in r["placements"].items())
            acc = r["report"]["scores"]["dynamic (served)"]["accuracy"]
            lines.append(
                f"| {nodes} | {run_['rows_served'] / run_['stream_s']:,.0f} | {run_['stream_s']:.1f} "
                f"| {fresh['p50'] * 1000:.1f} / {fresh['p99'] * 1000:.1f} "
                f"| {r['report']['http']['latency_s']['p50'] * 1000:.1f} | {acc:.2%} | {where} |"
            )
            print(lines[-1], flush=True)
    print(
        f"\nthe main job on Elec2 ({args.rows:,} rows, W={args.window}), 2 Train workers (DDP), 2 replicas, one machine"
    )
    print("| nodes | rows/s | stream s | freshness p50 / p99 ms | HTTP p50 ms | accuracy | where (node ids) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
