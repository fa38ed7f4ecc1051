"""On a real head started with `ray start` (token auth on): the Jobs API runs the main job on a
slice, `serve deploy` runs the Serve config file against the job's checkpoint, and the metrics
show on the node's Prometheus endpoint."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
import yaml

from tests.cluster.head_cluster import PORTS, ROOT, Head

SHARED = ROOT.parent / "shared" / "datasets"


def _scrape(names: list[str]) -> set[str]:
    text = requests.get(f"http://127.0.0.1:{PORTS['metrics']}/metrics", timeout=5).text
    return {n for n in names if f"\n{n}{{" in text or f"\n{n} " in text}


def test_unauthenticated_calls_are_refused(head: Head) -> None:
    assert requests.get(f"{head.address}/api/jobs/", timeout=5).status_code == 401
    assert requests.get(f"{head.address}/api/jobs/", timeout=5, headers=head.headers).ok


@pytest.fixture(scope="module")
def job(head: Head, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Submit the main job on a 1,500-row slice through the Jobs API and wait until it ends."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from ddn_ray import cli

    client = JobSubmissionClient(head.address, headers=head.headers)
    # Right after `ray start` the Jobs API answers "No available agent to submit job" for a while.
    deadline = time.monotonic() + 120
    while True:
        try:
            probe = client.submit_job(entrypoint="python -c \"print('ready')\"")
            break
        except RuntimeError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Jobs API never accepted a submission: {exc}") from exc
            time.sleep(2.0)
    out = tmp_path_factory.mktemp("submitted")
    overrides = [
        "data.max_rows=1500",
        "stream.window_size=100",
        "report.static_windows=5",
        "run_name=jobs-api",
        f"report.output_dir={out / 'runs'}",
        f"storage_path={out / 'storage'}",
        f"serve.port={PORTS['serve']}",
        "train.checkpoint_every_windows=5",
        "drift.detector=none",
    ]
    job_id, status = cli.submit(
        head.address,
        "jobs/configs/elec2.yaml",
        overrides,
        env={"DDN_RAY_DATA_DIR": str(SHARED)},
        working_dir=str(ROOT),
        wait=False,
        headers=head.headers,
    )
    seen: set[str] = set()
    names = [
        "ray_ddn_ray_windows_trained_total",
        "ray_ddn_ray_prequential_accuracy",
        "ray_ddn_ray_model_version",
        "ray_ddn_ray_freshness_seconds_count",
        "ray_ddn_ray_served_model_version",
        "ray_ddn_ray_requests_total",
    ]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            break
        seen |= _scrape(names)  # while the job's controller and replicas live
        time.sleep(1.0)
    return {
        "id": job_id,
        "status": status,
        "logs": client.get_job_logs(job_id),
        "out": out,
        "metrics": seen,
        "probe": client.get_job_status(probe),
    }


def test_jobs_api_runs_the_main_job(job: dict[str, Any]) -> None:
    from ray.job_submission import JobStatus

    assert job["probe"] == JobStatus.SUCCEEDED
    assert job["status"] == JobStatus.SUCCEEDED, job["logs"][-3000:]
    assert "dynamic (served)" in job["logs"]  # the report table, printed by the job
    report = json.loads((job["out"] / "runs" / "jobs-api" / "report.json").read_text())
    assert report["run"]["rows_served"] == 1500 and report["http"]["failed"] == 0
    assert report["scores"]["dynamic (served)"]["accuracy"] > 0.55


def test_metrics_reach_the_heads_prometheus_endpoint(job: dict[str, Any]) -> None:
    assert job["metrics"] == {
        "ray_ddn_ray_windows_trained_total",
        "ray_ddn_ray_prequential_accuracy",
        "ray_ddn_ray_model_version",
        "ray_ddn_ray_freshness_seconds_count",
        "ray_ddn_ray_served_model_version",
        "ray_ddn_ray_requests_total",
    }


def test_serve_learn_runs_until_sigterm_then_serve_deploy_resumes_and_ddn_ray_stop_ends_it(
    head: Head, tmp_path: Path
) -> None:
    """`ddn-ray serve-learn` joined to this head: a client's rows and labels, SIGTERM (drain, checkpoint, exit 0);
    then `serve deploy` of clusters/service_config.yaml resumes the same run with no driver, and `ddn-ray stop`
    from another process ends it (exit 0). Before the checkpoint's `serve deploy` below, whose config replaces
    every app."""
    bin_dir = Path(sys.executable).parent
    sets = [
        f"storage_path={tmp_path / 'storage'}",
        f"report.output_dir={tmp_path / 'runs'}",
        "run_name=cli-svc",
        f"serve.port={PORTS['serve']}",
        "serve.route_prefix=/svc",
        "serve.num_replicas=1",
        "service.window_timeout_s=2",
        "drift.detector=none",
    ]
    argv = ["--config", "jobs/configs/service.yaml", *[a for s in sets for a in ("--set", s)]]
    env = {**head.env, "RAY_ADDRESS": f"127.0.0.1:{PORTS['gcs']}", "DDN_RAY_DATA_DIR": str(SHARED)}
    url = f"http://127.0.0.1:{PORTS['serve']}/svc"

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [str(bin_dir / "ddn-ray"), "serve-learn", *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def stats_when(proc: subprocess.Popen, ok, timeout_s: float = 240) -> dict[str, Any]:
        deadline, last = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            try:
                last = requests.get(url + "/stats", timeout=10).json()
                if ok(last):
                    return last
            except (requests.RequestException, ValueError):
                pass
            time.sleep(1.0)
        raise AssertionError(f"timed out; last /stats: {last}")

    first = start()
    try:
        stats_when(first, lambda s: s["trainer_ready"])
        client = subprocess.run(
            [
                sys.executable,
                "examples/service_client.py",
                "--url",
                url,
                "--table",
                str(SHARED / "elec2" / "electricity.csv"),
                "--label",
                "class",
                "--rows",
                "200",
                "--rate",
                "20",
                "--max-delay-s",
                "0.5",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert client.returncode == 0, client.stderr[-3000:]
        assert json.loads(client.stdout.strip().splitlines()[-1])["rows_answered"] == 200
        before = stats_when(first, lambda s: s["windows_learned"] >= 2)
        first.send_signal(signal.SIGTERM)
        out = first.communicate(timeout=180)[0]
        assert first.returncode == 0, out[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    final = json.loads((tmp_path / "runs" / "cli-svc" / "service_stats.json").read_text())
    assert final["joined"] >= before["joined"] and final["windows_learned"] >= 2 and final["pending_learn"] < 50
    metas = [json.loads(p.read_text()) for p in (tmp_path / "storage" / "cli-svc").glob("checkpoint_*/meta.json")]
    assert max(m["next_offset"] for m in metas) == final["joined_offset"] - final["pending_learn"]  # all learned, kept

    # With no driver: `serve deploy` of the shipped service config (this test's settings as its overrides) resumes
    # the same run (its log and versions); `ddn-ray stop` from another process stops it.
    from ddn_ray import config

    raw = yaml.safe_load((ROOT / "clusters" / "service_config.yaml").read_text())
    raw["http_options"]["port"] = PORTS["serve"]
    for app in raw["applications"]:
        app["args"]["overrides"] = config.parse_overrides(sets)
    raw["applications"][1]["route_prefix"] = "/svc"
    path = tmp_path / "service_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = subprocess.run(
        [str(bin_dir / "serve"), "deploy", str(path), "--address", head.address],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    deadline, third = time.monotonic() + 240, None
    while time.monotonic() < deadline and third is None:
        try:
            third = requests.get(url + "/stats", timeout=10).json()
        except (requests.RequestException, ValueError):
            time.sleep(2.0)
    assert third is not None and third["joined_offset"] == final["joined_offset"], third
    assert third["predicted"] == final["predicted"] and third["model_version"] > final["model_version"]
    stop = subprocess.run(
        [str(bin_dir / "ddn-ray"), "stop", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert stop.returncode == 0 and "stopped 'cli-svc'" in stop.stdout, stop.stdout[-2000:] + stop.stderr[-2000:]
    assert json.loads(stop.stdout.strip().splitlines()[-1].split(": ", 1)[1])["joined_offset"] == final["joined_offset"]


def test_serve_deploy_of_the_config_file_serves_the_jobs_checkpoint(
    head: Head, job: dict[str, Any], tmp_path: Path
) -> None:
    metas = {
        p.parent: json.loads(p.read_text())
        for p in (job["out"] / "storage" / "jobs-api").glob("checkpoint_*/meta.json")
    }
    assert metas, "the job wrote no checkpoint"
    last = max(metas, key=lambda d: metas[d]["next_offset"])
    meta = metas[last]
    # The shipped Serve config file with fewer replicas for 2 cores; `ddn-ray serve` fills in the
    # checkpoint and the port and runs `serve deploy` against this head.
    raw = yaml.safe_load((ROOT / "clusters" / "serve_config.yaml").read_text())
    raw["applications"][0]["deployments"][0]["autoscaling_config"].update(
        min_replicas=1, initial_replicas=1, max_replicas=2
    )
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    serve_bin = str(Path(sys.executable).parent / "serve")
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ddn-ray"),
            "serve",
            "--checkpoint",
            str(last),
            "--config",
            str(path),
            "--address",
            head.address,
            "--port",
            str(PORTS["serve"]),
        ],
        env=head.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "serve deploy" in done.stdout
    url = f"http://127.0.0.1:{PORTS['serve']}/predict"
    # The main job reads Elec2 as a user's table: its checkpoint serves named records of those columns.
    columns = meta["preprocessing"]["numeric"]
    record = dict.fromkeys(columns, 0.5)
    deadline, body = time.monotonic() + 120, None
    while time.monotonic() < deadline:
        try:
            r = requests.post(url, json={"records": [record] * 3}, timeout=5)
            if r.status_code == 200:
                body = r.json()
                break
        except (requests.ConnectionError, requests.Timeout):  # the proxy may hold a request while the replica starts
            pass
        time.sleep(1.0)
    assert body is not None, "the deployed app never answered"
    assert body["model_version"] == meta["model_version"] and len(body["predictions"]) == 3
    bad = requests.post(url, json={"records": [{**record, "colour": "red"}]}, timeout=5)
    assert bad.status_code == 422 and "records[0].colour" in bad.text
    status = subprocess.run(
        [serve_bin, "status", "--address", head.address],
        env=head.env,
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert "RUNNING" in status.stdout and "Predictor" in status.stdout
    deadline, seen = time.monotonic() + 30, set()
    while time.monotonic() < deadline and len(seen) < 2:
        seen = _scrape(["ray_ddn_ray_served_model_version", "ray_ddn_ray_request_errors_total"])
        time.sleep(1.0)
    assert seen == {"ray_ddn_ray_served_model_version", "ray_ddn_ray_request_errors_total"}


def test_a_use_case_job_runs_through_the_jobs_api(head: Head, job: dict[str, Any], tmp_path: Path) -> None:
    """A use-case recipe (jobs/gym_dynamics.py: two variants, one after the other) submitted like the main job,
    with a user's model builder from a module that only the uploaded working dir holds: the driver, the
    Train workers and the Serve replicas all import it from there."""
    pytest.importorskip("gymnasium")
    from ray.job_submission import JobStatus

    from ddn_ray import cli

    # The user's project: the recipes and a module of their own, under a name nothing installed has.
    work = tmp_path / "project"
    shutil.copytree(ROOT / "jobs", work / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "acme_dynamics_models.py").write_text((ROOT / "tests" / "integration" / "user_models.py").read_text())
    assert importlib.util.find_spec("acme_dynamics_models") is None
    overrides = [
        "data.options.stream_rows=1200",
        "data.options.standardize_rows=400",
        "report.static_windows=2",
        f"report.output_dir={tmp_path / 'runs'}",
        f"storage_path={tmp_path / 'storage'}",
        f"serve.port={PORTS['serve']}",
        "train.checkpoint_every_windows=3",
        "model.builder=acme_dynamics_models:residual_mlp",
        "model.options={width: 64, blocks: 2}",
    ]
    _, status = cli.submit(
        head.address,
        "jobs/configs/gym_dynamics.yaml",
        overrides,
        script="jobs/gym_dynamics.py",
        working_dir=str(work),
        wait=True,
        timeout_s=600,
        headers=head.headers,
        args=["--variants", "physics_drift/cartpole,physics_drift/pendulum"],  # worn_actuator: the integration tier
    )
    assert status == JobStatus.SUCCEEDED.value
    summary = json.loads((tmp_path / "runs" / "gym_dynamics" / "summary.json").read_text())
    assert set(summary["variants"]) == {"physics_drift/cartpole", "physics_drift/pendulum"}
    for name, v in summary["variants"].items():
        assert v["http_failed"] == 0 and v["versions"] == 6, name
        assert v["dynamic"] < v["no_change"] / 5, name  # it learned the dynamics on the cluster too
    # Every variant's checkpoints hold the user's residual network (its blocks' keys), not the built-in MLP.
    states = sorted((tmp_path / "storage").glob("*/checkpoint_*/state.pt"))
    assert len({p.parent.parent for p in states}) == 2, states
    for p in states:
        keys = set(torch.load(p, map_location="cpu", weights_only=False)["model"])
        assert {"body.2.fc.weight", "body.3.fc.weight", "head.weight"} <= keys, (p, sorted(keys))
        assert (
            json.loads((p.parent / "meta.json").read_text())["model"]["builder"] == "acme_dynamics_models:residual_mlp"
        )


def test_sigterm_to_ddn_ray_submit_stops_the_job_it_follows(head: Head, job: dict[str, Any], tmp_path: Path) -> None:
    """A followed job belongs to the command: SIGTERM (or Ctrl-C) on ``ddn-ray submit`` stops it on the cluster."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    (tmp_path / "sleeper.py").write_text("import time\nprint('sleeping', flush=True)\ntime.sleep(300)\n")
    (tmp_path / "job.yaml").write_text("{}\n")
    cmd = [str(Path(sys.executable).parent / "ddn-ray"), "submit", "--address", head.address]
    cmd += ["--script", "sleeper.py", "--config", "job.yaml", "--working-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, env={**os.environ, **head.env}, stdout=subprocess.PIPE, text=True)
    client = JobSubmissionClient(head.address, headers=head.headers)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("submitted "), first
        job_id = first.split()[1].rstrip(":")
        deadline = time.monotonic() + 60
        while client.get_job_status(job_id) != JobStatus.RUNNING and time.monotonic() < deadline:
            time.sleep(0.5)
        assert client.get_job_status(job_id) == JobStatus.RUNNING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) != 0
        deadline = time.monotonic() + 30
        while client.get_job_status(job_id) != JobStatus.STOPPED and time.monotonic() < deadline:
            time.sleep(0.5)
        assert client.get_job_status(job_id) == JobStatus.STOPPED
    finally:
        proc.kill()
