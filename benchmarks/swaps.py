"""Weight swaps under load: publish many versions as fast as the replicas take them while clients keep
asking, and count failed requests and versions that went backwards.

    python benchmarks/swaps.py [--swaps 1000] [--clients 4]

Two replicas of ``ddn_ray.serve.Predictor`` (0.25 CPU each) follow a controller actor. ``--clients`` threads
send ``/predict`` back to back for the whole run, each one request at a time, and record every answer's
status, model version and replica. The publisher publishes ``--swaps`` versions, one after the other, each
as soon as the last one reached every replica (``wait_all_serving``), alternating two sets of weights whose
answers differ. Checked:

* failed requests: any answer that is not a 200 (or no answer);
* versions going backwards: for each client and replica, the versions of its answers in order must never
  decrease (a client's requests are sequential, so a later answer from the same replica saw a later state);
* swaps every replica made: versions each replica acknowledged to the controller.

Prints a table; exits 1 when a request failed or a version went backwards.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests
from typing_extensions import Self

from ddn_ray import evaluate, models
from ddn_ray.config import JobConfig

PORT = 18500


class Clients:
    """``n`` threads asking back to back; ``answers[i]``: ``(status, version, replica, latency_s)`` in order."""

    def __init__(self, url: str, n: int) -> None:
        self.url, self.stop = url, threading.Event()
        self.answers: list[list[tuple[int, int, str, float]]] = [[] for _ in range(n)]
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def _run(self, i: int) -> None:
        session, out = requests.Session(), self.answers[i]
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                r = session.post(self.url, json={"instances": [[0.3, 0.1, 0.5, 0.2, 0.9, 0.4]]}, timeout=10)
                body = r.json() if r.status_code == 200 else {}
                out.append(
                    (r.status_code, int(body.get("model_version", -1)), body.get("replica", ""), time.monotonic() - t0)
                )
            except (requests.RequestException, ValueError):
                out.append((-1, -1, "", time.monotonic() - t0))

    def __enter__(self) -> Self:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swaps", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    import ray
    from ray import serve

    from ddn_ray.controller import ControllerActor
    from ddn_ray.serve import build_app

    cfg = JobConfig(
        controller={"name": "swaps_controller", "poll_timeout_s": 5.0},
        serve={"num_replicas": 2, "cpus_per_replica": 0.25, "port": PORT},
        ray={"namespace": "ddn_ray_swaps"},
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    controller = (
        ray.remote(ControllerActor)
        .options(name=cfg.controller.name, namespace=cfg.ray.namespace, num_cpus=0, max_concurrency=1000)
        .remote()
    )
    weights = [models.state_to_numpy(models.build(cfg.model, 6, 2, seed=s)) for s in range(2)]
    ray.get(controller.publish.remote(weights[0], {}))
    serve.run(build_app(cfg, 6, 2), name="swaps", route_prefix="/swaps")
    t0 = time.monotonic()
    timeouts = 0
    with Clients(f"http://127.0.0.1:{PORT}/swaps/predict", args.clients) as clients:
        time.sleep(1.0)
        for i in range(1, args.swaps + 1):
            v = ray.get(controller.publish.remote(weights[i % 2], {"i": i}))["version"]
            timeouts += not ray.get(controller.wait_all_serving.remote(v, 10.0))
        time.sleep(1.0)
    wall_s = time.monotonic() - t0
    summary = ray.get(controller.summary.remote())
    serve.shutdown()
    ray.shutdown()

    answers = [a for per in clients.answers for a in per]
    failed = sum(s != 200 for s, *_ in answers)
    backwards = 0
    for per in clients.answers:
        last: dict[str, int] = defaultdict(lambda: -1)
        for status, version, replica, _ in per:
            if status == 200:
                backwards += version < last[replica]
                last[replica] = max(last[replica], version)
    acks: dict[str, int] = defaultdict(int)
    for rec in summary["versions"]:
        for r in rec["served_s"]:
            acks[r] += 1
    seen = {v for s, v, *_ in answers if s == 200}
    lat = evaluate.percentiles([x for *_, x in answers], (50, 99))
    fresh = evaluate.percentiles([r["all_served_s"] for r in summary["versions"][1:] if r["all_served_s"]], (50, 99))
    print(
        f"# python benchmarks/swaps.py --swaps {args.swaps} --clients {args.clients}  "
        f"({time.strftime('%Y-%m-%d')}, 2 CPUs, 2 replicas at 0.25 CPU, MLP [64, 64])"
    )
    print(
        "\n| swaps published | wall s | requests | failed | versions going backwards | versions answered with | "
        "HTTP p50 / p99 ms | publish -> every replica p50 / p99 ms | sync timeouts |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.swaps} | {wall_s:.1f} | {len(answers)} | {failed} | {backwards} | {len(seen)} | "
        f"{lat['p50'] * 1000:.1f} / {lat['p99'] * 1000:.1f} | {fresh['p50'] * 1000:.1f} / {fresh['p99'] * 1000:.1f} "
        f"| {timeouts} |"
    )
    print("\n| replica | versions loaded |")
    print("|---|---|")
    for r, n in sorted(acks.items()):
        print(f"| {r} | {n} |")
    sys.exit(1 if failed or backwards else 0)


if __name__ == "__main__":
    main()
