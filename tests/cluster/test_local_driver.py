"""A driver that starts its own local Ray cluster (the main job's default) listens on loopback only, and once
SIGKILLed leaves no process behind: Ray's GCS and raylet exit by themselves, its agents are killed by the
driver's reaper (:mod:`ddn_ray.reaper`). Runs in the cluster tier, after the head of test_head_cluster.py stopped and before
the integration tier starts its session cluster: one Ray cluster at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]

DRIVER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, "jobs")
    import continuous
    from ddn_ray import config

    cfg = config.load("jobs/configs/elec2.yaml", {"ray": {"num_cpus": 2}})
    assert continuous.start_ray(cfg), "the driver must start its own cluster"
    print("ready", flush=True)
    time.sleep(300)
    """
)


def test_no_process_outlives_a_killed_driver_that_started_its_own_cluster(tmp_path: Path) -> None:
    import ray

    assert not ray.is_initialized(), "tests/cluster must run before the session cluster starts"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"  # this cluster lives a few seconds; ray.init cannot pin its ports
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    started: dict[int, tuple[float, str]] = {}
    try:
        assert driver.stdout is not None and driver.stdout.readline().strip() == "ready"
        time.sleep(3.0)  # the agents start with the raylet; the reaper notes descendants every 0.5 s
        for p in psutil.Process(driver.pid).children(recursive=True):
            try:
                started[p.pid] = (p.create_time(), " ".join(p.cmdline())[:80])
            except psutil.NoSuchProcess:
                continue
        names = " | ".join(n for _, n in started.values())
        assert "ray::DashboardAgent" in names and "ray::RuntimeEnvAgent" in names, names
        # closed by default: every port the cluster listens on binds loopback (GCS, raylet, workers, agents,
        # dashboard, the metrics endpoints), none answers from another interface
        tree = {driver.pid, *started}
        listening = [c.laddr for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.pid in tree]
        assert len(listening) >= 5, f"the cluster's listening sockets were not found: {listening}"
        loopback = lambda ip: ip.startswith(("127.", "::ffff:127.")) or ip == "::1"
        assert all(loopback(ip) for ip, _ in listening), [a for a in listening if not loopback(a.ip)]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        deadline = time.monotonic() + 20
        left = dict(started)
        while left and time.monotonic() < deadline:
            for pid, (t, _) in list(left.items()):
                try:
                    p = psutil.Process(pid)
                    if p.create_time() != t or p.status() == psutil.STATUS_ZOMBIE:
                        del left[pid]
                except psutil.NoSuchProcess:
                    del left[pid]
            time.sleep(0.25)
        assert not left, f"outlived the killed driver by 20 s: {[n for _, n in left.values()]}"
    finally:
        driver.kill()
        for pid, (t, _) in started.items():  # whatever is left of what this test started, by PID
            try:
                p = psutil.Process(pid)
                if p.create_time() == t:
                    p.kill()
            except psutil.NoSuchProcess:
                pass


pytestmark = pytest.mark.integration
