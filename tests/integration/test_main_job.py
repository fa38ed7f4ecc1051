"""The main job end to end on real Elec2 slices: stream -> Serve (HTTP) -> Train -> controller."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from ddn_ray import models
from ddn_ray.versions import VersionStore


def _check_versions_and_freshness(report: dict) -> None:
    wv = report["run"]["window_versions"]
    mins = [mn for _, mn, _ in wv]
    assert all(mn >= 0 for mn in mins), "a request failed (version -1)"
    assert mins == sorted(mins), "served model versions went backwards"
    assert mins[-1] > mins[0], "served model version never advanced"
    # With max_lag_windows=0 each request asks for the version trained through the window before: one per window.
    assert all(mn == mx for _, mn, mx in wv)
    assert report["run"]["replica_sync_timeouts"] == 0
    last = report["versions"][-1]
    assert set(report["run"]["replica_versions_at_end"].values()) == {last["version"]}
    assert len(report["run"]["replica_versions_at_end"]) == report["run"]["num_replicas"]
    assert last["all_served_s"] is not None and last["all_served_s"] < 1.0
    # No leakage: every row was answered by a model trained only on earlier windows.
    assert report["run"]["label_delay_rows"]["max"] < 2 * report["run"]["window_size"]
    assert report["http"]["failed"] == 0 and report["http"]["requests"] > 0


def test_main_job_on_8000_rows_beats_static(ray_cluster, continuous, job_config) -> None:
    cfg = job_config(data={"max_rows": 8000}, run_name="slice8k")
    report = continuous.main(cfg)
    assert report["run"]["rows_served"] == 8000 and report["run"]["windows"] == 80
    assert report["run"]["versions_published"] == 80  # one per window, K=1
    _check_versions_and_freshness(report)
    # prequential to the version: window w answered by version w, the one that learned windows 0..w-1; its
    # requests went before window w-1 was learned, and waited in their replicas (?min_window, Server-Timing)
    assert [(w, mn, mx) for w, mn, mx in report["run"]["window_versions"]] == [(w, w, w) for w in range(80)]
    assert report["http"]["held_s"]["p50"] > 0
    # serve.direct_ingress: every request went to a replica's own HTTP server, none through Serve's proxy
    assert report["http"]["by_ingress"] == {"direct": report["http"]["requests"], "proxy": 0}
    scores = report["scores"]
    assert scores["dynamic (served)"]["accuracy"] > scores["static (frozen after training)"]["accuracy"] + 0.05
    assert scores["dynamic (served)"]["accuracy"] > scores["no-change (same label delay)"]["accuracy"]
    files = report["files"]
    assert json.loads(Path(files["report"]).read_text())["run"]["rows_served"] == 8000
    assert Path(files["plot"]).read_bytes()[:4] == b"\x89PNG"
    ckpts = list(Path(cfg.storage_path, "slice8k").glob("checkpoint_*/meta.json"))
    # 80 windows checkpointed every 10: Train keeps the newest train.checkpoints_to_keep (3), the last included
    offsets = sorted(json.loads(p.read_text())["next_offset"] for p in ckpts)
    assert len(offsets) == cfg.train.checkpoints_to_keep == 3 and offsets[-1] == 8000, offsets
    # `ddn-ray report` recomputes the same scores from the run directory alone.
    from ddn_ray import cli

    again = cli.main(["report", str(Path(files["report"]).parent)])
    assert again["scores"].keys() == scores.keys()
    for name, values in scores.items():
        assert again["scores"][name] == pytest.approx(values), name
    # A checkpoint describes its model, so the Serve app can serve it without the job's config.
    from ddn_ray import checkpoint as checkpoint_io

    last = max(ckpts, key=lambda p: json.loads(p.read_text())["next_offset"]).parent
    version, weights, meta = checkpoint_io.read(str(last))
    assert (
        meta["num_features"] == 6
        and meta["num_classes"] == 2
        and tuple(meta["model"]["hidden_sizes"]) == cfg.model.hidden_sizes
    )
    assert version == report["versions"][-1]["version"] and set(weights) == set(
        models.state_to_numpy(models.build(cfg.model, 6, 2))
    )


def test_a_killed_driver_resumes_and_its_report_covers_every_row_once(
    ray_cluster, continuous, job_config, tmp_path
) -> None:
    """SIGKILL of the driver (``python jobs/continuous.py`` joined to this cluster) mid-run, then the same run
    again: it restarts at the checkpointed offset, and its report joins the answers the first attempt logged
    before that offset with its own after it, every row once, scored against the first attempt's static model."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import pyarrow.parquet as pq
    import yaml

    cfg = job_config(data={"max_rows": 4000}, run_name="driver-kill", train={"checkpoint_every_windows": 10})
    run_dir = Path(cfg.storage_path, cfg.run_name)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address, "RAY_AUTH_MODE": "disabled"}
    log = open(tmp_path / "driver.log", "w")  # noqa: SIM115 (open while the driver runs)
    driver = subprocess.Popen(
        [sys.executable, str(root / "jobs" / "continuous.py"), "--config", str(tmp_path / "job.yaml")],
        env=env,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        served = lambda: list(run_dir.glob("served/*/w*.parquet"))
        while len(served()) < 25 and time.monotonic() < deadline:
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            time.sleep(0.1)
        assert len(served()) >= 25, "the first attempt did not serve 25 windows in time"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
    finally:
        driver.kill()
        log.close()
    (first,) = {p.parent for p in served()}  # the first attempt's answers, written as it went
    assert len(served()) < 40, "the driver was killed after the end of its stream"
    # the killed run still has its report: every row it served, from those files (ddn-ray report <run dir>)
    from ddn_ray.cli import served_report

    killed = served_report(run_dir, write=False)
    assert killed["rows_served"] == 100 * len(served()) and killed["offsets"] == [0, killed["rows_served"]]
    assert killed["static_windows"] == 5 and killed["scores"]["dynamic (served)"]["accuracy"] > 0.5

    b = continuous.main(cfg)
    run = b["run"]
    a_rows, b_rows = run["attempts"]
    resumed_at = b_rows["first_offset"]
    assert resumed_at in (1000, 2000) and a_rows == {
        "attempt": first.name,
        "rows": resumed_at,
        "first_offset": 0,
        "end_offset": resumed_at,
    }
    assert run["window_versions"][0][0] == resumed_at // 100 and b_rows["rows"] == 4000 - resumed_at
    rows = np.load(b["files"]["predictions"])
    assert run["rows_served"] == 4000 and (rows["offset"] == np.arange(4000)).all()  # every row once
    logged = pq.read_table([str(p) for p in first.glob("w*.parquet")]).to_pandas().sort_values("offset")
    before, again = logged[logged["offset"] < resumed_at], logged[logged["offset"] >= resumed_at]
    # the first attempt's answers before the checkpoint, as it logged them before the kill
    assert (rows["prediction"][:resumed_at] == before["prediction"].to_numpy()).all()
    # one static baseline for the run: frozen by the first attempt after 5 windows, loaded by the second, which
    # answers the rows both attempts served exactly as the first did
    assert json.loads((run_dir / "static" / "meta.json").read_text())["window"] == 5
    assert b["eval_rows"]["static_windows"] == 5 and (rows["static_prediction"][500:] >= 0).all()
    offsets = again["offset"].to_numpy()
    assert len(offsets) and (rows["static_prediction"][offsets] == again["static_prediction"].to_numpy()).all()
    _check_versions_and_freshness(b)


# finetune is every other two-worker job's training step; replay alone is the same Replay as inside the pair
# (its memory is checked below); lwf under DDP runs in test_dynamic_networks.py's two-worker job (one job run
# for both); tests/unit/test_strategy.py covers each strategy on its own.
@pytest.mark.parametrize("name", ["online_ewc+replay"])
def test_two_ddp_workers_with_each_strategy(ray_cluster, continuous, job_config, name) -> None:
    import torch

    cfg = job_config(
        data={"max_rows": 2000},
        train={"num_workers": 2, "cpus_per_worker": 0.5, "checkpoint_every_windows": 10},
        strategy={"name": name, "memory_size": 200},
        run_name=f"ddp-{name}",
    )
    report = continuous.main(cfg)
    assert report["run"]["num_workers"] == 2
    assert report["run"]["rows_trained"] == 2000  # 100-row windows split 50 / 50
    assert report["config"]["strategy"]["name"] == name
    _check_versions_and_freshness(report)
    scores = report["scores"]
    assert scores["dynamic (served)"]["accuracy"] > scores["no-change (same label delay)"]["accuracy"]
    assert report["trainer_pre_update_accuracy"] > 0.6
    # The last checkpoint holds both ranks' strategy state.
    last = max(Path(cfg.storage_path, cfg.run_name).glob("checkpoint_*/state.pt"), key=lambda p: p.parent.name)
    states = [st["strategy"] for st in torch.load(last, weights_only=False)["learner"]]
    assert len(states) == 2
    for st in states:
        parts = dict(zip(name.split("+"), st["strategies"])) if "+" in name else {name: st}
        if "replay" in parts:
            assert parts["replay"]["x"].shape == (200, 6) and parts["replay"]["seen"] == {-1: 1000}  # 20 x 50 rows
        if "online_ewc" in parts:
            anchors = parts["online_ewc"]["anchors"]
            assert len(anchors) == 1 and all(torch.isfinite(f).all() for f in anchors[0][0].values())
        if "lwf" in parts:
            assert parts["lwf"]["teacher"] is not None
    if "online_ewc" in name:  # DDP-averaged Fisher: identical on both ranks
        f0, f1 = (st["strategies"][0]["anchors"][0][0] for st in states)
        for k, f in f0.items():
            assert torch.allclose(f, f1[k])


def test_two_workers_with_ewc_replay_and_a_drift_policy_log_decisions(ray_cluster, continuous, job_config) -> None:
    """EWC + Replay under DDP with ADWIN and the 'all' policy: signals, decisions and state end up in the report."""
    import torch

    cfg = job_config(
        data={"max_rows": 4000},
        train={"num_workers": 2, "cpus_per_worker": 0.5, "checkpoint_every_windows": 10},
        strategy={"name": "ewc+replay", "memory_size": 200},
        drift={"detector": "adwin", "params": {"delta": 0.05}, "reference_windows": 3},
        policy={"name": "all", "cooldown_windows": 5, "retrain_epochs": 2},
        run_name="ddp-drift",
    )
    report = continuous.main(cfg)
    _check_versions_and_freshness(report)
    d = report["drift"]
    assert (d["detector"], d["policy"]) == ("adwin", "all")
    assert d["events"], "ADWIN (delta 0.05) found no drift in 4,000 Elec2 rows"
    for e in d["events"]:
        assert e["detector"] == "ADWIN" and e["decision"] in ("all", "no-op") and e["reason"]
        assert 0 <= e["window"] < 40 and e["window"] * 100 <= e["offset"] < (e["window"] + 1) * 100
        assert set(e["ks_statistic"]) == {"period", "nswprice", "nswdemand", "vicprice", "vicdemand", "transfer"}
        assert set(e["features_moved"]) <= set(e["ks_statistic"]) and e["mmd_p_value"] is not None
    assert all("recovery_windows" in e for e in d["events"]) and set(d["recovery_windows"]) == {"p50", "p90", "max"}
    acted = [e["window"] for e in d["events"] if e["decision"] == "all"]
    assert acted and d["decisions"]["all"] == len(acted)
    assert all(b - a >= 5 for a, b in itertools.pairwise(acted))  # the cooldown holds
    # the version published after a retraining says so
    stamped = {v["meta"].get("window") for v in report["versions"] if v["meta"].get("decision") == "all"}
    assert stamped <= set(acted)
    assert Path(report["files"]["plot"]).stat().st_size > 0
    # both ranks' learner state (detector included) is in the last checkpoint, and the detectors agree
    last = max(Path(cfg.storage_path, cfg.run_name).glob("checkpoint_*/state.pt"), key=lambda p: p.parent.name)
    states = torch.load(last, weights_only=False)["learner"]
    assert len(states) == 2 and states[0]["monitor"]["detector"] == states[1]["monitor"]["detector"]
    assert states[0]["policy"] == states[1]["policy"]


def test_served_predictions_match_the_in_process_replay_row_for_row(ray_cluster, continuous, job_config) -> None:
    """The served model at window w is exactly the model trained on windows 0..w-1.

    The job asks for a GPU (``train.use_gpu``): the session cluster's GPUs are logical, so its Train worker is
    given one, finds no CUDA in this torch and learns on the CPU, with the same answers."""
    import numpy as np

    from ddn_ray.train import replay_in_process
    from ddn_ray.usecases import datasets

    cfg = job_config(
        "elec2_builtin.yaml",
        data={"max_rows": 2000},
        stream={"last_label_feature": True},  # 7 inputs
        train={"use_gpu": True},
    )
    report = continuous.main(cfg)
    assert report["run"]["trainer_device"]["device"] == "cpu"
    assert len(report["run"]["trainer_device"]["gpu_ids"]) == 1  # Ray assigned it a GPU
    served = np.load(report["files"]["predictions"])
    expected = replay_in_process(cfg, datasets.load_elec2(cfg.data.path, cfg.data.max_rows)).predictions
    assert np.array_equal(served["offset"], np.arange(2000))
    agree = float(np.mean(served["prediction"] == expected))
    assert agree >= 0.99, f"served and in-process predictions agree on only {agree:.2%} of rows"


def test_landing_dir_producer_runs_the_same_job(ray_cluster, job_config, monkeypatch) -> None:
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("landing_example", root / "examples" / "landing_dir.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    cfg = job_config()
    report = example.main(
        [
            "--rows",
            "2000",
            "--rows-per-file",
            "300",
            "--interval-s",
            "0.1",
            "--set",
            f"serve.port={cfg.serve.port}",
            "--set",
            f"storage_path={cfg.storage_path}",
            "--set",
            f"report.output_dir={cfg.report.output_dir}",
            "--set",
            "stream.window_size=100",
            "--set",
            "report.static_windows=5",
        ]
    )
    assert report["run"]["rows_served"] == 2000 and report["run"]["windows"] == 20
    assert report["config"]["data"]["source"]["kind"] == "landing_dir" and report["data"]["files_read"] == 7
    assert report["run"]["traffic_route"] == "/predict" and report["data"]["numeric"][:2] == ["period", "nswprice"]
    _check_versions_and_freshness(report)


def test_a_killed_train_worker_costs_a_restart_from_the_checkpoint_not_the_run(
    ray_cluster, continuous, job_config
) -> None:
    """SIGKILL of the Train worker mid-run: Train's FailureConfig restarts the worker group from its latest
    checkpoint, the driver sends every window since then again, and the run ends with its full report."""
    import os
    import signal
    import threading
    import time

    cfg = job_config(data={"max_rows": 4000}, train={"checkpoint_every_windows": 5}, run_name="worker-kill")
    killed: dict = {}
    storage = Path(cfg.storage_path, cfg.run_name)

    def kill_the_worker() -> None:
        """Once a checkpoint is written and Train has had time to register it (at its next poll,
        train.health_check_interval_s: 0.2 s; 1 s is five), kill the worker mid-stream, once it has learned a
        window past its latest checkpoint (not the one a checkpoint follows: then nothing is learned twice)."""
        deadline, written = time.monotonic() + 300, None
        while time.monotonic() < deadline and not killed:
            if written is None and any(storage.glob("checkpoint_*/meta.json")):
                written = time.monotonic()
            if written is not None and time.monotonic() - written > 1.0:
                controller = ray_cluster.get_actor(cfg.controller.name, namespace=cfg.ray.namespace)
                done = ray_cluster.get(controller.summary.remote())["progress"][-1]["index"]
                if (done + 1) % cfg.train.checkpoint_every_windows == 0:
                    time.sleep(0.01)
                    continue
                trainer = ray_cluster.get(controller.wait_trainer_ready.remote(1.0))
                os.kill(trainer["pid"], signal.SIGKILL)
                killed.update(pid=trainer["pid"], after_window=done)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_worker, daemon=True)
    killer.start()
    report = continuous.main(cfg)
    killer.join(timeout=5)
    assert killed, "the worker was never killed"
    run = report["run"]
    assert run["rows_served"] == 4000 and run["windows"] == 40 and report["http"]["failed"] == 0
    (restart,) = run["trainer_restarts"]
    # the group resumed at a registered checkpoint (every 5 windows) before the kill, not from scratch
    assert restart["generation"] == 1 and restart["next_window"] % 5 == 0
    assert 5 <= restart["next_window"] <= killed["after_window"] + 1, (restart, killed)
    assert restart["resent"][0] == restart["next_window"] and restart["resent"] == sorted(restart["resent"])
    assert restart["trained_again"] and restart["trained_again"][0] == restart["next_window"], (restart, killed)
    assert restart["trained_again"][-1] <= killed["after_window"] + 1
    ckpts = Path(cfg.storage_path, cfg.run_name).glob("checkpoint_*/meta.json")
    assert max(json.loads(p.read_text())["next_offset"] for p in ckpts) == 4000  # every window learned
    assert report["versions"][-1]["meta"]["window"] == 39
    _check_versions_and_freshness(report)


def test_a_killed_controller_restores_its_versions_and_the_run_goes_on(ray_cluster, continuous, job_config) -> None:
    """SIGKILL of the controller actor mid-run: Ray restarts it, it restores every version and record from its
    journal, replicas keep serving meanwhile and re-attach, calls in flight run again, and the run ends whole."""
    import os
    import signal
    import threading
    import time

    cfg = job_config(data={"max_rows": 3000}, train={"checkpoint_every_windows": 10}, run_name="controller-kill")
    killed: dict = {}

    def kill_the_controller() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            try:
                controller = ray_cluster.get_actor(cfg.controller.name, namespace=cfg.ray.namespace)
                if ray_cluster.get(controller.wait_progress.remote(12, 1.0)) >= 12:
                    versions = ray_cluster.get(controller.latest_version.remote())
                    pid = ray_cluster.get(controller.pid.remote())
                    os.kill(pid, signal.SIGKILL)
                    killed.update(pid=pid, at_s=time.monotonic(), latest_version=versions)
            except ValueError:  # not created yet
                time.sleep(0.2)

    killer = threading.Thread(target=kill_the_controller, daemon=True)
    killer.start()
    report = continuous.main(cfg)
    killer.join(timeout=5)
    assert killed, "the controller was never killed"
    run = report["run"]
    # nothing lost: every row served (no request failed), every window learned once
    assert run["rows_served"] == 3000 and run["windows"] == 30 and report["http"]["failed"] == 0
    (restart,) = run["controller_restarts"]
    assert restart["versions"] >= killed["latest_version"] + 1  # every version published before the kill
    assert 0 < restart["restored_s"] - killed["at_s"] < 30
    # both replicas kept serving and re-attached to the restored controller within 5 s
    assert len(restart["reattached_s"]) == run["num_replicas"] and max(restart["reattached_s"].values()) < 5.0
    # the durable journal (one attempt): no version lost or given twice, every window's update published once
    (store,) = Path(cfg.storage_path, cfg.run_name, "controller").iterdir()
    published = [e for e in VersionStore(uri=str(store)).events() if e["op"] == "publish"]
    assert (
        [e["version"] for e in published] == list(range(len(published))) == list(range(run["versions_published"] + 1))
    )
    windows = [e["meta"]["window"] for e in published[1:]]
    assert windows == sorted(set(windows)) and windows[-1] == 29
    assert len(windows) + run["versions_rejected"] == 30, "a window's update was neither published nor rejected"
    ckpts = Path(cfg.storage_path, cfg.run_name).glob("checkpoint_*/meta.json")
    assert max(json.loads(p.read_text())["next_offset"] for p in ckpts) == 3000
    _check_versions_and_freshness(report)
