"""The Numenta Anomaly Benchmark: corpus loading and the NAB score.

Written from the scoring rules of Lavin & Ahmad (2015), "Evaluating Real-time Anomaly
Detection Algorithms - the Numenta Anomaly Benchmark", section 4, and the NAB whitepaper:

* Each labelled anomaly window scores once: its earliest detection earns
  ``tp_weight * sigma(p) / sigma(-1)``, where ``p`` is the detection's relative position
  (``-1`` at the window's left edge, towards ``0`` at its right edge) and
  ``sigma(p) = 2 / (1 + exp(5 p)) - 1`` is the scaled sigmoid. A window with no detection
  costs ``-fn_weight``.
* Every detection outside a window is a false positive worth ``fp_weight * sigma(q)``
  (negative): ``q`` is its distance after the end of the previous window, in units of that
  window's width, so a detection just after a window costs little and one far from any
  window costs ``fp_weight``. Before the first window it costs ``fp_weight`` too.
* The first 15 % of each series (at most 750 points) is probationary: not scored.
* One threshold on the anomaly score is chosen per profile for the whole corpus (the one
  that maximises the raw score), and the raw score is normalised so that the null detector
  (never alarms) scores 0 and the perfect detector (alarms at each window's left edge) 100.

The profiles (``config/profiles.json``) weight these terms: ``standard`` (fp 0.11),
``reward_low_FP_rate`` (fp 0.22) and ``reward_low_FN_rate`` (fn 2.0).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "Profile",
    "Series",
    "load_corpus",
    "load_profiles",
    "probation_length",
    "scaled_sigmoid",
    "score_corpus",
    "score_per_file",
    "sweep_scores",
]

PROBATION_FRACTION = 0.15
MAX_PROBATION = 750


@dataclass(frozen=True)
class Profile:
    """A NAB cost matrix."""

    tp_weight: float = 1.0
    fp_weight: float = 0.11
    fn_weight: float = 1.0


@dataclass(frozen=True)
class Series:
    """One NAB data file.

    Attributes:
        name: ``<category>/<file>.csv``, the key of ``labels/combined_windows.json``.
        timestamps: ``(n,)`` datetime64[ns].
        values: ``(n,)`` float64.
        windows: ``[(first index, last index), ...]`` of the labelled anomaly windows, inclusive.
    """

    name: str
    timestamps: np.ndarray
    values: np.ndarray
    windows: tuple[tuple[int, int], ...]


def scaled_sigmoid(p: float | np.ndarray) -> float | np.ndarray:
    """``2 / (1 + exp(5 p)) - 1``, and ``-1`` from ``p >= 3`` on.

    Examples:
        >>> round(float(scaled_sigmoid(-1.0)), 5), round(float(scaled_sigmoid(-0.5)), 5), float(scaled_sigmoid(0.0))
        (0.98661, 0.84828, 0.0)
    """
    p = np.asarray(p, dtype=np.float64)
    out = 2.0 / (1.0 + np.exp(np.clip(5.0 * p, -50, 50))) - 1.0
    return np.where(p >= 3.0, -1.0, out)


def probation_length(n: int) -> int:
    """Points at the start of a series that are not scored: 15 % of ``n``, at most 750.

    Examples:
        >>> probation_length(1000), probation_length(22695)
        (150, 750)
    """
    return int(min(math.floor(PROBATION_FRACTION * n), PROBATION_FRACTION * 5000))


def sweep_scores(n: int, windows: tuple[tuple[int, int], ...], profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """What a detection at each point would be worth, and the window it falls in.

    Args:
        n: points in the series.
        windows: ``(first, last)`` indices, inclusive, in order, not overlapping.
        profile: the cost matrix.

    Returns:
        ``(worth, window)``: ``(n,)`` float64, the weighted score of a detection at each
        point (positive inside a window, negative outside), and ``(n,)`` int64, the index of
        the window a point is in (``-1`` outside, ``-2`` in the probationary period).
    """
    worth = np.empty(n, dtype=np.float64)
    window = np.full(n, -1, dtype=np.int64)
    max_tp = float(scaled_sigmoid(-1.0))
    prev_end: int | None = None
    prev_width = 0.0  # read only once a window has closed
    i = 0
    for k, (first, last) in enumerate([*windows, (n, n - 1)]):  # a sentinel closes the tail
        # Outside windows: before this one, after the previous one.
        idx = np.arange(i, min(first, n))
        if prev_end is None:
            worth[idx] = -profile.fp_weight  # before any window: sigma(3) = -1
        else:
            q = np.abs(prev_end - idx) / max(prev_width - 1.0, 1.0)
            worth[idx] = scaled_sigmoid(q) * profile.fp_weight
        if first >= n:
            break
        width = float(last - first + 1)
        idx = np.arange(first, last + 1)
        p = -(last - idx + 1) / width  # -1 at the left edge
        worth[idx] = scaled_sigmoid(p) * profile.tp_weight / max_tp
        window[idx] = k
        prev_end, prev_width, i = last, width, last + 1
    window[: probation_length(n)] = -2
    return worth, window


def score_corpus(
    scores: Mapping[str, np.ndarray], corpus: Mapping[str, Series], profile: Profile
) -> dict[str, float | int]:
    """The NAB score of anomaly scores on a corpus, with the best corpus-wide threshold.

    Args:
        scores: series name -> ``(n,)`` anomaly scores in ``[0, 1]`` (higher: more anomalous),
            one per point of that series; every series of ``corpus`` must be present.
        corpus: the series, as :func:`load_corpus` returns them.
        profile: the cost matrix.

    Returns:
        ``score`` (normalised: null 0, perfect 100), ``threshold`` (alarms are points with
        ``score >= threshold``), ``raw``, ``tp``, ``fp``, ``fn`` (windows missed).

    Raises:
        ValueError: a series is missing or its scores have the wrong length.

    Examples:
        >>> s = Series("a.csv", np.arange(100), np.zeros(100), ((40, 49),))
        >>> perfect = np.zeros(100); perfect[40] = 1.0
        >>> score_corpus({"a.csv": perfect}, {"a.csv": s}, Profile())["score"]
        100.0
        >>> score_corpus({"a.csv": np.zeros(100)}, {"a.csv": s}, Profile())["score"]
        0.0
    """
    worths, wins, points, offset = [], [], [], 0
    for name, series in corpus.items():
        if name not in scores or len(scores[name]) != len(series.values):
            got = len(scores[name]) if name in scores else None
            raise ValueError(f"scores[{name!r}]: expected {len(series.values)} values, got {got}")
        worth, window = sweep_scores(len(series.values), series.windows, profile)
        keep = window != -2
        # Windows wholly inside the probationary period are not scored at all.
        ids, compact = np.unique(window[keep], return_inverse=True)
        scored = ids >= 0
        remap = np.where(scored, np.cumsum(scored) - 1 + offset, -1)
        worths.append(worth[keep])
        wins.append(remap[compact])
        points.append(np.asarray(scores[name], dtype=np.float64)[keep])
        offset += int(scored.sum())
    worth, win, s = np.concatenate(worths), np.concatenate(wins), np.concatenate(points)
    num_windows = offset
    null = -profile.fn_weight * num_windows
    perfect = profile.tp_weight * num_windows
    # Sweep the threshold down through every distinct score: points become alarms in order.
    order = np.argsort(-s, kind="stable")
    best_window = np.full(num_windows, -np.inf)
    total = null
    best = {"raw": null, "threshold": float(s.max()) + 1e-9 if len(s) else 1.0, "tp": 0, "fp": 0}
    tp = fp = 0
    j = 0
    while j < len(order):
        level = s[order[j]]
        while j < len(order) and s[order[j]] == level:
            k = order[j]
            if win[k] < 0:
                total += worth[k]
                fp += 1
            else:
                old = best_window[win[k]]
                if worth[k] > old:
                    total += worth[k] - (old if old > -np.inf else -profile.fn_weight)
                    tp += old == -np.inf
                    best_window[win[k]] = worth[k]
            j += 1
        if total > best["raw"]:
            best = {"raw": total, "threshold": float(level), "tp": int(tp), "fp": fp}
    return {
        "score": float(100.0 * (best["raw"] - null) / (perfect - null)) if num_windows else 0.0,
        "threshold": best["threshold"],
        "raw": float(best["raw"]),
        "tp": best["tp"],
        "fp": best["fp"],
        "fn": int(num_windows - best["tp"]),
    }


def score_per_file(
    scores: Mapping[str, np.ndarray], corpus: Mapping[str, Series], profile: Profile
) -> dict[str, float | int]:
    """Like :func:`score_corpus`, but with the best threshold of each file for that file.

    An oracle per file, so it is at least :func:`score_corpus`'s score and not comparable with
    NAB's scoreboard, which sweeps one threshold per profile over the corpus.

    Returns:
        ``score`` (null 0, perfect 100), ``raw``, ``tp``, ``fp``, ``fn``.

    Raises:
        ValueError: as :func:`score_corpus`.

    Examples:
        >>> a = Series("a.csv", np.arange(100), np.zeros(100), ((40, 49),))
        >>> b = Series("b.csv", np.arange(100), np.zeros(100), ((60, 69),))
        >>> sa, sb = np.zeros(100), np.zeros(100); sa[40] = 0.9; sa[20] = 0.6; sb[60] = 0.5
        >>> round(score_corpus({"a.csv": sa, "b.csv": sb}, {"a.csv": a, "b.csv": b}, Profile())["score"], 2)
        97.25
        >>> score_per_file({"a.csv": sa, "b.csv": sb}, {"a.csv": a, "b.csv": b}, Profile())["score"]
        100.0
    """
    parts = [
        score_corpus({name: scores[name]} if name in scores else {}, {name: series}, profile)
        for name, series in corpus.items()
    ]
    tot = {k: sum(p[k] for p in parts) for k in ("raw", "tp", "fp", "fn")}
    windows = tot["tp"] + tot["fn"]
    null, perfect = -profile.fn_weight * windows, profile.tp_weight * windows
    return {"score": float(100.0 * (tot["raw"] - null) / (perfect - null)) if windows else 0.0, **tot}


def data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The NAB folder: ``path``, else ``$DDN_RAY_DATA_DIR/nab``.

    Raises:
        FileNotFoundError: neither holds ``labels/combined_windows.json``.
    """
    candidates = [Path(path)] if path else []
    if os.environ.get("DDN_RAY_DATA_DIR"):
        candidates.append(Path(os.environ["DDN_RAY_DATA_DIR"]) / "nab")
    for c in candidates:
        if (c / "labels" / "combined_windows.json").is_file():
            return c
    raise FileNotFoundError(
        f"NAB not found in {[str(c) for c in candidates]}: pass its folder or set DDN_RAY_DATA_DIR "
        "(github.com/numenta/NAB, v1.1: data/, labels/, config/)"
    )


def load_corpus(path: str | os.PathLike[str] | None = None, names: list[str] | None = None) -> dict[str, Series]:
    """Load NAB series with their anomaly windows as index ranges.

    Args:
        path: the NAB folder (see :func:`data_dir`).
        names: only these series (``<category>/<file>.csv``); default all 58.

    Raises:
        FileNotFoundError: see :func:`data_dir`.
        ValueError: a window edge is not a timestamp of its series.
    """
    root = data_dir(path)
    labels = json.loads((root / "labels" / "combined_windows.json").read_text())
    out = {}
    for name in sorted(names or labels):
        df = pd.read_csv(root / "data" / name)
        ts = pd.to_datetime(df["timestamp"]).to_numpy()
        index = {t: i for i, t in enumerate(ts)}
        windows = []
        for first, last in labels[name]:
            a, b = np.datetime64(pd.Timestamp(first)), np.datetime64(pd.Timestamp(last))
            if a not in index or b not in index:
                raise ValueError(f"{name}: window [{first}, {last}] does not start and end on timestamps of the series")
            windows.append((index[a], index[b]))
        out[name] = Series(name, ts, df["value"].to_numpy(dtype=np.float64), tuple(windows))
    return out


def load_profiles(path: str | os.PathLike[str] | None = None) -> dict[str, Profile]:
    """The three NAB profiles from ``config/profiles.json``."""
    raw = json.loads((data_dir(path) / "config" / "profiles.json").read_text())
    return {
        name: Profile(c["CostMatrix"]["tpWeight"], c["CostMatrix"]["fpWeight"], c["CostMatrix"]["fnWeight"])
        for name, c in raw.items()
    }
