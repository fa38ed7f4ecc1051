"""Dynamic networks on the real cluster: early exit answered per row over HTTP, the controller switching between
the distilled student and the teacher, a quantised copy served, and the main job learning all of it under DDP."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
from ray import serve

from ddn_ray import checkpoint as checkpoint_io
from ddn_ray import exits, models
from ddn_ray.controller import ControllerActor
from ddn_ray.serve import app_builder, build_app

APP, PREFIX = "exits_test", "/exits"
CONFIDENT, UNSURE = [1.0, 0, 0, 0, 0, 0], [0.0, 0, 0, 0, 0, 0]


def _rigged(cfg: Any) -> torch.nn.Module:
    """The config's multi-exit MLP with exit 0 confident (softmax(10, 0)) on a row whose first value is 1, and at
    0.5 / 0.5 on a row of zeros."""
    model = models.build(cfg.model, 6, 2, seed=0)
    with torch.no_grad():
        first = model.body[0][0]
        first.weight.zero_()
        first.weight[0, 0] = 1.0
        first.bias.zero_()
        gate = model.exits[0]
        gate.weight.zero_()
        gate.weight[0, 0] = 10.0
        gate.bias.zero_()
    return model


@pytest.fixture(scope="module")
def app(ray_cluster, job_config):
    ray = ray_cluster
    cfg = job_config(
        model={"hidden_sizes": [4, 4], "exits": [0], "exit_threshold": 0.9},
        distill={"student": {"hidden_sizes": [3]}, "margin": 0.02},
        controller={"name": "exits_test_controller", "poll_timeout_s": 2.0},
        serve={"app_name": APP, "num_replicas": 2},
    )
    controller = (
        ray.remote(ControllerActor)
        .options(name=cfg.controller.name, namespace=cfg.ray.namespace, num_cpus=0, max_concurrency=100)
        .remote(student_margin=cfg.distill.margin)
    )
    teacher = _rigged(cfg)
    ray.get(controller.publish.remote(models.state_to_numpy(teacher), {}))
    serve.run(build_app(cfg, 6, 2), name=APP, route_prefix=PREFIX)
    url = f"http://127.0.0.1:{cfg.serve.port}{PREFIX}"
    yield cfg, controller, url, teacher
    serve.delete(APP)
    ray.kill(controller)


def _predict(url: str, rows: list[list[float]], **extra: Any) -> dict[str, Any]:
    r = requests.post(f"{url}/predict", json={"instances": rows, **extra}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _wait_serving(url: str, version: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = {requests.get(f"{url}/version", timeout=10).json()["model_version"] for _ in range(10)}
        if seen == {version}:
            return
        time.sleep(0.2)
    raise AssertionError(f"replicas did not all serve version {version} within {timeout_s} s")


def test_each_row_is_answered_by_its_first_confident_exit_with_its_macs(app) -> None:
    _cfg, _, url, teacher = app
    costs = exits.exit_macs(teacher, 6)
    assert costs[0] < costs[1]
    assert requests.get(f"{url}/version", timeout=10).json()["exit_macs"] == list(costs)
    body = _predict(url, [CONFIDENT, UNSURE])  # the config's threshold, 0.9
    assert body["exits"] == [0, 1] and body["macs"] == [costs[0], costs[1]]
    expected = exits.exit_outputs(teacher.eval(), torch.tensor([CONFIDENT, UNSURE]))
    assert body["probabilities"][0] == pytest.approx(torch.softmax(expected[0][0], 0).tolist(), abs=1e-6)
    assert body["probabilities"][1] == pytest.approx(torch.softmax(expected[1][1], 0).tolist(), abs=1e-6)
    # each row exits on its own: alone, in the other order, or in a batch of 50 mixed rows
    assert _predict(url, [UNSURE])["exits"] == [1] and _predict(url, [CONFIDENT])["exits"] == [0]
    mixed = [CONFIDENT if i % 3 == 0 else UNSURE for i in range(50)]
    assert _predict(url, mixed)["exits"] == [0 if i % 3 == 0 else 1 for i in range(50)]
    # the threshold per request: 1 keeps every row to the head; 0.4 lets the 0.5 / 0.5 row exit too
    assert _predict(url, [CONFIDENT, UNSURE], exit_threshold=1.0)["exits"] == [1, 1]
    assert _predict(url, [CONFIDENT, UNSURE], exit_threshold=0.4)["exits"] == [0, 0]
    bad = requests.post(f"{url}/predict", json={"instances": [UNSURE], "exit_threshold": 1.5}, timeout=10)
    assert bad.status_code == 422 and "exit_threshold" in bad.text


def test_the_controller_serves_the_student_within_the_margin_and_the_teacher_when_it_falls_behind(
    app, ray_cluster
) -> None:
    cfg, controller, url, teacher = app
    ray = ray_cluster
    student = models.build(cfg.distill.student, 6, 2, seed=3)
    student_macs = exits.exit_macs(student, 6)
    teacher_macs = exits.exit_macs(teacher, 6)
    versions = []
    for teacher_acc, student_acc, expected in [(0.9, 0.89, "student"), (0.9, 0.7, "teacher"), (0.8, 0.8, "student")]:
        meta = {"teacher_accuracy": teacher_acc, "student_accuracy": student_acc}
        result = ray.get(
            controller.publish.remote(models.state_to_numpy(teacher), meta, None, models.state_to_numpy(student))
        )
        assert result["accepted"]
        versions.append(result["version"])
        _wait_serving(url, result["version"])
        info = requests.get(f"{url}/version", timeout=10).json()
        assert info["served_model"] == expected
        body = _predict(url, [CONFIDENT, UNSURE], exit_threshold=1.0)
        assert body["model_version"] == result["version"]
        if expected == "student":  # one exit, the student's cost
            assert body["macs"] == [student_macs[0]] * 2 and body["exits"] == [0, 0]
        else:
            assert body["macs"] == [teacher_macs[-1]] * 2
    assert versions == sorted(versions)
    summary = ray.get(controller.summary.remote())
    served = {v["version"]: v["meta"].get("served_model") for v in summary["versions"]}
    assert [served[v] for v in versions] == ["student", "teacher", "student"]


def test_a_checkpoint_is_served_as_an_int8_copy(ray_cluster, tmp_path: Path) -> None:
    from ddn_ray.config import ModelConfig

    mcfg = ModelConfig(hidden_sizes=(32, 32), exits=(0,))
    model = models.build(mcfg, 6, 2, seed=5).eval()
    meta = {"next_offset": 0, "next_window": 0, "model_version": 7, **checkpoint_io.model_spec(mcfg, 6, 2, None)}
    checkpoint_io.write(tmp_path, model.state_dict(), [], meta)
    serve.run(app_builder({"checkpoint": str(tmp_path), "quantize": "dynamic_int8"}), name="int8", route_prefix="/q")
    try:
        url = f"http://127.0.0.1:{serve.context._global_client.http_config.port}/q"
        assert requests.get(f"{url}/version", timeout=10).json()["quantize"] == "dynamic_int8"
        rows = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
        body = _predict(url, rows.tolist(), exit_threshold=1.0)
        with torch.no_grad():
            expected = model(torch.from_numpy(rows)).argmax(1).numpy()
        assert np.mean(np.asarray(body["predictions"]) == expected) >= 0.95
        assert body["model_version"] == 7
    finally:
        serve.delete("int8")


def test_the_main_job_trains_exits_a_student_and_a_meta_init_under_ddp(ray_cluster, continuous, job_config) -> None:
    """Two DDP workers learn a multi-exit teacher with LwF, distil a student every 2 windows and keep a Reptile
    meta-init; the controller serves the student (margin 1: always) and the checkpoint holds it all on both ranks.
    (This run is also the suite's LwF-under-DDP job.)"""
    cfg = job_config(
        data={"max_rows": 2000},
        model={"hidden_sizes": [32, 32], "exits": [0]},
        train={"num_workers": 2, "cpus_per_worker": 0.5, "checkpoint_every_windows": 10},
        strategy={"name": "lwf"},
        distill={"student": {"hidden_sizes": [8]}, "every_windows": 2, "margin": 1.0},
        meta={"init": "reptile", "inner_steps": 2},
        run_name="dynamic-ddp",
    )
    report = continuous.main(cfg)
    assert report["run"]["rows_served"] == 2000 and report["http"]["failed"] == 0
    assert report["run"]["versions_published"] == 20
    assert report["run"]["served_models"] == {"student": 20}
    assert all(0 <= v["meta"]["student_accuracy"] <= 1 for v in report["versions"][-5:])
    scores = report["scores"]
    assert scores["dynamic (served)"]["accuracy"] > scores["no-change (same label delay)"]["accuracy"] - 0.05
    last = max(Path(cfg.storage_path, cfg.run_name).glob("checkpoint_*/state.pt"), key=lambda p: p.parent.name)
    states = torch.load(last, weights_only=False)["learner"]
    assert len(states) == 2
    assert states[0]["distiller"]["distillations"] == 10
    for key, value in states[0]["distiller"]["student"].items():  # DDP-averaged: the same student on both ranks
        assert torch.allclose(value, states[1]["distiller"]["student"][key])
    assert report["config"]["strategy"]["name"] == "lwf" and report["trainer_pre_update_accuracy"] > 0.6
    assert all(st["strategy"]["teacher"] is not None for st in states)  # LwF's teacher on each rank
    assert states[0]["reptile"]["updates"] == 20
    for key, value in states[0]["reptile"]["init"].items():
        assert torch.allclose(value, states[1]["reptile"]["init"][key])
