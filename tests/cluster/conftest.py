"""A real Ray head started with `ray start --head --block` on 127.0.0.1: pinned ports, token auth,
the dashboard and Jobs API on, stopped by its PID (never `ray stop`)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from ddn_ray.reaper import descendants, reap
from tests.cluster.head_cluster import PORTS, WORKER_PORTS, Head


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark these tests and run them after the unit tier but before tests/integration starts the
    in-process session cluster, so two Ray clusters never run at once (a session-wide hook: it
    sees every item)."""
    for item in items:
        if "/tests/cluster/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
    tier = lambda item: (
        2 if "/tests/integration/" in str(item.fspath) else 1 if "/tests/cluster/" in str(item.fspath) else 0
    )
    items.sort(key=tier)  # stable: the order within a tier is kept


def _ours(temp_dir: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(temp_dir) in part for part in p.info["cmdline"] or []):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    import ray

    assert not ray.is_initialized(), "tests/cluster must run before the session cluster starts (tests/conftest.py)"
    temp_dir = Path(f"/tmp/ddnray_head_{os.getpid()}")  # short: Ray's socket paths must stay under 108 bytes
    shutil.rmtree(temp_dir, ignore_errors=True)
    token = secrets.token_hex(32)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # job entrypoints run `python` from this venv
        "RAY_AUTH_MODE": "token",  # explicit: Ray 2.60 defaults to token auth; this head keeps it on
        "RAY_AUTH_TOKEN": token,
        "RAY_metrics_report_interval_ms": "1000",
        "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
        "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    }
    env.pop("RAY_ADDRESS", None)
    cmd = [
        f"{bin_dir}/ray",
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={PORTS['gcs']}",
        "--num-cpus=4",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={PORTS['dashboard']}",
        f"--dashboard-agent-listen-port={PORTS['agent_listen']}",
        f"--dashboard-agent-grpc-port={PORTS['agent_grpc']}",
        f"--metrics-export-port={PORTS['metrics']}",
        f"--ray-client-server-port={PORTS['client']}",
        f"--node-manager-port={PORTS['node_manager']}",
        f"--object-manager-port={PORTS['object_manager']}",
        f"--runtime-env-agent-port={PORTS['runtime_env_agent']}",
        f"--min-worker-port={WORKER_PORTS[0]}",
        f"--max-worker-port={WORKER_PORTS[1]}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    log = open(Path(f"/tmp/ddnray_head_{os.getpid()}.log"), "w")  # noqa: SIM115 (open while the head runs)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{PORTS['dashboard']}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"ray start exited with {proc.returncode}; see {log.name}"
            try:
                if requests.get(f"{address}/api/version", timeout=2, headers={"Authorization": f"Bearer {token}"}).ok:
                    break
            except (requests.ConnectionError, requests.Timeout):  # still starting
                pass
            time.sleep(1.0)
        else:
            raise TimeoutError(f"the dashboard did not answer within 120 s; see {log.name}")
        yield Head(address, token, {k: v for k, v in env.items() if k.startswith(("RAY_", "PATH"))}, temp_dir)
    finally:
        # Stop what we started, by PID: SIGTERM to `ray start --block` tears down the processes it started.
        # It took ~30 s to exit here (the agents outlive SIGTERM, issue 17): after 10 s it and what is left are killed.
        # The agents rename themselves (ray::DashboardAgent): no command line names the temp dir, so the head's
        # descendants are noted (PID and start time) before it is stopped.
        started = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        deadline = time.monotonic() + 5
        while _ours(temp_dir) and time.monotonic() < deadline:
            time.sleep(1.0)
        for p in _ours(temp_dir):  # anything left of this head only (matched by its temp dir)
            p.kill()
        reap(started)  # and its renamed descendants still alive (the same PID and start time)
        log.close()
