"""The architecture search's Pareto front (ddn_ray.pareto). No Ray."""

from __future__ import annotations

import pytest

from ddn_ray import pareto


def _t(name: str, score: float, macs: float) -> dict:
    return {"trial": name, "settings": {"model": name}, "score": score, "mean_macs": macs}


def test_the_front_keeps_only_undominated_trials_cheapest_first() -> None:
    trials = [
        _t("big", 0.80, 4600),
        _t("small", 0.79, 130),
        _t("dominated", 0.78, 500),  # less accurate and dearer than small
        _t("exits", 0.795, 520),
        _t("big-again", 0.80, 4600),  # the same point twice (a threshold a model without exits ignores)
        {"trial": "failed", "settings": {}, "score": None, "mean_macs": None},
    ]
    front = pareto.front(trials)
    assert [p["trial"] for p in front] == ["small", "exits", "big"]


def test_the_chosen_point_is_the_cheapest_within_the_tolerance() -> None:
    front = pareto.front([_t("small", 0.79, 130), _t("exits", 0.795, 520), _t("big", 0.80, 4600)])
    assert pareto.choose(front, 0.005)["trial"] == "exits"
    assert pareto.choose(front, 0.0)["trial"] == "big"
    assert pareto.choose(front, 0.02)["trial"] == "small"
    with pytest.raises(ValueError, match="empty"):
        pareto.choose([], 0.01)


def test_the_table_marks_the_chosen_point_and_the_reference() -> None:
    trials = [_t("small", 0.79, 130), _t("exits", 0.795, 520), _t("big", 0.80, 4600), _t("off", 0.70, 9000)]
    front = pareto.front(trials)
    text = pareto.format_front(front, front[1], trials[2])
    rows = [line for line in text.splitlines() if line.startswith(("| exits", "| big"))]
    assert rows[0].endswith("| chosen |") and rows[1].endswith("| reference |")
    off_front = pareto.format_front(front, front[1], trials[3])  # a reference off the front is added last
    assert off_front.splitlines()[-1].startswith("| off") and off_front.splitlines()[-1].endswith("| reference |")
