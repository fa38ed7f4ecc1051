"""Application metrics through ``ray.util.metrics``: they appear in the Ray dashboard and on
each node's Prometheus endpoint (``ray start --metrics-export-port``, ``ray.init(_metrics_export_port=...)``).

Ray prefixes every name with ``ray_`` and adds ``_total`` to counters, so
``ddn_ray_requests`` is scraped as ``ray_ddn_ray_requests_total``. Create these objects only
inside Ray workers (the controller actor, Serve replicas); the plain classes they
instrument stay free of Ray.

=================================== ========= ==========================================
name                                kind      tags / meaning
=================================== ========= ==========================================
``ddn_ray_model_version``           gauge     latest accepted version (controller)
``ddn_ray_versions``                counter   ``result``: accept / reject_non_finite / reject_shape
``ddn_ray_freshness_seconds``       histogram publish -> every live replica serving it
``ddn_ray_windows_trained``         counter   windows the trainer finished
``ddn_ray_prequential_accuracy``    gauge     last window's accuracy before it was learned
``ddn_ray_rows_trained``            counter   rows of those windows (rank 0's share)
``ddn_ray_drift_signals``           counter   ``decision``: no-op / head / all / reset / rollback
``ddn_ray_served_model_version``    gauge     ``replica``: the version a replica serves
``ddn_ray_requests``                counter   ``replica``, ``code``: each ``/predict`` by HTTP status
``ddn_ray_request_errors``          counter   ``replica``, ``code``: the 4xx / 5xx ones
``ddn_ray_rows_predicted``          counter   ``replica``: rows answered
``ddn_ray_service_labels``          counter   ``result``: joined / late (the service's feedback)
``ddn_ray_service_windows_learned`` counter   windows of joined rows the service learned
``ddn_ray_service_rows_learned``    counter   their rows
``ddn_ray_service_online_accuracy`` gauge     served answers' accuracy over the last labels (regression: MSE)
``ddn_ray_service_awaiting_label``  gauge     logged answers still waiting for a label
``ddn_ray_service_label_delay_s``   gauge     ``quantile``: p50 / p90 / p99 of prediction -> label seconds
=================================== ========= ==========================================
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["NAMES", "ControllerMetrics", "ReplicaMetrics", "ServiceMetrics"]

REFRESH_S = 1.0

FRESHNESS_BOUNDARIES_S = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]

NAMES = (
    "ddn_ray_model_version",
    "ddn_ray_versions",
    "ddn_ray_freshness_seconds",
    "ddn_ray_windows_trained",
    "ddn_ray_prequential_accuracy",
    "ddn_ray_rows_trained",
    "ddn_ray_drift_signals",
    "ddn_ray_served_model_version",
    "ddn_ray_requests",
    "ddn_ray_request_errors",
    "ddn_ray_rows_predicted",
    "ddn_ray_service_labels",
    "ddn_ray_service_windows_learned",
    "ddn_ray_service_rows_learned",
    "ddn_ray_service_online_accuracy",
    "ddn_ray_service_awaiting_label",
    "ddn_ray_service_label_delay_s",
)


class _Gauges:
    """Ray 2.60 evicts a gauge series not set again within two report intervals (the
    OpenTelemetry recorder's TTL), even while the worker lives; so the last value of every
    gauge is kept here and set again by :meth:`refresh_forever`."""

    def __init__(self) -> None:
        self._last: dict[tuple[Any, tuple[Any, ...]], tuple[Any, float, dict[str, str] | None]] = {}

    def set(self, gauge: Any, value: float, tags: dict[str, str] | None = None) -> None:
        gauge.set(value, tags=tags)
        self._last[(id(gauge), tuple(sorted((tags or {}).items())))] = (gauge, value, tags)

    async def refresh_forever(self, period_s: float = REFRESH_S) -> None:
        while True:
            await asyncio.sleep(period_s)
            for gauge, value, tags in list(self._last.values()):
                gauge.set(value, tags=tags)


class ControllerMetrics(_Gauges):
    """The controller actor's metrics: versions, freshness, training progress, drift decisions."""

    def __init__(self) -> None:
        super().__init__()
        from ray.util.metrics import Counter, Gauge, Histogram

        self.version = Gauge("ddn_ray_model_version", "Latest accepted model version")
        self.versions = Counter("ddn_ray_versions", "Published updates by gate result", tag_keys=("result",))
        self.freshness = Histogram(
            "ddn_ray_freshness_seconds",
            "Seconds from publish until every live replica serves it",
            boundaries=FRESHNESS_BOUNDARIES_S,
        )
        self.windows = Counter("ddn_ray_windows_trained", "Windows the trainer finished (test then train)")
        self.rows = Counter("ddn_ray_rows_trained", "Rows of the finished windows (rank 0's share)")
        self.accuracy = Gauge("ddn_ray_prequential_accuracy", "Last window's accuracy before it was learned")
        self.signals = Counter(
            "ddn_ray_drift_signals", "Drift signals by the decision they led to", tag_keys=("decision",)
        )

    def published(self, result: dict[str, Any]) -> None:
        self.versions.inc(1, tags={"result": result["decision"]})
        if result["accepted"]:
            self.set(self.version, result["version"])

    def served(self, freshness_s: float) -> None:
        self.freshness.observe(freshness_s)

    def progress(self, metrics: dict[str, Any]) -> None:
        self.windows.inc(1)
        if metrics.get("num_rows"):
            self.rows.inc(metrics["num_rows"])
            self.set(self.accuracy, metrics["pre_accuracy"])
        for event in metrics.get("events", ()):
            self.signals.inc(1, tags={"decision": event["decision"]})


class ReplicaMetrics(_Gauges):
    """A Serve replica's metrics: the version it serves, requests and errors by status code."""

    def __init__(self, replica: str) -> None:
        super().__init__()
        from ray.util.metrics import Counter, Gauge

        self.tags = {"replica": replica}
        self.version = Gauge("ddn_ray_served_model_version", "Model version this replica serves", tag_keys=("replica",))
        self.requests = Counter("ddn_ray_requests", "Requests by HTTP status", tag_keys=("replica", "code"))
        self.errors = Counter("ddn_ray_request_errors", "Requests answered 4xx or 5xx", tag_keys=("replica", "code"))
        self.rows = Counter("ddn_ray_rows_predicted", "Rows answered", tag_keys=("replica",))

    def serving(self, version: int) -> None:
        self.set(self.version, version, self.tags)

    def request(self, code: int, rows: int = 0) -> None:
        tags = {**self.tags, "code": str(code)}
        self.requests.inc(1, tags=tags)
        if code >= 400:
            self.errors.inc(1, tags=tags)
        if rows:
            self.rows.inc(rows, tags=self.tags)


class ServiceMetrics(_Gauges):
    """The service learner's metrics (:mod:`ddn_ray.service`): labels joined, windows learned, online figures."""

    def __init__(self) -> None:
        super().__init__()
        from ray.util.metrics import Counter, Gauge

        self.labels = Counter("ddn_ray_service_labels", "Feedback labels by result", tag_keys=("result",))
        self.windows = Counter("ddn_ray_service_windows_learned", "Windows of joined rows learned")
        self.rows = Counter("ddn_ray_service_rows_learned", "Rows of those windows")
        self.online = Gauge(
            "ddn_ray_service_online_accuracy", "Served answers' accuracy over the last labels (regression: MSE)"
        )
        self.awaiting = Gauge("ddn_ray_service_awaiting_label", "Logged answers waiting for a label")
        self.delay = Gauge("ddn_ray_service_label_delay_s", "Prediction -> label seconds", tag_keys=("quantile",))

    def joined(self, joined: int, late: int) -> None:
        if joined:
            self.labels.inc(joined, tags={"result": "joined"})
        if late:
            self.labels.inc(late, tags={"result": "late"})

    def window(self, rows: int) -> None:
        self.windows.inc(1)
        if rows:
            self.rows.inc(rows)

    def log_figures(self, stats: dict[str, Any]) -> None:
        """Set the gauges from :meth:`ddn_ray.eventlog.EventLog.stats`."""
        if stats["online"]["recent"] is not None:
            self.set(self.online, stats["online"]["recent"])
        self.set(self.awaiting, stats["awaiting_label"])
        for q, v in stats["label_delay_s"].items():
            if v is not None:
                self.set(self.delay, v, {"quantile": q})
