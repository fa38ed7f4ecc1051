"""Freshness: publish -> every replica serving the new version, two sync paths, one run.

    python benchmarks/freshness.py [--updates 20] [--sizes-mb 1 40]

* ``long-poll`` (ours): the trainer publishes weights to the controller actor; the 2
  replicas of ``ddn_ray.serve.Predictor`` are parked in ``wait_for_version`` and pull
  the controller-owned object zero-copy.
* ``reconfigure`` (Serve's own): the weights are saved to a file and a Serve config
  whose ``user_config`` names the file and version is deployed (the REST / ``serve
  deploy`` path); Serve calls ``reconfigure`` on one replica at a time.

Both apps are deployed from one Serve config, with 2 replicas at 0.25 CPU each,
under light HTTP load (``--rps`` requests/s to each app). Every replica reports
"now serving v" to a timing actor whose clock also stamps the publish, so both
paths are measured the same way. Prints a table; exits non-zero if a request failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
import torch
from typing_extensions import Self

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddn_ray import evaluate, models
from ddn_ray.config import ModelConfig

PORT = 18200
NAMESPACE = "ddn_ray_bench"


def hidden_for(size_mb: float) -> tuple[int, int]:
    """Two equal hidden layers giving about ``size_mb`` MB of float32 weights."""
    h = int((size_mb * 2**20 / 4) ** 0.5)
    return (h, h)


class Timer:
    """Stamps publishes and replica acks on one clock (a Ray actor)."""

    def __init__(self) -> None:
        self.published: dict[tuple[str, int], float] = {}
        self.acks: dict[tuple[str, int], dict[str, float]] = {}

    def publish(self, path: str, version: int) -> None:
        self.published[(path, version)] = time.monotonic()

    def ack(self, path: str, replica: str, version: int) -> None:
        self.acks.setdefault((path, version), {})[replica] = time.monotonic()

    def latency(self, path: str, version: int, num_replicas: int) -> float | None:
        acks = self.acks.get((path, version), {})
        if len(acks) < num_replicas:
            return None
        return max(acks.values()) - self.published[(path, version)]


def ours(args: dict[str, Any]):
    """App builder for the long-poll path (the real ddn_ray deployment)."""
    from ddn_ray.serve import Predictor

    replicas = int(args.get("replicas", 2))
    return Predictor.options(num_replicas=replicas, ray_actor_options={"num_cpus": 0.5 / replicas}).bind(
        args["controller"], NAMESPACE, args["model"], 6, 2, 1024, 5.0
    )


def reconfigure_baseline(args: dict[str, Any]):
    """App builder for Serve's config-deploy path: ``reconfigure(user_config)`` loads a file."""
    from ray import serve

    @serve.deployment
    class ReconfigurePredictor:
        def __init__(self, model: dict[str, Any]) -> None:
            torch.set_num_threads(1)
            self.cfg = ModelConfig(**model)
            self.current: tuple[int, torch.nn.Module] | None = None
            self.replica = serve.get_replica_context().replica_id.unique_id

        def reconfigure(self, user_config: dict[str, Any]) -> None:
            import ray

            state = torch.load(user_config["path"], weights_only=True)
            model = models.build_for_inference(self.cfg, 6, 2, {k: v.numpy() for k, v in state.items()})
            self.current = (int(user_config["version"]), model)
            timer = ray.get_actor("bench_timer", namespace=NAMESPACE)
            ray.get(timer.ack.remote(user_config.get("key", "initial"), self.replica, self.current[0]))

        async def __call__(self, request) -> dict[str, Any]:
            version, model = self.current
            body = await request.json()
            with torch.no_grad():
                pred = model(torch.tensor(body["instances"], dtype=torch.float32)).argmax(1).tolist()
            return {"predictions": pred, "model_version": version}

    return ReconfigurePredictor.bind(args["model"])


class Load:
    """Light HTTP load on both apps from one thread; counts failures."""

    def __init__(self, urls: list[str], rps: float) -> None:
        self.urls, self.period = urls, 1.0 / rps
        self.ok = self.failed = 0
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        s = requests.Session()
        body = {"instances": [[0.5] * 6] * 8}
        while not self._stop.is_set():
            for url in self.urls:
                t0 = time.perf_counter()
                try:
                    r = s.post(url, json=body, timeout=30)
                    r.raise_for_status()
                    self.ok += 1
                    self.latencies.append(time.perf_counter() - t0)
                except requests.RequestException as exc:
                    self.failed += 1
                    self.errors.append(f"{url}: {exc}"[:200])
            self._stop.wait(self.period)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def deploy(
    client, model: dict[str, Any], controller: str, user_config: dict[str, Any] | None, replicas: int = 2
) -> None:
    """Deploy ``ours`` (``replicas`` replicas sharing 0.5 CPU) and, with a ``user_config``, the reconfigure app."""
    from ray.serve.schema import ServeDeploySchema

    app = "benchmarks.freshness"
    apps: list[dict[str, Any]] = [
        {
            "name": "ours",
            "route_prefix": "/ours",
            "import_path": f"{app}:ours",
            "args": {"controller": controller, "model": model, "replicas": replicas},
        }
    ]
    if user_config is not None:
        apps.append(
            {
                "name": "reconf",
                "route_prefix": "/reconf",
                "import_path": f"{app}:reconfigure_baseline",
                "args": {"model": model},
                "deployments": [
                    {
                        "name": "ReconfigurePredictor",
                        "num_replicas": 2,
                        "user_config": user_config,
                        "ray_actor_options": {"num_cpus": 0.25},
                    }
                ],
            }
        )
    client.deploy_apps(
        ServeDeploySchema.model_validate({"http_options": {"host": "127.0.0.1", "port": PORT}, "applications": apps})
    )


def wait_running(apps: list[str], timeout_s: float = 180.0) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications
        if all(a in status and status[a].status == "RUNNING" for a in apps):
            return
        time.sleep(0.5)
    raise TimeoutError(f"apps {apps} not RUNNING after {timeout_s} s: {serve.status()}")


def run_size(
    ray, size_mb: float, updates: int, gap_s: float, rps: float, tmp: Path, replicas: int = 2, reconfigure: bool = True
) -> list[dict[str, Any]]:
    from ray import serve

    from ddn_ray.controller import ControllerActor, publish_args

    model = ModelConfig(hidden_sizes=hidden_for(size_mb)).model_dump()
    cfg = ModelConfig(**model)
    name = f"bench_controller_{int(size_mb)}_{replicas}"
    # as in the job: every version's weights file and journal line durable (ddn_ray.versions)
    controller = (
        ray.remote(ControllerActor)
        .options(name=name, namespace=NAMESPACE, num_cpus=0, max_concurrency=1000)
        .remote(store_uri=str(tmp / name))
    )
    timer = ray.get_actor("bench_timer", namespace=NAMESPACE)
    weights = [models.state_to_numpy(models.build(cfg, 6, 2, seed=s)) for s in range(2)]
    nbytes = sum(v.nbytes for v in weights[0].values())
    ray.get(controller.publish.remote(weights[0], {}))
    path0 = tmp / "v0.pt"
    torch.save({k: torch.from_numpy(v) for k, v in weights[0].items()}, path0)
    client = serve.context._get_global_client()
    deploy(client, model, name, {"version": 0, "path": str(path0)} if reconfigure else None, replicas)
    wait_running(["ours", "reconf"] if reconfigure else ["ours"])
    base = f"http://127.0.0.1:{PORT}"
    results = []
    with Load([f"{base}/ours/predict", *([f"{base}/reconf"] if reconfigure else [])], rps) as load:
        fresh_ours, fresh_reconf, controller_side = [], [], []
        for i in range(1, updates + 1):
            t_call = time.monotonic()  # same CLOCK_MONOTONIC as the controller's on one machine
            # as the train loop publishes: large weights as the publisher's own object (publish_args)
            v = ray.get(controller.publish.remote(publish_args(weights[i % 2]), {"i": i}))["version"]
            ray.get(controller.wait_all_serving.remote(v, 30.0))
            rec = ray.get(controller.summary.remote())["versions"][-1]
            served = rec["all_served_s"]
            fresh_ours.append(None if served is None else rec["published_s"] + served - t_call)
            controller_side.append(served)
            time.sleep(gap_s)
        key = f"reconfigure-{size_mb:g}MB"
        for i in range(1, updates + 1 if reconfigure else 1):
            ray.get(timer.publish.remote(key, i))  # the clock starts before the weights file is written
            p = tmp / f"{key}-v{i}.pt"
            torch.save({k: torch.from_numpy(v) for k, v in weights[i % 2].items()}, p)
            deploy(client, model, name, {"version": i, "path": str(p), "key": key})
            deadline = time.monotonic() + 60
            while (lat := ray.get(timer.latency.remote(key, i, 2))) is None and time.monotonic() < deadline:
                time.sleep(0.005)
            fresh_reconf.append(lat)
            time.sleep(gap_s)
    paths = (
        ("long-poll controller (ours)", fresh_ours),
        ("  of which controller -> replicas", controller_side),
        ("config deploy -> reconfigure", fresh_reconf),
    )
    for path, fresh in paths:
        pc = evaluate.percentiles(fresh, (50, 99))
        results.append(
            {
                "path": path,
                "replicas": replicas,
                "size_mb": nbytes / 2**20,
                "updates": len(fresh),
                "missed": sum(f is None for f in fresh),
                **pc,
            }
        )
    results.append(
        {
            "load": True,
            "ok": load.ok,
            "failed": load.failed,
            "errors": load.errors[:5],
            "http": evaluate.percentiles(load.latencies, (50, 99)),
        }
    )
    serve.delete("ours")
    if reconfigure:
        serve.delete("reconf")
    ray.kill(controller)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[1.0, 40.0])
    parser.add_argument("--gap-s", type=float, default=0.3, help="pause between updates")
    parser.add_argument("--rps", type=float, default=10.0, help="light load: requests/s to each app")
    parser.add_argument(
        "--replicas", type=int, nargs="+", default=[2], help="replica counts (sharing 0.5 CPU); reconfigure at 2 only"
    )
    parser.add_argument("--no-reconfigure", action="store_true", help="skip Serve's reconfigure path")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local, 127.0.0.1-only benchmark cluster
    import ray
    from ray import serve

    ray.init(
        num_cpus=4,
        include_dashboard=False,
        namespace=NAMESPACE,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    timer = ray.remote(Timer).options(name="bench_timer", namespace=NAMESPACE, num_cpus=0).remote()  # noqa: F841 (held)
    rows, loads = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes_mb:
            for n in args.replicas:
                reconf = n == 2 and not args.no_reconfigure
                out = run_size(ray, size, args.updates, args.gap_s, args.rps, Path(tmp), n, reconf)
                rows += [r for r in out if "path" in r and r["updates"]]
                loads += [r for r in out if "load" in r]
    serve.shutdown()
    ray.shutdown()

    ms = lambda v: "n/a" if v is None else f"{v * 1000:8.1f}"
    print(
        f"\nfreshness: publisher's call -> every replica serving ({args.updates} updates per row, "
        f"{args.rps:g} req/s per app of light load)"
    )
    print(
        f"| {'sync path':33s} | replicas | {'model':>7s} | {'p50 ms':>8s} | {'p99 ms':>8s} | {'max ms':>8s} | missed |"
    )
    print(f"|{'-' * 35}|----------|{'-' * 9}|{'-' * 10}|{'-' * 10}|{'-' * 10}|--------|")
    for r in rows:
        print(
            f"| {r['path']:33s} | {r['replicas']:8d} | {r['size_mb']:5.1f}MB | {ms(r['p50'])} | {ms(r['p99'])} "
            f"| {ms(r['max'])} | {r['missed']:6d} |"
        )
    for size in args.sizes_mb:
        at = lambda path, size=size: next(
            (r for r in rows if r["path"] == path and r["replicas"] == 2 and abs(r["size_mb"] - size) < size / 2),
            None,
        )
        ours_r, base_r = at("long-poll controller (ours)"), at("config deploy -> reconfigure")
        if ours_r and base_r and ours_r["p50"] and base_r["p50"]:
            print(f"  {size:g} MB: long-poll p50 is {base_r['p50'] / ours_r['p50']:.1f}x faster than reconfigure")
    failed = sum(r["failed"] for r in loads)
    print(
        f"requests during updates: {sum(r['ok'] for r in loads)} ok, {failed} failed; "
        f"HTTP p50 {ms(loads[0]['http']['p50']).strip()} ms"
    )
    for r in loads:
        for e in r["errors"]:
            print("  error:", e)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
