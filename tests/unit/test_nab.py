"""NAB scoring rules (Lavin & Ahmad 2015) on hand-built series, and the shipped corpus."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from ddn_ray.usecases import nab

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "nab"
STD = nab.Profile(1.0, 0.11, 1.0)


def _series(n: int = 1000, windows=((400, 499),)) -> dict[str, nab.Series]:
    return {"s.csv": nab.Series("s.csv", np.arange(n), np.zeros(n), tuple(windows))}


def _alarms(n: int, at: list[int]) -> dict[str, np.ndarray]:
    x = np.zeros(n)
    x[at] = 1.0
    return {"s.csv": x}


def test_detection_worth_follows_the_scaled_sigmoid() -> None:
    worth, window = nab.sweep_scores(1000, ((400, 499),), STD)
    max_tp = 2 / (1 + math.exp(-5)) - 1
    assert worth[400] == pytest.approx(1.0)  # left edge: the full tp weight
    assert worth[450] == pytest.approx((2 / (1 + math.exp(-5 * 50 / 100)) - 1) / max_tp)  # p = -0.5
    assert worth[499] == pytest.approx((2 / (1 + math.exp(-5 * 1 / 100)) - 1) / max_tp)  # right edge: ~0
    assert worth[300] == pytest.approx(-0.11)  # before any window: the full fp cost
    assert worth[500] == pytest.approx(
        0.11 * (2 / (1 + math.exp(5 / 99)) - 1)
    )  # just after a window: nearly free (-0.003)
    assert worth[600] == pytest.approx(0.11 * (2 / (1 + math.exp(5 * 101 / 99)) - 1))
    assert worth[999] == pytest.approx(-0.11)  # 5 widths after: sigma(q >= 3) = -1
    assert (window[:150] == -2).all() and (window[400:500] == 0).all() and window[399] == -1


def test_earliest_detection_counts_once_and_false_positives_cost() -> None:
    s = _series()
    early = nab.score_corpus(_alarms(1000, [420]), s, STD)
    late = nab.score_corpus(_alarms(1000, [480]), s, STD)
    both = nab.score_corpus(_alarms(1000, [420, 480]), s, STD)
    assert 0 < late["score"] < early["score"] < 100
    assert both["score"] == pytest.approx(early["score"]) and both["tp"] == 1
    with_fp = nab.score_corpus(_alarms(1000, [420, 300]), s, STD)
    assert with_fp["fp"] == 1 and with_fp["raw"] == pytest.approx(early["raw"] - 0.11)
    # Alarms in the probationary period are not scored at all.
    assert nab.score_corpus(_alarms(1000, [420, 100]), s, STD)["raw"] == pytest.approx(early["raw"])


def test_the_threshold_is_chosen_and_a_bad_detector_never_scores_below_null() -> None:
    s = _series()
    x = np.zeros(1000)
    x[420], x[300:310] = 0.9, 0.95  # the false alarms score higher than the true one
    r = nab.score_corpus({"s.csv": x}, s, STD)
    assert r["threshold"] == pytest.approx(0.9) and r["tp"] == 1 and r["fp"] == 10
    noise = nab.score_corpus({"s.csv": np.r_[np.ones(400), np.zeros(600)]}, s, STD)
    assert noise["score"] == 0.0 and noise["tp"] == 0  # no threshold helps: the null detector's 0


def test_profiles_weight_misses_and_normalise_null_to_0_and_perfect_to_100() -> None:
    s = _series(1000, ((400, 449), (700, 749)))
    one = _alarms(1000, [400])
    std = nab.score_corpus(one, s, STD)
    low_fn = nab.score_corpus(one, s, nab.Profile(1.0, 0.11, 2.0))
    assert std["fn"] == low_fn["fn"] == 1
    assert std["raw"] == pytest.approx(0.0) and std["score"] == pytest.approx(50.0)  # null -2, perfect 2
    assert low_fn["raw"] == pytest.approx(-1.0) and low_fn["score"] == pytest.approx(50.0)  # null -4, perfect 2


def test_window_inside_the_probation_is_not_scored() -> None:
    s = _series(1000, ((50, 60), (400, 499)))
    assert nab.score_corpus(_alarms(1000, [400]), s, STD)["score"] == pytest.approx(100.0)


def test_missing_series_is_named() -> None:
    with pytest.raises(ValueError, match=re.escape("s.csv")):
        nab.score_corpus({}, _series(), STD)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets/nab not present")
def test_shipped_corpus_and_profiles() -> None:
    corpus = nab.load_corpus(SHARED)
    assert len(corpus) == 58 and sum(len(s.windows) for s in corpus.values()) == 116
    m = corpus["realKnownCause/machine_temperature_system_failure.csv"]
    assert len(m.values) == 22695 and len(m.windows) == 4 and all(a < b for a, b in m.windows)
    profiles = nab.load_profiles(SHARED)
    assert profiles["standard"] == STD and profiles["reward_low_FN_rate"].fn_weight == 2.0
    perfect = {k: np.zeros(len(s.values)) for k, s in corpus.items()}
    for k, s in corpus.items():
        for a, _ in s.windows:
            perfect[k][a] = 1.0
    for profile in profiles.values():
        assert nab.score_corpus(perfect, corpus, profile)["score"] == pytest.approx(100.0)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets/nab not present")
@pytest.mark.parametrize("detector", ["ARTime", "numenta", "contextOSE", "expose"])
def test_normalisation_reproduces_the_published_scoreboard(detector: str) -> None:
    """NAB's config/thresholds.json holds each detector's raw score at its threshold; our null and
    perfect scores (from the windows we count as scored) must turn them into results/final_results.json."""
    import json

    corpus = nab.load_corpus(SHARED)
    raw = json.loads((SHARED / "config" / "thresholds.json").read_text())[detector]
    published = json.loads((SHARED / "results" / "final_results.json").read_text())[detector]
    zeros = {k: np.zeros(len(s.values)) for k, s in corpus.items()}
    for name, profile in nab.load_profiles(SHARED).items():
        null = nab.score_corpus(zeros, corpus, profile)["raw"]
        perfect = -null / profile.fn_weight * profile.tp_weight
        assert 100 * (raw[name]["score"] - null) / (perfect - null) == pytest.approx(published[name], abs=1e-6)
