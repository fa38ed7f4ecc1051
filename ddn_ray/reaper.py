"""Stop what a driver's own Ray cluster leaves behind when the driver is killed.

A driver that starts a local cluster in-process (``ray.init()`` without an address) owns it: a normal end,
an exception or Ctrl-C shuts it down (``ray.shutdown``). A SIGKILL runs no code: Ray's GCS and raylet then
exit by themselves, but its dashboard agent and runtime-env agent keep running (measured on Ray 2.60: still
listening 131 s later, ignoring SIGTERM). :func:`watch` starts a small reaper process beside the driver. While
the driver lives, the reaper notes the driver's descendants (the processes its ``ray.init`` started and theirs:
the raylet's agents and workers rename themselves ``ray::...``, so a command line does not tell them); once
the driver is gone it gives Ray's own shutdown ``grace_s`` and kills those of them still alive (the same PID
and start time: never a process that reused a PID).

Run as ``python -m ddn_ray.reaper DRIVER_PID DRIVER_START_TIME GRACE_S``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import psutil

__all__ = ["descendants", "reap", "watch"]


def descendants(pid: int, exclude: set[int] | None = None) -> dict[int, float]:
    """``{pid: start time}`` of the live descendants of ``pid`` (none if it is gone)."""
    exclude = exclude or set()
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    found = {}
    for p in children:
        if p.pid not in exclude:
            with contextlib.suppress(psutil.NoSuchProcess):
                found[p.pid] = p.create_time()
    return found


def reap(processes: dict[int, float]) -> list[int]:
    """SIGKILL those of ``processes`` (``{pid: start time}``) still alive; returns their PIDs."""
    victims = []
    for pid, started in processes.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == started:
                p.kill()
                victims.append(p)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=5)
    return [p.pid for p in victims]


def watch(*, grace_s: float = 2.0) -> subprocess.Popen[bytes]:
    """Start the reaper for this process (the driver) and every process it has started or will start.

    Args:
        grace_s: seconds given to Ray's own shutdown after the driver is gone.

    Returns:
        The reaper process; it ends by itself once the driver has ended and what it left is killed.
    """
    me = psutil.Process()
    args = [sys.executable, "-m", "ddn_ray.reaper", str(me.pid), repr(me.create_time()), str(grace_s)]
    # its own session: a Ctrl-C to the driver's process group does not reach it
    return subprocess.Popen(
        args, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _alive(pid: int, started: float) -> bool:
    try:
        return psutil.Process(pid).create_time() == started  # the same process, not a reused PID
    except psutil.NoSuchProcess:
        return False


def main(argv: list[str]) -> None:
    driver, started, grace_s = int(argv[0]), float(argv[1]), float(argv[2])
    seen: dict[int, float] = {}
    while _alive(driver, started):
        seen |= descendants(driver, exclude={os.getpid()})
        time.sleep(0.5)
    time.sleep(grace_s)
    reap(seen)


if __name__ == "__main__":
    main(sys.argv[1:])
