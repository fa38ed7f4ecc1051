"""Use-case building blocks without Ray: scenarios, the CNN, text features, PNG inputs, job variants."""

from __future__ import annotations

import base64
import io
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddn_ray import config, models
from ddn_ray.errors import ConfigError, DataError
from ddn_ray.stream import Table
from ddn_ray.usecases import datasets, images, scenarios, text

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "datasets"


def test_rotation_is_gradual_then_abrupt_and_keeps_8_bit_pixels() -> None:
    a = scenarios.rotation_angles(1000)
    assert (
        (a[:200] == 0).all() and a[350] == pytest.approx(30.0) and (a[500:750] == 60).all() and (a[750:] == 180).all()
    )
    assert (np.diff(a[:750]) >= 0).all() and np.diff(a[:750]).max() < 1  # gradual: no jump before 75 %
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, size=(3, 784)) / 255).astype(np.float32)
    r = scenarios.rotate(x, np.array([0.0, 180.0, 45.0]))
    assert np.array_equal(r[0], x[0])
    assert np.allclose(r[1].reshape(28, 28), x[1].reshape(28, 28)[::-1, ::-1], atol=1 / 255)
    assert not np.allclose(r[2], x[2])
    assert np.allclose(r * 255, np.rint(r * 255), atol=1e-4) and r.min() >= 0 and r.max() <= 1


def test_new_classes_appear_phase_by_phase_without_reusing_rows() -> None:
    labels = np.repeat(np.arange(10), 200)  # classes 0-1 are drawn in every phase: ~114 rows each
    idx, phase = scenarios.new_class_order(labels, 10, 5, 500, np.random.default_rng(0))
    assert len(idx) == 500 and len(set(idx.tolist())) == 500
    for k in range(5):
        seen = set(labels[idx[phase == k]].tolist())
        assert max(seen) < 2 * (k + 1) and 2 * k in seen  # the phase's new classes are there, none from later
    with pytest.raises(ValueError, match="ran out of rows"):
        scenarios.new_class_order(labels, 10, 5, 2000, np.random.default_rng(0))


@pytest.mark.parametrize("scenario", ["topic_incremental", "topic_shift"])
def test_topic_scenarios_use_every_article_once(scenario: str) -> None:
    labels = np.repeat(np.arange(5), [60, 50, 40, 55, 45])
    idx, phase = scenarios.topic_order(labels, 5, 5, scenario, np.random.default_rng(1))
    assert sorted(idx.tolist()) == list(range(len(labels))) and (np.diff(phase) >= 0).all()
    counts = np.array([np.bincount(labels[idx[phase == k]], minlength=5) for k in range(5)])
    if scenario == "topic_incremental":
        joined = [int(np.flatnonzero(counts[:, t])[0]) for t in range(5)]
        assert sorted(joined) == list(range(5))  # one topic joins per phase, and stays
        assert all((counts[j:, t] > 0).all() for t, j in enumerate(joined))
    else:
        assert (counts > 0).sum() >= 20  # every topic in (nearly) every phase
        assert len({int(c.argmax()) for c in counts[:4]}) == 4  # the dominant topic changes


def test_scenarios_must_fit_their_data_set() -> None:
    with pytest.raises(ConfigError, match="does not apply to fashion_mnist"):
        config.load(overrides={"data": {"name": "fashion_mnist", "scenario": "topic_shift"}})
    config.load(overrides={"data": {"name": "bbc_news", "scenario": "topic_shift"}})


def test_cnn_takes_flat_rows_and_has_body_and_head() -> None:
    cfg = config.ModelConfig(kind="cnn", channels=(4, 8), hidden_sizes=(16,))
    m = models.build(cfg, 784, 10, seed=0)
    x = torch.rand(5, 784)
    assert m(x).shape == (5, 10) and m.body(x).shape == (5, 16) and m.head.out_features == 10
    same = models.build(cfg, 784, 10, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), same.state_dict().values()))
    served = models.build_for_inference(cfg, 784, 10, models.state_to_numpy(m))
    assert torch.allclose(served(x), m.eval()(x))
    with pytest.raises(ValueError, match="holds 784 values; rows have 100"):
        models.build(cfg, 100, 10)


def test_hashed_text_rows_are_stateless_and_normalised() -> None:
    spec = text.spec_for("hashing", 256)
    docs = ["Shares rose as the bank cut rates", "The striker scored twice", "shares ROSE as the bank cut rates!"]
    x = text.featurize(docs, spec)
    assert x.shape == (3, 256) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0) and np.array_equal(x[0], x[2])  # case and punctuation
    assert np.array_equal(text.featurize(docs[1:2], spec)[0], x[1])  # a replica featurizes one text the same
    assert len(text.feature_names(spec)) == 256
    with pytest.raises(ValueError, match="'hashing' or 'minilm'"):
        text.spec_for("tfidf", 10)


def _png(pixels: np.ndarray, fmt: str = "PNG") -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def test_png_rows_round_trip_and_bad_images_are_named() -> None:
    rows = (np.random.default_rng(0).integers(0, 256, size=(4, 784)) / 255).astype(np.float32)
    assert np.array_equal(images.decode_png(images.encode_png(rows, (1, 28, 28)), (1, 28, 28)), rows)
    rgb = np.zeros((28, 28, 3), np.uint8)
    assert images.decode_png([_png(rgb)], (1, 28, 28)).shape == (1, 784)  # colour is converted to grey
    good = images.encode_png(rows[:1], (1, 28, 28))[0]
    cases = [
        (["%%%"], "png[0] is not valid base64"),
        ([good, base64.b64encode(b"not an image").decode()], "png[1] is not a readable PNG file"),
        ([_png(np.zeros((10, 28), np.uint8))], "png[0] is 28x10 pixels; expected 28x28"),
        ([_png(np.zeros((28, 28), np.uint8), "JPEG")], "png[0] is a JPEG image"),
    ]
    for items, message in cases:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            images.decode_png(items, (1, 28, 28))


@pytest.mark.skipif(not (SHARED / "bbc" / "bbc-text.csv").is_file(), reason="needs ../shared/datasets")
def test_bbc_news_loads_five_topics_and_has_no_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = datasets.load_bbc_news(SHARED)
    assert len(c) == 1249 and c.class_names == ("business", "entertainment", "politics", "sport", "tech")
    assert np.bincount(c.labels).tolist() == [298, 225, 221, 288, 217]
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(datasets.CACHE_DIR_ENV, str(tmp_path / "cache"))
    with pytest.raises(DataError, match="no public download"):
        datasets.load_bbc_news()
    bad = tmp_path / "bbc" / "bbc-text.csv"
    bad.parent.mkdir()
    bad.write_text("category,text\nsport,\n")
    with pytest.raises(DataError, match="1 empty texts"):
        datasets.load_bbc_news(tmp_path)


@pytest.mark.skipif(not (SHARED / "bbc" / "bbc-text.csv").is_file(), reason="needs ../shared/datasets")
def test_bbc_scenario_keeps_raw_texts_aligned_with_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(SHARED))
    s = scenarios.load(
        config.DataConfig(name="bbc_news", scenario="topic_shift", options={"hash_features": 512}, max_rows=100)
    )
    assert s.table.features.shape == (100, 512) and len(s.texts) == 100 and s.inputs["kind"] == "text"
    assert np.array_equal(text.featurize(s.texts[:5], s.inputs), s.table.features[:5])
    corpus = datasets.load_bbc_news(SHARED)
    by_text = dict(zip(corpus.texts, corpus.labels.tolist()))
    assert [by_text[t] for t in s.texts] == s.table.labels.tolist()


@pytest.mark.parametrize("job", ["fashion_mnist", "bbc_news", "gym_dynamics", "nab"])
def test_every_variant_of_a_use_case_job_is_a_valid_config(job: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "jobs"))
    module = __import__(job)
    path = ROOT / "jobs" / "configs" / f"{job}.yaml"
    for name, sets in module.VARIANTS.items():  # each is a valid config, named after its scenario or series
        cfg = config.load(path, config.parse_overrides(sets))
        assert name.split("/")[0] in (
            cfg.data.scenario,
            Path(cfg.data.options.get("series", "")).stem.removesuffix("_system_failure"),
        )
    with pytest.raises(SystemExit):
        module.cli(["--variants", "no_such_variant"])
    sys.modules.pop(job, None)
    assert os.path.isfile(path)


def test_physics_schedule_drives_cartpole_and_keeps_derived_constants() -> None:
    pytest.importorskip("gymnasium")
    from ddn_ray.usecases import control

    s = control.Schedule(((100, {"length": 0.5, "masspole": 0.1}), (200, {"length": 1.0, "masspole": 0.3})))
    assert s.at(50) == {} and s.at(150) == pytest.approx({"length": 0.75, "masspole": 0.2})
    r = control.rollout("CartPole-v1", 300, s, seed=0)
    assert r.inputs.shape == (300, 5) and r.targets.shape == (300, 4) and r.physics.shape == (300, 5)
    assert r.physics[0, 3] == pytest.approx(0.5) and r.physics[299, 3] == pytest.approx(1.0)
    assert set(np.unique(r.inputs[:, 4])) <= {-1.0, 1.0}
    again = control.rollout("CartPole-v1", 300, s, seed=0)
    assert np.array_equal(r.targets, again.targets)  # reproducible from the seed
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    control.set_physics(env, {"masspole": 0.3, "length": 1.0})
    assert env.unwrapped.total_mass == pytest.approx(1.3) and env.unwrapped.polemass_length == pytest.approx(0.3)
    with pytest.raises(ValueError, match="not physics constants"):
        control.set_physics(env, {"g": 3.0})
    w = control.worn_actuator(10, 20)
    assert w.at(15) == {"force_mag": 7.5}
    # The physics act on the transitions: a heavier, longer pole swings differently under the same pushes.
    p = control.rollout("Pendulum-v1", 50, control.Schedule(((0, {"g": 15.0}),)), seed=1)
    q = control.rollout("Pendulum-v1", 50, seed=1)
    assert np.array_equal(p.inputs[0], q.inputs[0]) and not np.allclose(p.targets[0], q.targets[0])


def test_regression_step_learns_with_mse_and_feeds_squared_errors_to_the_detector() -> None:
    from ddn_ray import learner, strategy

    torch.manual_seed(0)
    w = torch.randn(3, 2)
    cfg = config.ModelConfig(task="regression", hidden_sizes=(16,))
    model = models.build(cfg, 3, 2, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    memory = strategy.Replay(memory_size=50)
    losses = []
    for _ in range(15):
        x = torch.randn(64, 3)
        res = learner.prequential_step(model, opt, x, x @ w, 16, 3, g, memory, task="regression")
        losses.append(res.pre_loss)
        assert res.wrong.shape == (64,) and res.wrong.dtype == torch.float32 and (res.wrong >= 0).all()
        assert np.isnan(res.pre_accuracy)
    assert losses[-1] < 0.2 * losses[0]  # it learned the linear map
    assert memory.y.shape == (50, 2) and memory.y.dtype == torch.float32  # replay keeps targets
    with pytest.raises(ValueError, match="task must be one of"):
        learner.loss_fn("ranking", torch.zeros(1, 1), torch.zeros(1, 1))


def test_regression_rows_are_validated_and_stored_as_float_lists() -> None:
    from ddn_ray import stream

    y = np.array([[0.1, 0.2], [np.nan, 0.0], [1.0, 2.0]], np.float32)
    t = Table(np.zeros((3, 2), np.float32), y, ("a", "b"), 2, "regression")
    src = stream.ReplaySource(t, 3)
    (w,) = list(src)
    assert w.labels.shape == (2, 2) and src.quarantine.reasons == ["non-finite target"]
    tab = stream.to_arrow(w.features, w.labels)
    assert tab.column("label").type.list_size == 2 and tab.column("label").to_pylist()[1] == [1.0, 2.0]


def test_regression_configs_are_checked() -> None:
    pytest.importorskip("gymnasium")
    ok = {"data": {"name": "cartpole", "scenario": "worn_actuator"}, "model": {"task": "regression"}}
    config.load(overrides=ok)
    with pytest.raises(ConfigError, match=re.escape("needs model.task regression")):
        config.load(overrides={"data": {"name": "pendulum"}})
    with pytest.raises(ConfigError, match="finetune or replay"):
        config.load(overrides={**ok, "strategy": {"name": "ewc"}})
    with pytest.raises(ConfigError, match="ddm needs 0/1 errors"):
        config.load(overrides={**ok, "drift": {"detector": "ddm"}})
    with pytest.raises(ConfigError, match="does not apply to pendulum"):
        config.load(overrides={**ok, "data": {"name": "pendulum", "scenario": "worn_actuator"}})


def test_control_scenario_is_standardised_on_its_first_rows() -> None:
    pytest.importorskip("gymnasium")
    s = scenarios.load(
        config.DataConfig(
            name="pendulum", scenario="physics_drift", options={"stream_rows": 900, "standardize_rows": 300}
        )
    )
    t = s.table
    assert t.task == "regression" and t.features.shape == (900, 4) and t.labels.shape == (900, 3)
    assert np.allclose(t.features[:300].mean(0), 0, atol=1e-4) and np.allclose(t.features[:300].std(0), 1, atol=1e-3)
    assert np.bincount(s.phase).tolist() == [300, 301, 299] and s.inputs["kind"] == "dynamics"
    raw_first = np.array(s.inputs["x_mean"]) + t.features[0] * np.array(s.inputs["x_std"])
    assert np.isclose(raw_first[0] ** 2 + raw_first[1] ** 2, 1.0, atol=1e-4)  # cos^2 + sin^2: units restored


def test_dynamics_request_needs_finite_rows() -> None:
    from pydantic import ValidationError

    from ddn_ray.usecases.routes import DynamicsRequest

    DynamicsRequest.model_validate({"states": [[0.0, 1.0]], "actions": [[1.0]]})
    for body, field in (
        ({"states": [], "actions": [[1.0]]}, "states"),
        ({"states": [[float("nan")]], "actions": [[1.0]]}, "states.0.0"),
        ({"states": [[0.0]]}, "actions"),
    ):
        with pytest.raises(ValidationError) as err:
            DynamicsRequest.model_validate(body)
        assert field in {".".join(map(str, e["loc"])) for e in err.value.errors()}


@pytest.mark.skipif(not (SHARED / "nab" / "labels").is_dir(), reason="needs ../shared/datasets")
def test_nab_rows_are_lagged_scaled_values_and_the_route_body_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from ddn_ray.usecases.routes import SeriesRequest

    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(SHARED))
    s = scenarios.load(
        config.DataConfig(
            name="nab",
            max_rows=500,
            options={"series": "realKnownCause/ambient_temperature_system_failure.csv", "lags": 8, "seasonal_width": 2},
        )
    )
    t = s.table
    assert t.task == "regression" and t.features.shape == (500, 8 + 4) and t.labels.shape == (500, 1)
    lags = t.features[:, :8]
    assert np.array_equal(lags[1, :-1], lags[0, 1:])
    assert np.isclose(lags[1, -1] - lags[0, -1], t.labels[0, 0])  # the target is the change
    assert lags.min() >= 0.0 and lags.max() <= 1.0 and s.inputs["kind"] == "series"
    # Hourly temperatures: a daily-or-longer period is found on the probation's values, and the
    # seasonal inputs are the values one period before each point, relative to its last value.
    period = s.inputs["period"]
    assert period >= 24 and s.inputs["probation"] == 750
    r = period + 10  # a row whose seasonal inputs lie inside the series
    x = np.r_[lags[0], lags[1:, -1]]  # the scaled series from its first point
    point = 8 + r
    assert np.allclose(t.features[r, 8:], x[point - period - 1 : point - period + 3] - x[point - 1], atol=1e-6)
    assert (t.features[: period - 10, 8:] == 0).all()  # before the series reaches back a period
    assert (s.phase == 0).all()  # all 500 rows lie in NAB's probation
    SeriesRequest.model_validate({"series": "a.csv", "values": [1.0, 2.0]})
    with pytest.raises(ValidationError):
        SeriesRequest.model_validate({"series": "a.csv", "values": [float("nan")]})
