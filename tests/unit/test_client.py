"""The traffic client against a real HTTP server on 127.0.0.1: how a window is split into requests, the
``?min_version`` / ``?min_window`` it sends, answers put back in row order, a replica's hold kept apart from
the latency."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from ddn_ray.client import TrafficClient, held_s

HOLD_S = 0.2  # how long the test server holds a request that asks for a window


@pytest.fixture()
def server() -> Iterator[tuple[str, list[tuple[int, list[str]]]]]:
    """Answers each row's first feature as its class, with version 7; records (rows, min_version values). A
    request with ``?min_window`` is held ``HOLD_S`` and says so (``Server-Timing: hold``), as a replica does."""
    with _server() as running:
        yield running


@contextlib.contextmanager
def _server() -> Iterator[tuple[str, list[tuple[int, list[str]]]]]:
    seen: list[tuple[int, list[str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rows = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["instances"]
            query = parse_qs(urlparse(self.path).query)
            seen.append((len(rows), query.get("min_version", []) + [f"w{w}" for w in query.get("min_window", [])]))
            if query.get("min_window"):
                time.sleep(HOLD_S)
            if rows[0][1] < 0:  # a row marked to fail
                self.send_response(503)
                self.end_headers()
                return
            body = json.dumps({"predictions": [int(r[0]) for r in rows], "model_version": 7}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if query.get("min_window"):
                self.send_header("Server-Timing", f"db;dur=1.5, hold;dur={1e3 * HOLD_S:.3f}")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/predict", seen
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    ("n", "request_rows", "sizes"), [(1000, 500, [500, 500]), (1200, 500, [400] * 3), (50, 500, [50])]
)
def test_a_window_goes_in_as_few_requests_as_request_rows_allows_of_equal_size(server, n, request_rows, sizes) -> None:
    url, seen = server
    client = TrafficClient(url, request_rows=request_rows, num_clients=2)
    x = np.column_stack([np.arange(n) % 2, np.ones(n)]).astype(np.float32)
    answers = client.predict(np.arange(n), x, min_version=3)
    client.close()
    assert sorted(size for size, _ in seen) == sorted(sizes)
    assert all(q == ["3"] for _, q in seen)
    np.testing.assert_array_equal(answers.predictions, np.arange(n) % 2)  # back in row order
    assert (answers.versions == 7).all() and not answers.errors and len(answers.latencies_s) == len(sizes)


def test_a_failed_request_marks_only_its_rows_and_no_min_version_sends_none(server) -> None:
    url, seen = server
    client = TrafficClient(url, request_rows=2, num_clients=2)
    x = np.array([[1, 1], [0, 1], [1, -1], [0, 1]], dtype=np.float32)  # the second request fails
    answers = client.predict(np.arange(4), x)
    client.close()
    assert all(q == [] for _, q in seen)
    assert answers.predictions.tolist() == [1, 0, -1, -1] and answers.versions.tolist() == [7, 7, -1, -1]
    assert len(answers.errors) == 1 and answers.errors[0].startswith("HTTP 503")


def test_requests_go_to_the_replicas_in_turn_and_a_refused_one_goes_again_through_the_proxy() -> None:
    with _server() as (proxy, via_proxy), _server() as (replica, direct):
        with socket.socket() as s:  # a port nothing listens on: a replica that is gone
            s.bind(("127.0.0.1", 0))
            gone = f"http://127.0.0.1:{s.getsockname()[1]}"
        listed = []

        def replicas() -> list[str]:
            listed.append(1)
            return [replica.removesuffix("/predict"), gone]

        client = TrafficClient(proxy, request_rows=1, num_clients=1, replicas=replicas, replicas_refresh_s=60)
        x = np.column_stack([np.arange(4) % 2, np.ones(4)]).astype(np.float32)
        answers = client.predict(np.arange(4), x, min_version=2)
        np.testing.assert_array_equal(answers.predictions, np.arange(4) % 2)
        assert not answers.errors and (answers.versions == 7).all()
        # in turn: rows 0 and 2 to the replica, 1 and 3 to the gone one, so through the proxy, with their min_version
        assert len(direct) == 2 and len(via_proxy) == 2 and all(q == ["2"] for _, q in direct + via_proxy)
        assert client.sent == {"direct": 2, "proxy": 2} and len(listed) == 1
        client.predict(np.arange(1), x[:1])  # the next window reads the list again (its age allows a minute)
        client.close()
    assert len(listed) == 2


def test_without_replica_urls_every_request_goes_to_the_url(server) -> None:
    url, seen = server
    client = TrafficClient(url, request_rows=2, num_clients=2, replicas=list)
    answers = client.predict(np.arange(4), np.ones((4, 2), dtype=np.float32))
    client.close()
    assert not answers.errors and len(seen) == 2 and client.sent == {"proxy": 2}


def test_a_request_held_for_a_window_sends_it_and_its_latency_leaves_the_hold_out(server) -> None:
    url, seen = server
    client = TrafficClient(url, request_rows=50, num_clients=1)
    x = np.column_stack([np.arange(50) % 2, np.ones(50)]).astype(np.float32)
    t0 = time.perf_counter()
    answers = client.predict(np.arange(50), x, min_window=4)
    round_trip = time.perf_counter() - t0
    client.close()
    assert seen == [(50, ["w4"])] and not answers.errors and round_trip >= HOLD_S
    assert answers.held_s == [pytest.approx(HOLD_S)]
    assert answers.latencies_s[0] == pytest.approx(round_trip - HOLD_S, abs=0.05)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("hold;dur=12.5", 0.0125),
        ('db;dur=3, hold;desc="version";dur=100', 0.1),
        ("hold", 0.0),
        ("hold;dur=soon", 0.0),
        ("db;dur=3", 0.0),
        (None, 0.0),
    ],
)
def test_the_hold_is_read_from_the_server_timing_header(header, seconds) -> None:
    assert held_s(header) == pytest.approx(seconds)


def test_answers_older_than_a_version_leave_failed_rows_aside() -> None:
    from ddn_ray.client import Answers

    answers = Answers(np.arange(3), np.zeros(3, np.int64), np.array([5, -1, 6]), [0.0], [])
    assert answers.older_than(6) and not answers.older_than(5) and not answers.older_than(None)
