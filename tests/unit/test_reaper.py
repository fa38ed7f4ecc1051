"""The reaper: what a SIGKILLed driver started does not outlive it (real processes, no Ray)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil

DRIVER = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    from ddn_ray import reaper

    watcher = reaper.watch(grace_s=0.3)
    # like Ray's agents: a grandchild in its own session that ignores SIGTERM and outlives its parent
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"],
        start_new_session=True,
    )
    print(watcher.pid, child.pid, flush=True)
    time.sleep(120)
    """
)


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_a_killed_drivers_processes_are_killed_then_the_reaper_ends() -> None:
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True)
    try:
        reaper_pid, child_pid = map(int, driver.stdout.readline().split())  # type: ignore[union-attr]
        time.sleep(1.2)  # the reaper notes the driver's descendants every 0.5 s
        assert psutil.pid_exists(child_pid)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=5)
        assert _gone(child_pid, within_s=5.0), "the driver's grandchild outlived it"
        assert _gone(reaper_pid, within_s=5.0), "the reaper did not end"
    finally:
        driver.kill()


def test_a_process_that_reused_a_pid_is_not_killed() -> None:
    from ddn_ray.reaper import reap

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = psutil.Process(sleeper.pid).create_time()
        assert reap({sleeper.pid: started - 5.0}) == []  # another process's start time: left alone
        assert sleeper.poll() is None
        assert reap({sleeper.pid: started}) == [sleeper.pid]
        assert _gone(sleeper.pid, within_s=5.0)
    finally:
        sleeper.kill()
