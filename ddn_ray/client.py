"""Traffic client: replays a window's features to the Serve endpoint over HTTP.

The answers it records are the system's honest online predictions: they are
requested before the window's labels are revealed to training.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests
from urllib3.util import parse_url

log = logging.getLogger(__name__)

__all__ = ["HOLD_TIMING", "Answers", "TrafficClient", "held_s", "instances_body"]


@dataclass
class Answers:
    """Served answers for a window, aligned with its rows.

    Attributes:
        offsets: ``(n,)`` int64 stream offsets.
        predictions: ``(n,)`` int64 predicted class, ``-1`` where the request failed; for a
            regression model ``(n, k)`` float64 outputs, NaN where the request failed.
        versions: ``(n,)`` int64 model version that answered, ``-1`` where it failed.
        latencies_s: one entry per HTTP request: its round trip less :attr:`held_s`, seconds.
        errors: one message per failed request.
        held_s: one entry per HTTP request: how long its replica held it for the version or window it asked for
            (``?min_version``, ``?min_window``; the answer's ``Server-Timing: hold``), seconds.
    """

    offsets: np.ndarray
    predictions: np.ndarray
    versions: np.ndarray
    latencies_s: list[float]
    errors: list[str]
    held_s: list[float] = field(default_factory=list)

    def older_than(self, version: int | None) -> bool:
        """Whether a row was answered by a version older than ``version`` (failed rows aside; ``None``: no)."""
        return version is not None and bool((self.versions[self.versions >= 0] < version).any())


#: The Server-Timing metric in which a replica says how long it held a request (``?min_version``, ``?min_window``).
HOLD_TIMING = "hold"


def held_s(server_timing: str | None) -> float:
    """Seconds of the ``hold`` metric of a ``Server-Timing`` header (W3C Server Timing: ``hold;dur=12.5``, in
    milliseconds, among other metrics separated by commas); ``0.0`` when there is none."""
    for metric in (server_timing or "").split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        if name == HOLD_TIMING:
            for param in params:
                key, _, value = param.partition("=")
                if key.strip() == "dur":
                    try:
                        return float(value.strip().strip('"')) / 1e3
                    except ValueError:
                        return 0.0
    return 0.0


def instances_body(offsets: np.ndarray, features: np.ndarray) -> dict[str, Any]:
    """The ``/predict`` body: feature rows."""
    return {"instances": features.tolist()}


class TrafficClient:
    """Sends rows in requests of at most ``request_rows`` from ``num_clients`` threads.

    Args:
        url: the endpoint, e.g. ``http://127.0.0.1:8000/predict``.
        request_rows: rows per request at most: a window goes in as few requests as that allows, of equal size
            (1,000 rows at 500: two of 500, sent at once by two clients).
        num_clients: concurrent requests.
        timeout_s: per-request timeout in seconds.
        body: builds a request's JSON body from its rows' ``(offsets, features)``; the default
            sends feature rows to ``/predict``. Raw-input endpoints take e.g. ``{"texts": [...]}``
            looked up by offset, or ``{"png": [...]}`` (:func:`ddn_ray.usecases.images.encode_png`).
        outputs: a regression model's output width: answers are read from ``"outputs"``
            instead of ``"predictions"``.
        answer_key: the answer's field holding the class ids (or outputs) per row; default
            ``"predictions"`` (``"outputs"`` for regression). Named records are answered with
            class names in ``"predictions"`` and their ids in ``"class_ids"``.
        auth_token: sent as ``Authorization: Bearer <auth_token>`` (``serve.auth_token``); ``None``: no header.
        replicas: returns the base URLs (``http://host:port``) of the replicas' own HTTP servers
            (:func:`ddn_ray.serve.ingress.replica_urls`, Serve's direct ingress): requests go to them in turn, on
            ``url``'s path, instead of through ``url``'s server (Serve's proxy). Read again every
            ``replicas_refresh_s`` seconds and after a refused connection; a request whose connection fails is
            sent again once to ``url`` (a prediction has no side effect). ``None`` or no URL: every request to
            ``url``.
        replicas_refresh_s: how old the list of replica URLs may get, seconds.

    Attributes:
        sent: requests answered (or failed) by each way in: ``{"direct": n, "proxy": m}``, the retries through
            the proxy included.
    """

    def __init__(
        self,
        url: str,
        request_rows: int = 500,
        num_clients: int = 2,
        timeout_s: float = 30.0,
        body: Callable[[np.ndarray, np.ndarray], dict[str, Any]] = instances_body,
        outputs: int | None = None,
        answer_key: str | None = None,
        auth_token: str | None = None,
        replicas: Callable[[], Sequence[str]] | None = None,
        replicas_refresh_s: float = 5.0,
    ) -> None:
        self.url = url
        self.request_rows = request_rows
        self.timeout_s = timeout_s
        self.body = body
        self.outputs = outputs
        self.answer_key = answer_key or ("predictions" if outputs is None else "outputs")
        self._pool = ThreadPoolExecutor(max_workers=num_clients, thread_name_prefix="traffic")
        self._local = threading.local()
        self._headers = {"Authorization": f"Bearer {auth_token}"} if auth_token else {}
        self._replicas, self._refresh_s = replicas, replicas_refresh_s
        self._direct: list[str] = []  # the replicas' endpoints (base URL + url's path)
        self._direct_at = -float("inf")
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._path = parse_url(url).request_uri
        self.sent: collections.Counter[str] = collections.Counter()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
            self._local.session.headers.update(self._headers)
        return self._local.session

    def _endpoints(self) -> list[str]:
        """The replicas' endpoints, read again once ``replicas_refresh_s`` old (or marked stale)."""
        if self._replicas is None:
            return []
        with self._lock:
            if time.monotonic() - self._direct_at > self._refresh_s:
                try:
                    self._direct = [base.rstrip("/") + self._path for base in self._replicas()]
                except Exception as exc:  # whatever listing them raised: the proxy until the next reading
                    log.warning(
                        "the replicas' own URLs could not be read (%r): sending through %s",
                        exc,
                        self.url,
                        exc_info=True,
                    )
                    self._direct = []
                self._direct_at = time.monotonic()
            return self._direct

    def _post(self, url: str, body: Any, params: dict[str, int] | None) -> requests.Response:
        if url != self.url:
            try:
                resp = self._session().post(url, json=body, params=params, timeout=self.timeout_s)
                with self._lock:
                    self.sent["direct"] += 1
                return resp
            except requests.ConnectionError:  # the replica is gone: the proxy routes to a live one
                with self._lock:
                    self._direct_at = -float("inf")
        with self._lock:
            self.sent["proxy"] += 1
        return self._session().post(self.url, json=body, params=params, timeout=self.timeout_s)

    def _send(
        self, url: str, offsets: np.ndarray, rows: Any, params: dict[str, int] | None
    ) -> tuple[list[int] | None, int, float, float, str | None]:
        """One request: ``(answers, version, round trip less the hold, hold, error)``, seconds."""
        t0 = time.perf_counter()
        try:
            resp = self._post(url, self.body(offsets, rows), params)
            dt = time.perf_counter() - t0
            held = min(held_s(resp.headers.get("Server-Timing")), dt)
            if resp.status_code != 200:
                return None, -1, dt - held, held, f"HTTP {resp.status_code}: {resp.text[:200]}"
            body = resp.json()
            return body[self.answer_key], int(body["model_version"]), dt - held, held, None
        except (requests.RequestException, ValueError, KeyError) as exc:
            return None, -1, time.perf_counter() - t0, 0.0, f"{type(exc).__name__}: {exc}"

    def predict(
        self, offsets: np.ndarray, features: Any, *, min_version: int | None = None, min_window: int | None = None
    ) -> Answers:
        """Request predictions for ``features`` (``(n, num_features)`` float32, or any sequence of ``n`` rows
        that ``body`` encodes, e.g. named records), rows in order; from model version ``min_version`` or a newer
        one (``?min_version``: the replica holds the request until it serves it), and from a model that has
        learned window ``min_window`` (``?min_window``: until the replica knows the trainer finished it)."""
        wanted = {"min_version": min_version, "min_window": min_window}
        params = {k: v for k, v in wanted.items() if v is not None} or None
        n = len(offsets)
        preds = np.full(n, -1, dtype=np.int64) if self.outputs is None else np.full((n, self.outputs), np.nan)
        versions = np.full(n, -1, dtype=np.int64)
        # as few requests as request_rows allows, of equal size: the clients send them at once
        bounds = np.linspace(0, n, -(-n // self.request_rows) + 1).round().astype(int).tolist()
        spans = list(itertools.pairwise(bounds))
        direct = self._endpoints()
        urls = [direct[next(self._turn) % len(direct)] if direct else self.url for _ in spans]
        results = self._pool.map(
            lambda u, b: self._send(u, offsets[b[0] : b[1]], features[b[0] : b[1]], params), urls, spans
        )
        latencies, holds, errors = [], [], []
        for (s, _), (p, v, dt, held, err) in zip(spans, results):
            latencies.append(dt)
            holds.append(held)
            if err is not None or p is None:
                errors.append(err or "no predictions")
                continue
            preds[s : s + len(p)] = p
            versions[s : s + len(p)] = v
        return Answers(offsets, preds, versions, latencies, errors, holds)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
