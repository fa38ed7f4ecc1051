"""Loopback mode for a cluster the driver starts itself: set before Ray is imported, never when joining one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "from ddn_ray import localcluster; print(localcluster.prefer_loopback(), flush=True)"


def _probe(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    done = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("code", "env", "expected"),
    [
        (PROBE, {}, "True"),  # the recipe's case: nothing imported Ray yet
        (PROBE, {"RAY_ADDRESS": "127.0.0.1:6379"}, "False"),  # joining a cluster: its own addresses
        ("import ray; " + PROBE, {}, "False"),  # too late: Ray read its settings on import
        (PROBE, {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}, "False"),  # the user's choice stands
    ],
)
def test_loopback_only_when_this_driver_will_start_the_cluster(code: str, env: dict[str, str], expected: str) -> None:
    assert _probe(code, **env) == expected
