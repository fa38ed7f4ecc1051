"""Real HTTP against the Serve app: validation, the gate, version swaps, late replicas."""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import pytest
import requests
import torch
from ray import serve

from ddn_ray import models
from ddn_ray.client import TrafficClient
from ddn_ray.controller import ControllerActor
from ddn_ray.serve import build_app, ingress
from tests.integration.session_ports import DIRECT_INGRESS_PORTS, SERVE_PORT, scrape

APP, PREFIX = "http_test", "/http"


@pytest.fixture(scope="module")
def app(ray_cluster, job_config):
    ray = ray_cluster
    cfg = job_config(
        controller={"name": "http_test_controller", "poll_timeout_s": 2.0},
        # a quarter of a (logical) GPU each: the replicas are placed on it and, torch having no CUDA here, serve
        # from the CPU
        # a request for a version that never comes (the fuzzer's ?min_version) waits 50 ms
        serve={"max_batch_rows": 8, "app_name": APP, "max_body_bytes": 4096, "num_gpus": 0.25, "version_wait_s": 0.05},
    )
    controller = (
        ray.remote(ControllerActor)
        .options(name=cfg.controller.name, namespace=cfg.ray.namespace, num_cpus=0, max_concurrency=100)
        .remote()
    )
    ray.get(controller.publish.remote(models.state_to_numpy(models.build(cfg.model, 6, 2, seed=0)), {}))
    serve.run(build_app(cfg, 6, 2), name=APP, route_prefix=PREFIX)
    url = f"http://127.0.0.1:{cfg.serve.port}{PREFIX}"
    yield cfg, controller, url
    serve.delete(APP)
    ray.kill(controller)


def _versions(url: str, n: int = 20) -> set[int]:
    return {requests.get(f"{url}/version", timeout=10).json()["model_version"] for _ in range(n)}


@pytest.mark.parametrize(
    "payload,status,needle",
    [
        ('{"instances": [[0.1, 0.2', 422, "JSON decode error"),
        ('{"instances": [[0.1, 0.2, 0.3, 0.4, 0.5]]}', 422, "instances[0] has 5 features; expected 6"),
        ('{"instances": [[0.1, "high", 0.3, 0.4, 0.5, 0.6]]}', 422, '"instances",0,1'),
        ('{"instances": [[0.1, NaN, 0.3, 0.4, 0.5, 0.6]]}', 422, "finite number"),
        ('{"instances": [[0.1, Infinity, 0.3, 0.4, 0.5, 0.6]]}', 422, "finite number"),
        ('{"instances": []}', 422, "at least 1 item"),
        ('{"rows": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]}', 422, "exactly one of 'instances'"),
        ('{"instances": ' + str([[0.5] * 6] * 9) + "}", 413, "at most 8"),
        ('{"instances": [[0.1, 1e300, 0.3, 0.4, 0.5, 0.6]]}', 422, '"instances",0,1'),
        ('{"instances": [[0.1, -1e39, 0.3, 0.4, 0.5, 0.6]]}', 422, "-1e+39 is outside float32's range"),
        # over the body limit: a 413 before parsing, though the JSON is broken too
        ('{"instances": [[' + "0.5, " * 1000, 413, "at most 4096 (serve.max_body_bytes)"),
    ],
)
def test_malformed_request_gets_4xx_naming_the_problem_and_next_request_works(app, payload, status, needle) -> None:
    _, _, url = app
    bad = requests.post(f"{url}/predict", data=payload, headers={"content-type": "application/json"}, timeout=10)
    assert bad.status_code == status, bad.text
    assert needle in bad.text
    good = requests.post(f"{url}/predict", json={"instances": [[0.5] * 6, [0.1] * 6]}, timeout=10)
    assert good.status_code == 200, good.text
    body = good.json()
    assert len(body["predictions"]) == 2 and body["model_version"] >= 0
    assert all(abs(sum(p) - 1.0) < 1e-5 for p in body["probabilities"])


def test_a_streamed_body_is_cut_at_the_limit_and_the_replica_stays_healthy(app) -> None:
    _, _, url = app

    def chunks():  # chunked transfer encoding: no Content-Length to refuse on
        yield b'{"instances": ['
        for _ in range(400):
            yield b"[0.5, 0.5, 0.5, 0.5, 0.5, 0.5],"
        yield b"[0.5, 0.5, 0.5, 0.5, 0.5, 0.5]]}"

    bad = requests.post(f"{url}/predict", data=chunks(), headers={"content-type": "application/json"}, timeout=10)
    assert bad.status_code == 413 and "over 4096 bytes" in bad.text
    assert requests.post(f"{url}/predict", json={"instances": [[0.5] * 6]}, timeout=10).status_code == 200


def test_fuzzing_against_the_published_openapi_finds_no_5xx_no_schema_violation_and_no_hang(app) -> None:
    from tests.integration.fuzz import fuzz

    _, _, url = app
    totals = fuzz(url, max_examples=25)
    print(totals.table())
    assert totals.requests >= 50 and totals.count(400, 500) > 0 and totals.count(200, 300) > 0
    assert totals.count(500, 600) == 0 and not totals.failures, totals.failures[:5]


def test_replicas_given_a_gpu_without_cuda_serve_from_the_cpu(app) -> None:
    """serve.num_gpus: each replica holds its share of a logical GPU (Ray assigned it an id), and with no CUDA in
    this torch it answers from the CPU, the same answers as the model on the CPU."""
    cfg, _, url = app
    seen = {}
    for _ in range(20):
        v = requests.get(f"{url}/version", timeout=10).json()
        seen[v["replica"]] = (v["device"], v["gpu_ids"])
    assert len(seen) == cfg.serve.num_replicas
    assert all(device == "cpu" and len(ids) == 1 for device, ids in seen.values()), seen
    x = np.random.default_rng(0).random((4, 6), dtype=np.float32)
    r = requests.post(f"{url}/predict", json={"instances": x.tolist()}, timeout=10)
    assert r.status_code == 200, r.text
    cfg_model = models.build(cfg.model, 6, 2, seed=0).eval()
    with torch.no_grad():
        expected = cfg_model(torch.from_numpy(x)).argmax(1).tolist()
    assert r.json()["predictions"] == expected


def test_nan_update_is_rejected_and_good_update_reaches_every_replica(app, ray_cluster) -> None:
    cfg, controller, url = app
    ray = ray_cluster
    before = ray.get(controller.latest_version.remote())
    weights = models.state_to_numpy(models.build(cfg.model, 6, 2, seed=1))
    poisoned = {k: v.copy() for k, v in weights.items()}
    next(iter(poisoned.values()))[0] = np.nan
    result = ray.get(controller.publish.remote(poisoned, {"window": 0}))
    assert result["accepted"] is False and result["decision"] == "reject_non_finite"
    time.sleep(0.5)
    assert _versions(url) == {before}

    t0 = time.monotonic()
    new = ray.get(controller.publish.remote(weights, {"window": 1}))["version"]
    assert ray.get(controller.wait_all_serving.remote(new, 5.0))
    assert time.monotonic() - t0 < 5.0
    assert _versions(url) == {new}
    record = ray.get(controller.summary.remote())["versions"][-1]
    assert record["version"] == new and len(record["expected_replicas"]) == cfg.serve.num_replicas
    assert record["all_served_s"] is not None and record["all_served_s"] < 1.0


def test_a_request_asking_for_a_newer_version_or_a_learned_window_waits_in_its_replica_until_it_is_there(
    ray_cluster, job_config
) -> None:
    """``?min_version``: requests are held until the publish reaches their replica (read your own update); one for
    a version that never comes is answered by the version served, named, once serve.version_wait_s is up; a
    negative one is a 422 naming it. ``?min_window``: held until the replica hears that the trainer finished the
    window, with the version it made, or with none (a rejected update: the trainer reports the window alone).
    Each answer says how long it was held (``Server-Timing: hold``)."""
    from concurrent.futures import ThreadPoolExecutor

    ray = ray_cluster
    app_name, prefix = "http_hold", "/hold"
    cfg = job_config(
        controller={"name": "http_hold_controller", "poll_timeout_s": 2.0},
        # long enough that a release by the trainer's progress can't be taken for one by the wait running out
        serve={"app_name": app_name, "num_replicas": 1, "version_wait_s": 2.0},
    )
    controller = (
        ray.remote(ControllerActor)
        .options(name=cfg.controller.name, namespace=cfg.ray.namespace, num_cpus=0, max_concurrency=100)
        .remote()
    )
    before = ray.get(controller.publish.remote(models.state_to_numpy(models.build(cfg.model, 6, 2, seed=0)), {}))
    serve.run(build_app(cfg, 6, 2), name=app_name, route_prefix=prefix)
    x = {"instances": [[0.5] * 6]}

    def post(min_version: int, name: str = "min_version") -> requests.Response:
        url = f"http://127.0.0.1:{cfg.serve.port}{prefix}/predict"
        return requests.post(url, json=x, params={name: min_version}, timeout=30)

    def held_ms(answer: requests.Response) -> float:
        name, dur = answer.headers["Server-Timing"].split(";")
        assert name == "hold"
        return float(dur.removeprefix("dur="))

    try:
        with ThreadPoolExecutor(4) as pool:
            held = [pool.submit(post, before["version"] + 1) for _ in range(4)]
            time.sleep(0.3)
            assert not any(f.done() for f in held), [f.result().json() for f in held if f.done()]
            weights = models.state_to_numpy(models.build(cfg.model, 6, 2, seed=11))
            new = ray.get(controller.publish.remote(weights, {}))["version"]
            answers = [f.result() for f in held]
        assert new == before["version"] + 1
        assert [(r.status_code, r.json()["model_version"]) for r in answers] == [(200, new)] * 4
        assert post(new).json()["model_version"] == new  # served already: no wait
        t0 = time.monotonic()
        late = post(new + 100)
        assert late.status_code == 200 and late.json()["model_version"] == new
        assert time.monotonic() - t0 >= 0.9 * cfg.serve.version_wait_s
        bad = post(-1)
        assert bad.status_code == 422 and "min_version" in bad.text
        # ?min_window: the trainer finishes window 0 with a new version, then window 1 with none
        with ThreadPoolExecutor(4) as pool:
            held = [pool.submit(post, 0, "min_window") for _ in range(2)]
            time.sleep(0.3)
            assert not any(f.done() for f in held), [f.result().json() for f in held if f.done()]
            weights = models.state_to_numpy(models.build(cfg.model, 6, 2, seed=12))
            learned = ray.get(controller.publish.remote(weights, {"window": 0}, None, None, {"index": 0}))["version"]
            answers = [f.result() for f in held]
            assert [(r.status_code, r.json()["model_version"]) for r in answers] == [(200, learned)] * 2
            assert all(held_ms(r) >= 250 for r in answers)
            held = [pool.submit(post, 1, "min_window") for _ in range(2)]
            time.sleep(0.3)
            assert not any(f.done() for f in held), [f.result().json() for f in held if f.done()]
            ray.get(controller.trainer_progress.remote({"index": 1}))  # its update was rejected: no version
            answers = [f.result() for f in held]
            assert [(r.status_code, r.json()["model_version"]) for r in answers] == [(200, learned)] * 2
            # released by the window, not by version_wait_s
            assert all(250 <= held_ms(r) < 900 * cfg.serve.version_wait_s for r in answers)
        assert held_ms(post(1, "min_window")) < 100  # known already: no wait
        assert (
            "Server-Timing" not in requests.post(f"http://127.0.0.1:{cfg.serve.port}{prefix}/predict", json=x).headers
        )
        bad = post(-1, "min_window")
        assert bad.status_code == 422 and "min_window" in bad.text
    finally:
        serve.delete(app_name)
        ray.kill(controller)


def test_ddn_ray_rollback_serves_an_earlier_version_on_every_replica(app, ray_cluster) -> None:
    from ddn_ray import cli

    cfg, controller, url = app
    ray = ray_cluster
    old_model = models.build(cfg.model, 6, 2, seed=21)
    old = ray.get(controller.publish.remote(models.state_to_numpy(old_model), {}))["version"]
    newer = ray.get(controller.publish.remote(models.state_to_numpy(models.build(cfg.model, 6, 2, seed=22)), {}))
    x = [[0.3, -1.0, 0.5, 2.0, 0.1, -0.4]]
    argv = ["rollback", "--to", str(old), "--controller", cfg.controller.name, "--namespace", cfg.ray.namespace]
    out = cli.main(argv)
    assert out == {"version": newer["version"] + 1, "rollback_to": old, "all_serving": True}
    assert _versions(url) == {out["version"]}
    with torch.no_grad():
        expected = old_model(torch.tensor(x)).softmax(1).numpy()
    body = requests.post(f"{url}/predict", json={"instances": x}, timeout=10).json()
    assert body["model_version"] == out["version"]
    np.testing.assert_allclose(body["probabilities"], expected, atol=1e-6)
    # an update trained from before the rollback is refused; one trained from it is taken
    stale = ray.get(controller.publish.remote(models.state_to_numpy(old_model), {"parent": newer["version"]}))
    assert stale["decision"] == "reject_superseded"
    with pytest.raises(SystemExit, match="model version 999 is not held"):
        cli.main([*argv[:1], "--to", "999", *argv[3:]])


def test_large_weights_reach_the_replicas_as_the_publishers_object_and_the_controller_keeps_its_own(
    ray_cluster, job_config, tmp_path
) -> None:
    """Weights over 100 KiB: the replicas are offered the publisher's own object and the controller copies it
    (publish_args); once the publisher drops it, the replicas, a late poll and a rollback to a version that only
    its journal file still holds all get the right weights."""
    from ddn_ray.controller import VersionOffer, fits_inline, publish_args

    ray = ray_cluster
    app_name, prefix = "http_big", "/big"
    cfg = job_config(
        controller={"name": "http_big_controller", "poll_timeout_s": 2.0},
        model={"hidden_sizes": [256, 256]},  # ~270 KB of float32
        serve={"app_name": app_name},
    )
    controller = (
        ray.remote(ControllerActor)
        .options(name=cfg.controller.name, namespace=cfg.ray.namespace, num_cpus=0, max_concurrency=100)
        .remote(store_uri=str(tmp_path / "journal"), memory_versions=2)
    )
    built = [models.build(cfg.model, 6, 2, seed=s) for s in range(5)]
    states = [models.state_to_numpy(m) for m in built]
    assert not fits_inline(states[0])
    ray.get(controller.publish.remote(publish_args(states[0]), {}))
    serve.run(build_app(cfg, 6, 2), name=app_name, route_prefix=prefix)
    url = f"http://127.0.0.1:{cfg.serve.port}{prefix}"
    x = [[0.3, -1.0, 0.5, 2.0, 0.1, -0.4], [1.0, 0.2, -0.7, 0.0, 0.9, 0.4]]

    def answers_of(seed: int) -> np.ndarray:
        with torch.no_grad():
            return built[seed](torch.tensor(x)).softmax(1).numpy()

    try:
        for seed in (1, 2, 3, 4):
            args = publish_args(states[seed])
            assert isinstance(args, list)  # the publisher's own object, not the arrays
            version = ray.get(controller.publish.remote(args, {"window": seed}))["version"]
            del args  # the publisher lets go of its object: what the replicas load must not need it any more
            assert ray.get(controller.wait_all_serving.remote(version, 10.0))
            body = requests.post(f"{url}/predict", json={"instances": x}, timeout=10).json()
            assert body["model_version"] == version
            np.testing.assert_allclose(body["probabilities"], answers_of(seed), atol=1e-6)
        # version 1 is out of the object store (memory_versions=2): it comes back from its journal file
        rolled = ray.get(controller.rollback.remote(1))["version"]
        assert ray.get(controller.wait_all_serving.remote(rolled, 10.0))
        body = requests.post(f"{url}/predict", json={"instances": x}, timeout=10).json()
        assert body["model_version"] == rolled
        np.testing.assert_allclose(body["probabilities"], answers_of(1), atol=1e-6)
        # a replica polling now (last: it counts as live from here on) is offered the controller's object
        offer = ray.get(controller.wait_for_version.remote("a-late-replica", None, 1.0))
        assert isinstance(offer, VersionOffer) and offer.version == rolled and offer.weights is None
        assert offer.ref is not None
        np.testing.assert_array_equal(ray.get(offer.ref[0])["head.weight"], states[1]["head.weight"])
    finally:
        serve.delete(app_name)
        ray.kill(controller)


def test_replica_started_later_serves_latest_version(app, ray_cluster) -> None:
    cfg, controller, url = app
    ray = ray_cluster
    latest = ray.get(controller.latest_version.remote())
    serve.run(
        build_app(cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"num_replicas": 3})}), 6, 2),
        name=APP,
        route_prefix=PREFIX,
    )
    deadline = time.monotonic() + 60
    while ray.get(controller.num_live_replicas.remote()) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(ray.get(controller.summary.remote())["replica_versions"].values()) == {latest}
    assert _versions(url, 30) == {latest}


def test_a_killed_replica_is_not_waited_for_and_its_replacement_serves_the_latest_version(app, ray_cluster) -> None:
    """SIGKILL of a replica's process: requests keep being answered, the next version counts as served once
    the live replicas serve it (not after replica_ttl_s), and Serve's replacement joins on the latest version."""
    import os
    import signal

    cfg, controller, url = app
    ray = ray_cluster
    names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True))
    replicas = [n for n in names if n.startswith(f"SERVE_REPLICA::{APP}#")]
    assert len(replicas) >= 2, replicas
    victim = ray.get_actor(replicas[0], namespace="serve")
    pid = ray.get(victim.__ray_call__.remote(lambda self: os.getpid()))
    before = set(ray.get(controller.summary.remote())["replica_versions"])
    # the job's traffic client, its list of the replicas' own servers read before the kill (and kept for a minute)
    client = TrafficClient(
        f"{url}/predict",
        request_rows=1,
        num_clients=1,
        replicas=partial(ingress.replica_urls, APP, host="127.0.0.1"),
        replicas_refresh_s=60.0,
    )
    client.predict(np.arange(1), np.full((1, 6), 0.5, dtype=np.float32))
    os.kill(pid, signal.SIGKILL)
    failed = sum(
        requests.post(f"{url}/predict", json={"instances": [[0.5] * 6]}, timeout=10).status_code != 200
        for _ in range(20)
    )
    # the dead replica's port refuses: those requests go again through the proxy, and none fails
    answers = client.predict(np.arange(20), np.full((20, 6), 0.5, dtype=np.float32))
    client.close()
    assert not answers.errors and (answers.versions >= 0).all() and client.sent["proxy"] >= 1, client.sent
    t0 = time.monotonic()
    v = ray.get(controller.publish.remote(models.state_to_numpy(models.build(cfg.model, 6, 2, seed=7)), {}))["version"]
    assert ray.get(controller.wait_all_serving.remote(v, 10.0))
    waited_s = time.monotonic() - t0
    summary = ray.get(controller.summary.remote())
    assert waited_s < 2.0, (waited_s, summary["replicas_gone"])
    # the victim, and replicas that an earlier redeploy replaced (stopped, but heard from within replica_ttl_s)
    alive = {n.rsplit("#", 1)[1] for n in replicas[1:]}
    assert replicas[0].rsplit("#", 1)[1] in summary["replicas_gone"] and not alive & set(summary["replicas_gone"])
    assert failed == 0
    deadline = time.monotonic() + 60  # Serve starts a replacement, which loads v before it takes traffic
    while time.monotonic() < deadline:
        versions = ray.get(controller.summary.remote())["replica_versions"]
        new = set(versions) - before
        if new and all(versions[r] >= v for r in new):
            break
        time.sleep(0.2)
    assert new and all(versions[r] >= v for r in new), versions
    assert _versions(url, 20) == {v}


def test_the_replicas_own_servers_answer_the_same_app_on_loopback_only(app, ray_cluster) -> None:
    """Serve's direct ingress (the session cluster has it, as the main job's own cluster does): each replica
    listens on 127.0.0.1 and a port of the pinned range, and answers as through the proxy: the version served,
    a 422 naming the field, ``?min_version``."""
    import psutil

    url = app[2]
    urls = ingress.replica_urls(APP, host="127.0.0.1")
    ports = {int(u.rsplit(":", 1)[1]) for u in urls}
    running = serve.status().applications[APP].deployments["Predictor"].replica_states.get("RUNNING")
    assert len(urls) == running >= 2 and all(DIRECT_INGRESS_PORTS[0] <= p <= DIRECT_INGRESS_PORTS[1] for p in ports), (
        urls
    )
    listening = {c.laddr for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port in ports}
    assert {a.ip for a in listening} == {"127.0.0.1"} and {a.port for a in listening} == ports
    served = requests.get(f"{url}/version", timeout=10).json()["model_version"]
    replicas = set()
    for base in urls:
        ok = requests.post(f"{base}{PREFIX}/predict", json={"instances": [[0.5] * 6]}, timeout=10)
        assert ok.status_code == 200 and ok.json()["model_version"] == served, ok.text
        replicas.add(ok.json()["replica"])
        bad = requests.post(f"{base}{PREFIX}/predict", json={"instances": [[0.5] * 5]}, timeout=10)
        assert bad.status_code == 422 and "instances[0] has 5 features; expected 6" in bad.text
        held = requests.post(
            f"{base}{PREFIX}/predict", params={"min_version": -1}, json={"instances": [[0.5] * 6]}, timeout=10
        )
        assert held.status_code == 422 and "min_version" in held.text
    assert len(replicas) == len(urls)  # one server per replica
    assert ingress.replica_urls("no_such_app", host="127.0.0.1") == []


def test_metrics_reach_the_prometheus_endpoint(app, ray_cluster) -> None:
    ray_get = ray_cluster.get
    cfg, controller, url = app
    v = ray_get(controller.publish.remote(models.state_to_numpy(models.build(cfg.model, 6, 2, seed=5)), {}))["version"]
    ray_get(controller.wait_all_serving.remote(v, 20.0))
    ray_get(
        controller.trainer_progress.remote(
            {"index": 0, "num_rows": 50, "pre_accuracy": 0.75, "events": [{"window": 0, "decision": "all"}]}
        )
    )
    assert requests.post(f"{url}/predict", json={"instances": [[0.5] * 6] * 3}, timeout=10).status_code == 200
    assert requests.post(f"{url}/predict", json={"instances": [[0.5] * 5]}, timeout=10).status_code == 422
    names = [
        "ray_ddn_ray_model_version",
        "ray_ddn_ray_versions_total",
        "ray_ddn_ray_freshness_seconds_count",
        "ray_ddn_ray_windows_trained_total",
        "ray_ddn_ray_prequential_accuracy",
        "ray_ddn_ray_rows_trained_total",
        "ray_ddn_ray_drift_signals_total",
        "ray_ddn_ray_served_model_version",
        "ray_ddn_ray_requests_total",
        "ray_ddn_ray_request_errors_total",
        "ray_ddn_ray_rows_predicted_total",
    ]
    value = lambda line: float(line.rsplit(" ", 1)[1])
    served = lambda f: [ln for ln in f["ray_ddn_ray_served_model_version"] if 'replica="' in ln]
    # the controller and each replica export their gauges at their own report intervals: wait for both
    found = scrape(
        names,
        until=lambda f: (
            max(value(ln) for ln in f["ray_ddn_ray_model_version"]) >= v
            and max((value(ln) for ln in served(f)), default=0) >= v
        ),
    )
    assert all(found.values()), [n for n, lines in found.items() if not lines]
    assert max(value(ln) for ln in found["ray_ddn_ray_model_version"]) >= v
    assert served(found) and max(value(ln) for ln in served(found)) >= v
    assert any('code="422"' in ln for ln in found["ray_ddn_ray_request_errors_total"])
    assert any('code="200"' in ln and value(ln) >= 1 for ln in found["ray_ddn_ray_requests_total"])
    assert any('decision="all"' in ln for ln in found["ray_ddn_ray_drift_signals_total"])
    assert any(value(ln) == 0.75 for ln in found["ray_ddn_ray_prequential_accuracy"])


def test_checkpoint_source_serves_that_version_without_a_controller(ray_cluster, tmp_path) -> None:
    from ddn_ray import checkpoint as checkpoint_io
    from ddn_ray.config import ModelConfig
    from ddn_ray.serve import app_builder

    model = models.build(ModelConfig(hidden_sizes=(8,)), 7, 2, seed=3)
    with torch.no_grad():  # inputs near float32's limit overflow: a non-finite output to refuse
        next(model.parameters()).fill_(1.0)
    checkpoint_io.write(
        tmp_path,
        model.state_dict(),
        [{}],
        {
            "next_offset": 500,
            "next_window": 10,
            "model_version": 41,
            "model": {"hidden_sizes": [8]},
            "num_features": 7,
            "num_classes": 2,
            "feature_names": list("abcdefg"),
        },
    )
    serve.run(app_builder({"checkpoint": str(tmp_path)}), name="ckpt_test", route_prefix="/ckpt")
    try:
        url = f"http://127.0.0.1:{SERVE_PORT}/ckpt"
        x = np.random.default_rng(0).random((4, 7), dtype=np.float32)
        body = requests.post(f"{url}/predict", json={"instances": x.tolist()}, timeout=10).json()
        assert body["model_version"] == 41
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).softmax(1).numpy()
        np.testing.assert_allclose(body["probabilities"], expected, atol=1e-6)
        wrong = requests.post(f"{url}/predict", json={"instances": [[0.0] * 6]}, timeout=10)
        assert wrong.status_code == 422 and "expected 7" in wrong.text
        huge = requests.post(f"{url}/predict", json={"instances": [[3e38] * 7]}, timeout=10)
        assert huge.status_code == 500 and "model version 41 gave a non-finite output for rows [0]" in huge.text
        assert requests.post(f"{url}/predict", json={"instances": x.tolist()}, timeout=10).ok  # still healthy
    finally:
        serve.delete("ckpt_test")


def test_with_a_token_every_route_needs_it(ray_cluster, tmp_path) -> None:
    """The token from the replica's environment (as a Serve config's ``runtime_env`` sets it), never its args."""
    from ddn_ray import checkpoint as checkpoint_io
    from ddn_ray.config import ModelConfig
    from ddn_ray.serve import Predictor

    model = models.build(ModelConfig(hidden_sizes=(8,)), 3, 2, seed=3)
    meta = {"model_version": 7, "model": {"hidden_sizes": [8]}, "num_features": 3, "num_classes": 2}
    checkpoint_io.write(tmp_path, model.state_dict(), [{}], meta)
    env = {"env_vars": {"DDN_RAY_AUTH_TOKEN": "s3cret"}}
    app = Predictor.options(ray_actor_options={"num_cpus": 0.25, "runtime_env": env})  # type: ignore[attr-defined]
    serve.run(app.bind(checkpoint=str(tmp_path)), name="auth_test", route_prefix="/auth")
    try:
        url = f"http://127.0.0.1:{SERVE_PORT}/auth"
        for route in ("/predict", "/version", "/openapi.json", "/docs", "/no-such-route"):
            plain = requests.request("POST" if route == "/predict" else "GET", url + route, json={}, timeout=10)
            assert plain.status_code == 401 and plain.headers["www-authenticate"] == "Bearer", (route, plain.text)
        wrong = requests.post(f"{url}/predict", json={}, headers={"Authorization": "Bearer s3cre"}, timeout=10)
        assert wrong.status_code == 401 and "wrong bearer token" in wrong.text
        auth = {"Authorization": "Bearer s3cret"}
        body = requests.post(f"{url}/predict", json={"instances": [[0.1, 0.2, 0.3]]}, headers=auth, timeout=10)
        assert body.status_code == 200 and body.json()["model_version"] == 7
        assert requests.get(f"{url}/version", headers=auth, timeout=10).json()["model_version"] == 7
        (own,) = ingress.replica_urls("auth_test", host="127.0.0.1")  # the replica's own server asks the same
        assert requests.post(f"{own}/auth/predict", json={}, timeout=10).status_code == 401
        mine = requests.post(f"{own}/auth/predict", json={"instances": [[0.1, 0.2, 0.3]]}, headers=auth, timeout=10)
        assert mine.status_code == 200 and mine.json()["model_version"] == 7
    finally:
        serve.delete("auth_test")


def test_app_args_need_exactly_one_source() -> None:
    from pydantic import ValidationError

    from ddn_ray.serve import AppArgs

    for bad in ({}, {"checkpoint": "/x", "controller": "c"}, {"checkpoint": "/x", "replicas": 2}):
        with pytest.raises(ValidationError):
            AppArgs(**bad)
