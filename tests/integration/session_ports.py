"""Ports of the session cluster (imported by conftest and tests), and reading its metrics endpoint."""

import time
from typing import Any

import requests

SERVE_PORT = 18123  # pinned; the GCS port is chosen free by ray.init, the dashboard is off
METRICS_PORT = 18124  # the node's Prometheus endpoint (ray.util.metrics), pinned
# the ingress replicas' own HTTP servers (Serve's direct ingress, ddn_ray.serve.ingress), out of Ray's worker ports
DIRECT_INGRESS_PORTS = (30100, 30163)


def scrape(names: list[str], timeout_s: float = 30.0, until: Any = None) -> dict[str, list[str]]:
    """Lines of the node's Prometheus endpoint for each metric name, once all appear and ``until(found)`` holds
    (a gauge is exported at the next report interval), or the timeout."""
    deadline, found = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        text = requests.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).text
        found = {n: [ln for ln in text.splitlines() if ln.startswith((n + "{", n + " "))] for n in names}
        if all(found.values()) and (until is None or until(found)):
            break
        time.sleep(1.0)
    return found
