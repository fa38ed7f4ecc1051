"""A Ray cluster a driver starts itself (``ray.init()`` without an address): closed by default, and gone with
its driver.

* :func:`prefer_loopback`, called before ``ray`` is imported, makes such a cluster take the loopback address as
  its node address (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: Ray's single-machine mode, its default on macOS
  and Windows), so every port it listens on (GCS, raylet, workers, the agents, the dashboard, the metrics
  endpoints) binds 127.0.0.1. ``ray.init(_node_ip_address="127.0.0.1")`` does not do it: Ray 2.60 resolves
  that to the machine's address.
* :func:`before_init` turns Ray's metrics off unless asked for: their agent's endpoint binds 0.0.0.0 on a
  cluster that is not in loopback mode and answers without a token.
* :func:`after_init` starts the driver's reaper (:mod:`ddn_ray.reaper`): a SIGKILLed driver's GCS and raylet
  exit by themselves, its agents do not.

A driver that joins a cluster (``RAY_ADDRESS``) is left alone.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from ddn_ray import reaper

__all__ = ["LOOPBACK", "after_init", "before_init", "prefer_loopback"]

LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
log = logging.getLogger(__name__)


def prefer_loopback() -> bool:
    """Set ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (unless already set) when this process will start its own
    cluster (no ``RAY_ADDRESS``) and has not imported ``ray`` yet (Ray reads it on import).

    Returns:
        Whether the loopback mode is in effect for this process.
    """
    if not os.environ.get("RAY_ADDRESS") and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK, "0")
    return os.environ.get(LOOPBACK) == "0"


def before_init(*, metrics: bool) -> None:
    """Call just before ``ray.init()`` starts a local cluster: Ray's metrics off unless ``metrics``, and a
    warning when the cluster will not be in loopback mode (``ray`` was imported before :func:`prefer_loopback`)."""
    if not metrics:
        os.environ.setdefault("RAY_enable_metrics_collection", "0")
    if os.environ.get(LOOPBACK) != "0":
        log.warning(
            "ray was imported before the recipe set %s=0: the local cluster listens on every interface, "
            "not on loopback only",
            LOOPBACK,
        )


def after_init() -> subprocess.Popen[bytes]:
    """Call right after ``ray.init()`` started a local cluster: start the driver's reaper."""
    return reaper.watch()
