"""Ports of the session cluster (imported by conftest and tests)."""

SERVE_PORT = 18123  # pinned; the GCS port is chosen free by ray.init, the dashboard is off
METRICS_PORT = 18124  # the node's Prometheus endpoint (ray.util.metrics), pinned
