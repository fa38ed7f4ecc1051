"""Ports of the session cluster (imported by conftest and tests), and reading its metrics endpoint."""

import time

import requests

SERVE_PORT = 18123  # pinned; the GCS port is chosen free by ray.init, the dashboard is off
METRICS_PORT = 18124  # the node's Prometheus endpoint (ray.util.metrics), pinned


def scrape(names: list[str], timeout_s: float = 30.0) -> dict[str, list[str]]:
    """Lines of the node's Prometheus endpoint for each metric name, once all appear (or the timeout)."""
    deadline, found = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        text = requests.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).text
        found = {n: [ln for ln in text.splitlines() if ln.startswith((n + "{", n + " "))] for n in names}
        if all(found.values()):
            break
        time.sleep(1.0)
    return found
