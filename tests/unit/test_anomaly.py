"""The NAB job's detector (ddn_ray.usecases.anomaly): no look-ahead, each step does what it says, and it beats chance on NAB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ddn_ray.usecases import anomaly, nab

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"


def _noisy(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    v = np.sin(np.arange(n) / 10) + rng.normal(0, 0.05, n)
    return v, np.abs(np.diff(v, prepend=v[0]))


def test_scores_use_only_the_past() -> None:
    v, e = _noisy()
    base = anomaly.Detector().scores(e, v, 1, 300)
    v2, e2 = v.copy(), e.copy()
    v2[2000:] += 10.0
    e2[2000:] *= 50.0
    changed = anomaly.Detector().scores(e2, v2, 1, 300)
    assert np.array_equal(base[:2000], changed[:2000])
    assert changed[2000] == 1.0 and base[2000] < 0.5  # the change itself is seen at once


def test_the_error_likelihood_rises_with_the_recent_error_and_waits_for_its_reference() -> None:
    _, e = _noisy()
    e[2500:2510] *= 20.0
    tail = anomaly.tail_probability(e, 1, 300, 20, 500)
    assert (tail[:301] == 0.5).all()
    assert tail[2509] < 1e-6 < tail[2400]
    assert anomaly.log_score(tail)[2509] > 0.6


def test_spatial_anomalies_and_one_alarm_per_event() -> None:
    v = np.r_[np.sin(np.arange(100)), [1.01, 1.2, 0.5, -1.2]]  # range about [-1, 1]: a margin of 0.1
    assert (np.flatnonzero(anomaly.spatial_anomalies(v, 0.05)[100:]) + 100).tolist() == [101, 103]
    s = anomaly.suppress(np.r_[0.6, 0.9, 0.9, 0.2, 0.7, 0.1], 0.5, 3)
    assert (s >= 0.5).tolist() == [True, False, False, False, True, False]


def test_level_and_error_records() -> None:
    """A level the series never held, and an error the forecaster never made, score 1; each can be turned off."""
    rng = np.random.default_rng(1)
    v = np.tile([0.0, 1.0], 1500) + rng.normal(0, 0.01, 3000)  # the 10-point mean stays near 0.5
    v[2500:2520] = 0.9  # inside the values' range, but a level never held
    e = np.abs(rng.normal(0, 0.01, 3000))
    no_records = anomaly.Detector(spatial_tolerance=-1.0, level_tolerance=-1.0, error_tolerance=-1.0)
    levels = anomaly.Detector(spatial_tolerance=-1.0, error_tolerance=-1.0)
    assert not anomaly.spatial_anomalies(v, 0.03)[2500:2520].any()
    assert levels.scores(e, v, 1, 300)[2500:2520].max() == 1.0
    assert no_records.scores(e, v, 1, 300)[2500:2520].max() < 0.5
    e[2700] = 0.1  # one error about three times the largest before it
    errors = anomaly.Detector(spatial_tolerance=-1.0, level_tolerance=-1.0)
    assert errors.scores(e, v, 1, 300)[2700] == 1.0 and no_records.scores(e, v, 1, 300)[2700] < 0.5
    assert anomaly.moving_mean(np.arange(5.0), 3).tolist() == [0.0, 0.5, 1.0, 2.0, 3.0]


def test_each_step_can_be_turned_off() -> None:
    v, e = _noisy()
    v[2500] += 5.0
    no_records = anomaly.Detector(spatial_tolerance=-1.0, level_tolerance=-1.0, error_tolerance=-1.0)
    assert anomaly.Detector().scores(e, v, 1, 300)[2500] == 1.0
    assert no_records.scores(e, v, 1, 300)[2500] < 0.5  # the spike's error is one point in a 30-point mean
    e[2000:2200] *= 30.0  # a long burst of errors
    alarms = (anomaly.Detector().scores(e, v, 1, 300) >= 0.5).sum()
    assert (anomaly.Detector(quiet_fraction=0.0).scores(e, v, 1, 300) >= 0.5).sum() > alarms >= 1
    with pytest.raises(ValueError, match="one error per value"):
        no_records.scores(e[:-1], v, 1, 300)


def test_seasonal_period_and_rows() -> None:
    t = np.arange(2000)
    x = (0.5 + 0.4 * np.sin(2 * np.pi * t / 96)).astype(np.float32)
    assert anomaly.seasonal_period(x[:750], 375) == 96
    assert anomaly.seasonal_period(np.linspace(0, 1, 750), 375) == 0  # a trend has no period
    f, y = anomaly.series_rows(x, 16, 96, 4)
    assert f.shape == (2000 - 16, 16 + 8) and y.shape == (2000 - 16, 1)
    r = 500
    point = 16 + r
    assert np.allclose(f[r, 16:], x[point - 96 - 3 : point - 96 + 5] - x[point - 1])
    assert np.allclose(anomaly.series_rows(x, 16)[0], f[:, :16])  # no period: the lags alone


@pytest.mark.skipif(not (SHARED / "nab" / "labels").is_dir(), reason="needs ../shared/datasets")
def test_a_persistence_forecaster_through_the_detector_beats_nab_random_on_real_series() -> None:
    """The detector on "the next change is 0" errors, on 6 NAB files: far above random's 16.8 and below perfect."""
    names = [
        "artificialWithAnomaly/art_daily_jumpsup.csv",
        "realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv",
        "realAdExchange/exchange-3_cpc_results.csv",
        "realTraffic/occupancy_t4013.csv",
        "realKnownCause/ec2_request_latency_system_failure.csv",
        "artificialNoAnomaly/art_daily_no_noise.csv",
    ]
    corpus = nab.load_corpus(SHARED / "nab", names)
    scores = {}
    for name, s in corpus.items():
        x = (s.values - s.values.min()) / (np.ptp(s.values) or 1.0)
        err = np.r_[0.0, np.abs(np.diff(x))]
        scores[name] = anomaly.Detector().scores(err, s.values, 1, nab.probation_length(len(x)) // 2)
    r = nab.score_corpus(scores, corpus, nab.Profile())
    assert 40.0 < r["score"] < 100.0, r
    assert nab.score_per_file(scores, corpus, nab.Profile())["score"] >= r["score"]
