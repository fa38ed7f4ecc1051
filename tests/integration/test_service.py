"""The long-running service (ddn_ray.service, jobs/service.py) with a separate client process.

One service run, shared by the checks: examples/service_client.py, started as its own process, sends a
drifting stream's records to /predict and the labels of ~70 % of the rows to /feedback after a random delay.
In the middle, the learner's replica is killed (SIGKILL): Serve starts another, which resumes from the files.
Then the service is stopped and started again with the same run_name. The counts in the prediction log, the
joined log and the learned windows are checked against what the client was answered.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from tests.integration.session_ports import SERVE_PORT, scrape

ROOT = Path(__file__).resolve().parents[2]
ROWS, FLIP_AT, BATCH = 2000, 1000, 20
URL = f"http://127.0.0.1:{SERVE_PORT}"


def drifting_table(path: Path, seed: int = 0) -> Path:
    """Two numbers, a category and an id; the class is which side of a line a row lies on, and swaps at FLIP_AT."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.uniform(-1, 1, ROWS), rng.uniform(-1, 1, ROWS)
    region = rng.choice(["north", "south"], ROWS)
    side = x1 + 0.5 * x2 > 0
    side[FLIP_AT:] = ~side[FLIP_AT:]
    pq.write_table(
        pa.table(
            {
                "txn": [f"t{i:05d}" for i in range(ROWS)],
                "x1": x1,
                "x2": x2,
                "region": region,
                "y": np.where(side, "yes", "no"),
            }
        ),
        path,
    )
    return path


def stats() -> dict[str, Any]:
    r = requests.get(URL + "/stats", timeout=30)
    r.raise_for_status()
    return r.json()


def wait_for(what: str, predicate, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = stats()
            if predicate(last):
                return last
        except requests.RequestException as exc:
            last = repr(exc)
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}: {last}")


@pytest.fixture(scope="module")
def service_run(ray_cluster, service_recipe, tmp_path_factory) -> dict[str, Any]:
    from ray import serve

    from ddn_ray import service

    recipe = service_recipe
    tmp = tmp_path_factory.mktemp("service")
    table = drifting_table(tmp / "drift.parquet")
    cfg = service.service_config(
        ROOT / "jobs" / "configs" / "service.yaml",
        {
            "run_name": "svc-test",
            "storage_path": str(tmp / "storage"),
            "data": {
                "source": {"kind": "table", "uri": str(table)},
                "features": ["x1", "x2", "region"],
                "label": "y",
                "id": "txn",
                "classes": ["no", "yes"],
                "scaling": "standard",
                "missing": "impute",
            },
            "stream": {"window_size": 50},
            "service": {"window_timeout_s": 3.0, "log_flush_interval_s": 0.5},
            "drift": {"detector": "none"},
            "policy": {"name": "none"},
            "serve": {"port": SERVE_PORT, "app_name": "svc", "num_replicas": 2},
            "controller": {"name": "svc_controller"},
            "report": {"output_dir": str(tmp / "runs")},
        },
    )
    out: dict[str, Any] = {"cfg": cfg, "tmp": tmp}
    recipe.deploy(cfg)
    try:
        out["ready"] = wait_for("the trainer", lambda s: s["trainer_ready"], 180)
        out["bad_input"] = bad_requests()
        answers = tmp / "answers.parquet"
        client = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "examples" / "service_client.py"),
                "--url",
                URL,
                "--table",
                str(table),
                "--label",
                "y",
                "--batch",
                str(BATCH),
                "--rate",
                "1",  # the learner checkpoints every window; at 1.5/s it fell behind the drift here
                "--feedback-fraction",
                "0.7",
                "--max-delay-s",
                "2.0",
                "--out",
                str(answers),
                "--timeout-s",
                "600",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # the learner's replica dies in the middle of the stream, before the drift
        before = wait_for("400 answered rows", lambda s: s["predicted"] >= 400, 300)
        pid = serve.get_app_handle(service.learner_app_name(cfg)).pid.remote().result(timeout_s=30)
        os.kill(pid, signal.SIGKILL)
        out["killed_at"] = before
        stdout, stderr = client.communicate(timeout=900)
        assert client.returncode == 0, stderr[-3000:]
        out["client"] = json.loads(stdout.strip().splitlines()[-1])
        out["answers"] = pq.read_table(answers).to_pylist()
        # every joined row learned: nothing waits, the offsets all covered
        out["learned"] = wait_for(
            "every joined row learned",
            lambda s: s["trainer_ready"] and s["pending_learn"] == 0 and s["joined"] == s["joined_offset"],
            300,
        )
        out["metrics"] = scrape(
            [
                "ray_ddn_ray_service_labels_total",
                "ray_ddn_ray_service_windows_learned_total",
                "ray_ddn_ray_service_online_accuracy",
                "ray_ddn_ray_service_label_delay_s",
            ]
        )
        out["final"] = recipe.stop(cfg)
        # a second start with the same run_name: the log, offsets and versions continue (labels join before its
        # trainer is up; the stop does not wait for a trainer that learned nothing)
        recipe.deploy(cfg)
        out["restarted"] = stats()
        unlabelled = [a["event_id"] for a in out["answers"] if a["feedback"] == "not sent"][:5]
        labels = [json.loads(a["label"]) for a in out["answers"] if a["feedback"] == "not sent"][:5]
        r = requests.post(
            URL + "/feedback", json=[{"event_id": e, "label": y} for e, y in zip(unlabelled, labels)], timeout=60
        )
        out["late_feedback"] = (r.status_code, r.json())
        out["final2"] = recipe.stop(cfg)
    finally:
        recipe.stop(cfg)
        if os.environ.get("DDN_RAY_DEBUG_DUMP"):
            Path(os.environ["DDN_RAY_DEBUG_DUMP"]).write_text(
                json.dumps({k: v for k, v in out.items() if k not in ("cfg", "answers", "tmp")}, default=str, indent=1)
            )
    return out


def bad_requests() -> dict[str, Any]:
    """Malformed bodies, each answered with a 4xx naming the field."""
    record = {"x1": 0.1, "x2": -0.2, "region": "north"}
    answered = requests.post(URL + "/predict", json={"records": [record]}, timeout=30).json()
    eid = answered["event_ids"][0]
    cases = {
        "not_a_list": requests.post(URL + "/feedback", json={"event_id": eid, "label": "yes"}, timeout=30),
        "id_not_string": requests.post(URL + "/feedback", json=[{"event_id": 7, "label": "yes"}], timeout=30),
        "unknown_class": requests.post(URL + "/feedback", json=[{"event_id": eid, "label": "maybe"}], timeout=30),
        "all_unknown_ids": requests.post(URL + "/feedback", json=[{"event_id": "nope", "label": "yes"}], timeout=30),
        "learn_without_label": requests.post(URL + "/learn", json={"records": [record]}, timeout=30),
        "learn_bad_value": requests.post(
            URL + "/learn", json={"records": [{**record, "x1": "a", "y": "no"}]}, timeout=30
        ),
        "predict_missing_column": requests.post(URL + "/predict", json={"records": [{"x1": 1.0}]}, timeout=30),
    }
    out = {k: (r.status_code, r.text) for k, r in cases.items()}
    ok = requests.post(
        URL + "/feedback", json=[{"event_id": eid, "label": "yes"}, {"event_id": "nope", "label": "no"}], timeout=30
    )
    out["partly_known"] = (ok.status_code, ok.json())
    learned = requests.post(
        URL + "/learn", json={"records": [{**record, "y": "yes", "event_id": "direct-1"}]}, timeout=30
    )
    out["learn"] = (learned.status_code, learned.json())
    out["healthy_after"] = requests.get(URL + "/stats", timeout=30).status_code
    out["probe_ids"] = {"logged": [eid], "joined": [eid, "direct-1"]}  # eid: generated (the probe sent no txn)
    return out


def test_bad_input_is_a_4xx_naming_the_field_and_the_service_stays_healthy(service_run) -> None:
    bad = service_run["bad_input"]
    assert bad["not_a_list"][0] == 422 and "list" in bad["not_a_list"][1]
    assert bad["id_not_string"][0] == 422 and "event_id" in bad["id_not_string"][1]
    assert bad["unknown_class"][0] == 422 and "body[0].label" in bad["unknown_class"][1]
    assert bad["all_unknown_ids"][0] == 404 and "nope" in bad["all_unknown_ids"][1]
    assert bad["learn_without_label"][0] == 422 and "records[0].y" in bad["learn_without_label"][1]
    assert bad["learn_bad_value"][0] == 422 and "records[0].x1" in bad["learn_bad_value"][1]
    assert bad["predict_missing_column"][0] == 422 and "x2" in bad["predict_missing_column"][1]
    for _, text in (v for v in bad.values() if isinstance(v, tuple) and v[0] == 422):
        (detail,) = json.loads(text)["detail"]  # every route's 422: the OpenAPI's list of {loc, msg, type}
        assert detail.keys() == {"loc", "msg", "type"} and detail["msg"], text
    assert bad["partly_known"] == (
        200,
        {"joined": 1, "first_offset": 0, "unknown": ["nope"], "duplicate": [], "late": []},
    )
    assert bad["learn"][0] == 200 and bad["learn"][1]["joined"] == 1
    assert bad["healthy_after"] == 200
    assert len(bad["probe_ids"]["logged"][0]) == 32  # a request without the id column: generated event ids


def test_a_client_process_drives_learning_through_a_drift_and_the_model_recovers(service_run) -> None:
    answers, client = service_run["answers"], service_run["client"]
    assert client["rows_answered"] == ROWS
    assert [a["event_id"] for a in answers] == [f"t{i:05d}" for i in range(ROWS)]  # the client's id column
    versions = [a["model_version"] for a in answers]
    assert versions[-1] > service_run["killed_at"]["model_version"] > versions[0]
    correct = np.array([json.loads(a["predicted"]) == json.loads(a["label"]) for a in answers])
    before = correct[FLIP_AT - 400 : FLIP_AT].mean()
    after = correct[-400:].mean()
    assert before > 0.85, before
    assert after >= before - 0.05, (before, after)
    assert correct[FLIP_AT : FLIP_AT + 100].mean() < 0.5  # the drift happened: the old model was wrong


def test_a_killed_learner_and_a_restart_lose_no_row(service_run) -> None:
    storage = Path(service_run["cfg"].storage_path) / "svc-test" / "service"
    answers = service_run["answers"]
    answered_ids = {a["event_id"] for a in answers}
    logged = pq.read_table(storage / "predictions")
    joined = pq.read_table(storage / "joined")
    # every row the client was answered is in the prediction log, once (plus the bad-input probes')
    logged_ids = logged["event_id"].to_pylist()
    assert len(logged_ids) == len(set(logged_ids))
    probes = service_run["bad_input"]["probe_ids"]
    assert set(logged_ids) == answered_ids | set(probes["logged"])
    # every label the client saw joined is in the joined log, once; nothing else is
    client_joined = {a["event_id"] for a in answers if a["feedback"] == "joined"}
    joined_ids = joined["event_id"].to_pylist()
    assert len(joined_ids) == len(set(joined_ids))
    assert set(joined_ids[: joined.num_rows - 5]) == client_joined | set(probes["joined"])  # 5: after the restart
    assert {a["feedback"] for a in answers} <= {"joined", "not sent"}, "a label was lost or refused"
    assert joined.sort_by("offset")["offset"].to_pylist() == list(range(joined.num_rows))
    # the learned windows cover the joined offsets exactly once, in order, across the kill and the restart
    windows = json.loads((storage / "learned.json").read_text())
    spans = [(w["start"], w["end"]) for w in windows]
    waiting = service_run["final2"]["pending_learn"]  # joined after the restart, not yet a window at the stop
    assert spans[0][0] == 0 and spans[-1][1] + waiting == joined.num_rows
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans)), spans
    assert sum(w["learned_rows"] + w["quarantined"] for w in windows) + waiting == joined.num_rows
    final = service_run["final"]
    assert final["joined"] == joined.num_rows - 5 and final["pending_learn"] == 0
    assert final["trained_again_rows"] <= service_run["cfg"].stream.window_size  # at most the window in flight


def test_a_restart_resumes_the_log_offsets_and_versions(service_run) -> None:
    first, again = service_run["final"], service_run["restarted"]
    assert again["joined_offset"] == first["joined_offset"]
    assert again["model_version"] > first["model_version"] and again["predicted"] == first["predicted"]
    # the stop checkpointed every window learned: a restart learns none of them again
    metas = [
        json.loads(p.read_text())
        for p in (Path(service_run["cfg"].storage_path) / "svc-test").glob("checkpoint_*/meta.json")
    ]
    offsets = {m["next_offset"] for m in metas}
    assert first["joined_offset"] in offsets  # the stop's checkpoint covers every row joined before it
    # beyond it only the 5 rows joined after the restart, if their window was learned before the second stop
    assert max(offsets) in (first["joined_offset"], first["joined_offset"] + 5), sorted(offsets)[-3:]
    status, body = service_run["late_feedback"]
    assert status == 200 and body["joined"] == 5 and body["first_offset"] == first["joined_offset"]


def test_online_figures_reach_prometheus_and_the_plot_from_the_logs(service_run) -> None:
    from ddn_ray import cli

    found = service_run["metrics"]
    assert all(found.values()), {k: v for k, v in found.items() if not v}
    assert any('result="joined"' in ln for ln in found["ray_ddn_ray_service_labels_total"])
    assert {
        q
        for q in ("p50", "p90", "p99")
        if any(f'quantile="{q}"' in ln for ln in found["ray_ddn_ray_service_label_delay_s"])
    } == {"p50", "p90", "p99"}
    run_dir = Path(service_run["cfg"].storage_path) / "svc-test"
    figures = cli.service_report(run_dir)
    answers = service_run["answers"]
    assert figures["rows_answered"] == len(answers) + 1  # and the bad-input probe's row
    assert figures["labels_joined"] == pq.read_table(run_dir / "service" / "joined").num_rows
    assert Path(figures["plot"]).is_file() and figures["versions"][1] > figures["versions"][0]
