from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ddn_ray import evaluate


def test_kappa_matches_hand_computation() -> None:
    # Confusion: TP=20 FN=5 FP=10 TN=15 -> p0=0.7; pe=0.5*0.6+0.5*0.4=0.5; kappa=0.4
    y = np.array([1] * 25 + [0] * 25)
    p = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15)
    assert evaluate.accuracy(y, p) == pytest.approx(0.7)
    assert evaluate.cohen_kappa(y, p, 2) == pytest.approx(0.4)


def test_kappa_three_classes_and_degenerate_cases() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    assert evaluate.cohen_kappa(y, y, 3) == pytest.approx(1.0)
    # p0=1/3, pe=3*(1/3*1/3)=1/3 -> 0
    assert evaluate.cohen_kappa(y, np.array([0, 2, 1, 1, 0, 2]), 3) == pytest.approx(0.0)
    assert evaluate.cohen_kappa(np.zeros(4, int), np.zeros(4, int), 2) == 0.0
    assert math.isnan(evaluate.cohen_kappa(np.array([], int), np.array([], int), 2))


def test_kappa_temporal_against_no_change() -> None:
    y = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    nc = np.concatenate([[0], y[:-1]])  # p_nc = 5/8
    pred = y.copy()
    pred[0] = 1  # p0 = 7/8
    assert evaluate.kappa_temporal(y, pred, nc) == pytest.approx((7 / 8 - 5 / 8) / (1 - 5 / 8))
    assert evaluate.kappa_temporal(y, nc, nc) == 0.0


def test_window_accuracy_and_percentiles() -> None:
    ids, acc = evaluate.window_accuracy(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]), np.array([3, 3, 5, 5]))
    assert ids.tolist() == [3, 5] and acc.tolist() == [0.5, 1.0]
    pc = evaluate.percentiles([1.0, 2.0, 3.0, None], (50,))
    assert pc == {"p50": 2.0, "max": 3.0}
    assert evaluate.percentiles([], (50,)) == {"p50": None, "max": None}


def test_report_json_has_no_nan_and_plot_is_written(tmp_path) -> None:
    p = evaluate.write_report({"a": float("nan"), "b": np.float32(1.5), "c": [np.int64(2)]}, tmp_path / "r.json")
    assert json.loads(p.read_text()) == {"a": None, "b": 1.5, "c": [2]}
    png = evaluate.plot_accuracy({"m": (np.arange(5), np.full(5, 0.5))}, tmp_path / "a.png", "t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
