"""Streaming anomaly scores from a forecaster: the NAB use case's detector.

A forecaster learns a series on the fly (``jobs/configs/nab.yaml``); this module turns what it
sees into per-point anomaly scores in ``[0, 1]``, using only points up to each one:

1. **Inputs** (:func:`series_rows`): the ``lags`` values before a point and the values around
   the same phase one period earlier. The period is the first autocorrelation peak of the
   values in NAB's probation (:func:`seasonal_period`): it is found on points that are never
   scored, before any scored point is forecast. The target is the point's change from the last
   value.
2. **Error likelihood** (:func:`tail_probability`): the mean absolute forecast error over the
   last ``short`` points against the mean and spread of that short mean over the last ``long``
   points, as a two-sided Gaussian tail probability. This is the anomaly likelihood of Ahmad,
   Lavin, Purdy & Agha (2017), "Unsupervised real-time anomaly detection for streaming data",
   Neurocomputing 262, section 4 (eq. 4-6), here on forecast errors instead of HTM's raw
   score, at two time scales.
3. **Records** (:func:`spatial_anomalies`): a point scores 1 when it breaks the range of
   everything before it by a margin, a fraction of that range, in any of three signals: the
   value itself (the "spatial anomaly" of NAB's Numenta detector), the mean of the last
   ``level_window`` values (a level the series never held), and the forecast error (the
   forecaster was never this wrong).
4. **One alarm per event** (:func:`suppress`): after a score at or above ``alarm_level``, the
   next ``quiet_fraction`` of the series stays below it. NAB rewards the earliest detection in
   a window and charges every other one.

The default settings were chosen on the NAB corpus itself (``benchmarks/nab_job_learner.py``
prints what each step adds); NAB has no held-out part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erfc

from ddn_ray.usecases.nab import probation_length

__all__ = [
    "Detector",
    "log_score",
    "moving_mean",
    "seasonal_period",
    "series_rows",
    "spatial_anomalies",
    "suppress",
    "tail_probability",
]

LOG_FLOOR = 1e-10


def seasonal_period(x: np.ndarray, max_lag: int, min_acf: float = 0.3) -> int:
    """The series' period: the highest autocorrelation after its first negative one, or 0.

    Args:
        x: ``(n,)`` values (the probation's).
        max_lag: longest period considered, in points (``< n``).
        min_acf: a peak below this autocorrelation is no period.

    Returns:
        The period in points, or 0 when the autocorrelation never turns negative or its peak is
        below ``min_acf``.

    Examples:
        >>> t = np.arange(600)
        >>> seasonal_period(np.sin(2 * np.pi * t / 48), 300), seasonal_period(np.ones(600), 300)
        (48, 0)
    """
    x = np.asarray(x, dtype=np.float64) - float(np.mean(x))
    denom = float(x @ x)
    max_lag = min(max_lag, len(x) - 1)
    if denom == 0.0 or max_lag < 2:
        return 0
    acf = np.array([1.0] + [float(x[:-p] @ x[p:]) / denom for p in range(1, max_lag + 1)])
    negative = np.flatnonzero(acf < 0)
    if not len(negative):
        return 0
    peak = int(negative[0] + np.argmax(acf[negative[0] :]))
    return peak if acf[peak] >= min_acf else 0


def series_rows(x: np.ndarray, lags: int, period: int = 0, width: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Forecaster rows for points ``lags .. n-1`` of a scaled series.

    Row ``r`` (for point ``t = lags + r``) holds ``x[t-lags .. t-1]``, then ``2 * width``
    seasonal inputs ``x[t-period-width+1 .. t-period+width] - x[t-1]``, which are 0 where they
    would reach before the series' start and when ``period`` is 0 (or too short: ``period <= width``).

    Args:
        x: ``(n,)`` float32 values scaled to about ``[0, 1]``.
        lags: values before each point.
        period: the seasonal period, in points.
        width: half the seasonal inputs: ``2 * width`` values around the point one period back (0: none).

    Returns:
        ``(features, target)``: ``(n - lags, lags + 2 * width)`` float32 and ``(n - lags, 1)``
        float32, the change ``x[t] - x[t-1]``.

    Examples:
        >>> f, y = series_rows(np.arange(6, dtype=np.float32), 2, period=3, width=1)
        >>> f.tolist(), y[:, 0].tolist()
        ([[0.0, 1.0, 0.0, 0.0], [1.0, 2.0, -2.0, -1.0], [2.0, 3.0, -2.0, -1.0], [3.0, 4.0, -2.0, -1.0]], [1.0, 1.0, 1.0, 1.0])
    """
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    last = x[lags - 1 : -1]
    feats = [np.lib.stride_tricks.sliding_window_view(x, lags)[:-1]]
    if width:
        seasonal = np.zeros((n - lags, 2 * width), dtype=np.float32)
        if period > width:
            points = np.arange(lags, n)
            idx = points[:, None] - period + np.arange(-width + 1, width + 1)[None, :]
            ok = (idx >= 0).all(axis=1)
            seasonal[ok] = x[idx[ok]] - last[ok, None]
        feats.append(seasonal)
    return np.concatenate(feats, axis=1).astype(np.float32), (x[lags:] - last)[:, None].astype(np.float32)


def tail_probability(errors: np.ndarray, start: int, learning: int, short: int, long: int) -> np.ndarray:
    """How unlikely the recent mean error is: a two-sided Gaussian tail, small = anomalous.

    ``a[i]`` is the mean of ``errors[max(start, i-short+1) .. i]``; point ``i`` gets
    ``Q(|a[i] - m| / s)``, with ``m`` and ``s**2`` the mean and variance of ``a`` over the
    ``long`` points before ``i`` (Ahmad et al. 2017, eq. 4-6; two-sided as NAB's Numenta detector).

    Args:
        errors: ``(n,)`` non-negative forecast errors; those before ``start`` are not used.
        start: first point with an error.
        learning: points after ``start`` that get 0.5 (the reference is still forming).
        short: the recent window, in points.
        long: the reference window, in points.

    Returns:
        ``(n,)`` float64 tail probabilities in ``[0, 0.5]`` (0 where the Gaussian tail underflows).

    Examples:
        >>> e = np.r_[np.zeros(4), np.tile([0.1, 0.12], 100), np.full(10, 1.0)]
        >>> p = tail_probability(e, 4, 20, 5, 100)
        >>> bool(p[100] > 0.01), bool(p[-10] < 1e-6), float(p[10])
        (True, True, 0.5)
    """
    n = len(errors)
    e = np.where(np.arange(n) < start, 0.0, np.nan_to_num(np.asarray(errors, dtype=np.float64)))
    i = np.arange(n)
    a = np.zeros(n)
    a[start:] = moving_mean(e[start:], short)
    ca, ca2 = np.concatenate([[0.0], np.cumsum(a)]), np.concatenate([[0.0], np.cumsum(a * a)])
    ref = np.maximum(start, i - long)
    count = np.maximum(i - ref, 1)
    mean = (ca[i] - ca[ref]) / count
    var = np.maximum((ca2[i] - ca2[ref]) / count - mean * mean, 1e-8)
    tail = 0.5 * erfc(np.abs(a - mean) / np.sqrt(var) / math.sqrt(2.0))
    tail[: start + learning] = 0.5
    return tail


def log_score(tail: np.ndarray) -> np.ndarray:
    """Tail probabilities as scores in ``[0, 1]``: ``log(p) / log(1e-10)`` (1e-5 -> 0.5).

    Examples:
        >>> log_score(np.array([0.5, 1e-5, 1e-12])).round(3).tolist()
        [0.03, 0.5, 1.0]
    """
    return np.clip(np.log(np.asarray(tail, dtype=np.float64) + LOG_FLOOR) / math.log(LOG_FLOOR), 0.0, 1.0)


def spatial_anomalies(values: np.ndarray, tolerance: float) -> np.ndarray:
    """``(n,)`` bool: the value lies outside ``[min - tol, max + tol]`` of all values before it, ``tol = tolerance * (max - min)``.

    Examples:
        >>> spatial_anomalies(np.array([0.0, 1.0, 0.5, 1.02, 1.2, -0.5]), 0.05).tolist()
        [False, False, False, False, True, True]
    """
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return np.zeros(len(v), dtype=bool)
    lo = np.concatenate([[v[0]], np.minimum.accumulate(v)[:-1]])
    hi = np.concatenate([[v[0]], np.maximum.accumulate(v)[:-1]])
    tol = tolerance * (hi - lo)
    return (hi > lo) & ((v > hi + tol) | (v < lo - tol))


def moving_mean(x: np.ndarray, window: int) -> np.ndarray:
    """``(n,)`` float64 trailing means: ``out[i]`` is the mean of ``x[max(0, i-window+1) .. i]``.

    Examples:
        >>> moving_mean(np.array([1.0, 3.0, 5.0, 7.0]), 2).tolist()
        [1.0, 2.0, 4.0, 6.0]
    """
    x = np.asarray(x, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(len(x))
    lo = np.maximum(0, i + 1 - window)
    return (c[i + 1] - c[lo]) / (i + 1 - lo)


def suppress(scores: np.ndarray, level: float, quiet: int) -> np.ndarray:
    """After a score at or above ``level``, cap the next ``quiet`` scores just below it (one alarm per event).

    Examples:
        >>> suppress(np.array([0.1, 0.6, 0.9, 0.2, 0.7]), 0.5, 2).round(3).tolist()
        [0.1, 0.6, 0.5, 0.2, 0.7]
    """
    out = np.array(scores, dtype=np.float64)
    i, n = 0, len(out)
    while i < n:
        if out[i] >= level and quiet > 0:
            out[i + 1 : i + 1 + quiet] = np.minimum(out[i + 1 : i + 1 + quiet], level - 1e-6)
            i += quiet + 1
        else:
            i += 1
    return out


@dataclass(frozen=True)
class Detector:
    """Forecast errors and values -> anomaly scores in ``[0, 1]`` (see the module docstring).

    Attributes:
        scales: ``(short, long)`` windows in points, one error likelihood each; the score is
            their maximum.
        spatial_tolerance: the records' margin on the values (:func:`spatial_anomalies`), a
            fraction of the range seen so far; negative turns these records off.
        level_window: the records of the ``level_window``-point :func:`moving_mean` of the values
            (from the first full window on).
        level_tolerance: those records' margin (negative: off).
        error_tolerance: the records' margin on the forecast errors from ``start`` on (negative: off).
        alarm_level: :func:`suppress`'s level.
        quiet_fraction: :func:`suppress`'s quiet time, as a fraction of the series.
    """

    scales: tuple[tuple[int, int], ...] = ((30, 500), (100, 2000))
    spatial_tolerance: float = 0.03
    level_window: int = 10
    level_tolerance: float = 0.1
    error_tolerance: float = 0.1
    alarm_level: float = 0.5
    quiet_fraction: float = 0.01

    def scores(
        self, errors: np.ndarray, values: np.ndarray, start: int, learning: int | None = None, length: int | None = None
    ) -> np.ndarray:
        """Anomaly scores of one series.

        Args:
            errors: ``(n,)`` absolute forecast errors (0 before ``start``).
            values: ``(n,)`` the series' values (any units).
            start: first point with a forecast.
            learning: points after ``start`` before the likelihoods and the records speak;
                default half NAB's probation of ``n`` points.
            length: the series' full length, for the quiet time (default ``n``).

        Returns:
            ``(n,)`` float64 scores; an alarm is a score at or above a threshold.

        Raises:
            ValueError: ``errors`` and ``values`` differ in length.

        Examples:
            >>> rng = np.random.default_rng(0)
            >>> v = np.sin(np.arange(3000) / 10) + rng.normal(0, 0.05, 3000); v[2500] += 5
            >>> e = np.abs(np.diff(v, prepend=v[0])); s = Detector().scores(e, v, 1, 300)
            >>> float(s[2500]), bool((s[2501:2530] < 0.5).all())  # one alarm for the spike
            (1.0, True)
        """
        if len(errors) != len(values):
            raise ValueError(f"errors has {len(errors)} points, values {len(values)}: one error per value")
        if learning is None:
            learning = probation_length(len(errors)) // 2
        parts = [log_score(tail_probability(errors, start, learning, short, long)) for short, long in self.scales]
        s = np.max(parts, axis=0)
        records = np.zeros(len(s), dtype=bool)
        if self.spatial_tolerance >= 0:
            records |= spatial_anomalies(values, self.spatial_tolerance)
        if self.level_tolerance >= 0:  # full windows only: a mean of 1 or 2 values is no level
            w = self.level_window
            records[w - 1 :] |= spatial_anomalies(moving_mean(values, w)[w - 1 :], self.level_tolerance)
        if self.error_tolerance >= 0:
            records[start:] |= spatial_anomalies(np.asarray(errors)[start:], self.error_tolerance)
        records[: start + learning] = False
        s[records] = 1.0
        return suppress(s, self.alarm_level, int(self.quiet_fraction * (length or len(s))))
