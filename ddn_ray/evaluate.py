"""Prequential metrics, the end-of-run report, its table and plot."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "RssSampler",
    "accuracy",
    "cohen_kappa",
    "detection_delays",
    "format_table",
    "gem_metrics",
    "kappa_temporal",
    "percentiles",
    "phase_accuracy",
    "plot_accuracy",
    "recovery_windows",
    "score",
    "window_accuracy",
    "write_report",
]


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of equal entries of two ``(n,)`` int arrays; ``nan`` when ``n == 0``."""
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def cohen_kappa(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Cohen's kappa, ``(p0 - pe) / (1 - pe)`` (Cohen 1960).

    ``p0`` is the accuracy and ``pe`` the agreement expected by chance from the two
    marginal class frequencies. Returns 0.0 when ``pe == 1`` (a single class on both sides).

    Examples:
        >>> cohen_kappa(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2)
        0.5
    """
    if not len(y_true):
        return float("nan")
    p0 = np.mean(y_true == y_pred)
    t = np.bincount(y_true, minlength=num_classes) / len(y_true)
    p = np.bincount(y_pred, minlength=num_classes) / len(y_pred)
    pe = float(np.dot(t, p))
    return 0.0 if pe >= 1.0 else float((p0 - pe) / (1.0 - pe))


def kappa_temporal(y_true: np.ndarray, y_pred: np.ndarray, y_no_change: np.ndarray) -> float:
    """Kappa-temporal, ``(p0 - p_nc) / (1 - p_nc)`` against the no-change classifier.

    Source: Žliobaitė, Bifet, Read, Pfahringer, Holmes (2015), "Evaluation methods and
    decision theory for classification of streaming data with temporal dependence", eq. 4.
    Below 0 means worse than predicting the previous label.
    """
    if not len(y_true):
        return float("nan")
    p0, pnc = np.mean(y_true == y_pred), np.mean(y_true == y_no_change)
    return 0.0 if pnc >= 1.0 else float((p0 - pnc) / (1.0 - pnc))


def score(y_true: np.ndarray, y_pred: np.ndarray, y_no_change: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy, kappa and kappa-temporal in one dict."""
    return {
        "accuracy": accuracy(y_true, y_pred),
        "kappa": cohen_kappa(y_true, y_pred, num_classes),
        "kappa_temporal": kappa_temporal(y_true, y_pred, y_no_change),
    }


def window_accuracy(y_true: np.ndarray, y_pred: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-window accuracy: ``(window ids, accuracy of each)``, ids sorted."""
    ids, inverse = np.unique(window, return_inverse=True)
    hits = np.bincount(inverse, weights=(y_true == y_pred).astype(np.float64))
    return ids, hits / np.bincount(inverse)


def score_rows(rows: Mapping[str, np.ndarray], static_windows: int, num_classes: int) -> tuple[dict, dict]:
    """Scores and per-window accuracy curves of a run's served rows (``predictions.npz``).

    Args:
        rows: arrays of equal length in stream order: ``window``, ``label``, ``prediction``
            (the served answer, ``-1`` if the request failed), ``last_revealed`` (the newest
            label known when the row was served) and optionally ``static_prediction``
            (``-1`` where the static model did not answer).
        static_windows: rows of windows before this are the static model's training data
            and are not scored.
        num_classes: number of classes.

    Returns:
        ``(scores, curves)``: scores by model name (see :func:`score`); curves by name,
        each ``(window ids, accuracy)``.

    Examples:
        >>> r = {"window": np.array([0, 1, 1, 2, 2]), "label": np.array([1, 0, 1, 1, 1]),
        ...      "prediction": np.array([1, 0, 0, 1, -1]), "last_revealed": np.array([0, 1, 1, 1, 1])}
        >>> scores, curves = score_rows(r, 1, 2)
        >>> scores["dynamic (served)"]["accuracy"], curves["dynamic (served)"][1].tolist()
        (0.6666666666666666, [0.5, 1.0])
    """
    win, y, pred = rows["window"], rows["label"], rows["prediction"]
    # No-change with zero delay: the previous row's label (one the served model could not see yet).
    prev = np.concatenate([[0], y[:-1]])
    ev = win >= static_windows
    ok = ev & (pred >= 0)
    scores = {"dynamic (served)": score(y[ok], pred[ok], prev[ok], num_classes)}
    curves = {"dynamic (served)": window_accuracy(y[ok], pred[ok], win[ok])}
    static = rows.get("static_prediction")
    if static is not None and (ev & (static >= 0)).any():
        st = ev & (static >= 0)
        scores["static (frozen after training)"] = score(y[st], static[st], prev[st], num_classes)
        curves["static"] = window_accuracy(y[st], static[st], win[st])
    last = rows["last_revealed"]
    scores["no-change (same label delay)"] = score(y[ev], last[ev], prev[ev], num_classes)
    scores["no-change (previous row, delay 0)"] = score(y[ev], prev[ev], prev[ev], num_classes)
    curves["no-change (same delay)"] = window_accuracy(y[ev], last[ev], win[ev])
    return scores, curves


REGRESSION_NO_CHANGE = "no-change (zero change)"


def score_regression_rows(rows: Mapping[str, np.ndarray], static_windows: int) -> tuple[dict, dict]:
    """Scores and per-window error curves of a regression run's served rows.

    Args:
        rows: in stream order: ``window`` ``(n,)``, ``label`` ``(n, k)`` targets, ``prediction``
            ``(n, k)`` served outputs (NaN where a request failed), optionally ``static_prediction``
            ``(n, k)`` (NaN where the static model did not answer) and ``no_change`` ``(n, k)``:
            the target that means "no change" (for standardised deltas: ``-mean / std``).
        static_windows: rows of earlier windows are not scored.

    Returns:
        ``(scores, curves)``: scores by model, ``{"mse", "mae", "rows"}`` (errors averaged over
        the ``k`` outputs); curves by name, ``(window ids, mse per window)``.

    Examples:
        >>> r = {"window": np.array([0, 1, 1]), "label": np.array([[0.0], [1.0], [2.0]]),
        ...      "prediction": np.array([[9.0], [1.0], [1.0]]), "no_change": np.zeros((3, 1))}
        >>> score_regression_rows(r, 1)[0]["dynamic (served)"]
        {'mse': 0.5, 'mae': 0.5, 'rows': 2}
    """
    win, y = rows["window"], rows["label"]
    ev = win >= static_windows
    scores, curves = {}, {}
    named = {
        "dynamic (served)": rows["prediction"],
        "static (frozen after training)": rows.get("static_prediction"),
        REGRESSION_NO_CHANGE: rows.get("no_change"),
    }
    for name, pred in named.items():
        if pred is None:
            continue
        ok = ev & np.isfinite(pred).all(axis=1)
        if not ok.any():
            continue
        se, ae = ((pred[ok] - y[ok]) ** 2).mean(axis=1), np.abs(pred[ok] - y[ok]).mean(axis=1)
        scores[name] = {"mse": float(se.mean()), "mae": float(ae.mean()), "rows": int(ok.sum())}
        ids = np.unique(win[ok])
        curves[name.split(" (")[0] if name != "dynamic (served)" else name] = (
            ids,
            np.array([se[win[ok] == i].mean() for i in ids]),
        )
    return scores, curves


def phase_mse(rows: Mapping[str, np.ndarray], static_windows: int) -> list[dict[str, Any]]:
    """Like :func:`phase_accuracy` for regression: mean squared error of the served and the static model per phase."""
    ev = rows["window"] >= static_windows
    out = []
    static = rows.get("static_prediction")
    for k in np.unique(rows["phase"][ev]):
        m = ev & (rows["phase"] == k)
        entry: dict[str, Any] = {"phase": int(k), "rows": int(m.sum())}
        for name, pred in (("dynamic", rows["prediction"]), ("static", static)):
            if pred is None:
                entry[name] = None
                continue
            ok = m & np.isfinite(pred).all(axis=1)
            entry[name] = float(((pred[ok] - rows["label"][ok]) ** 2).mean()) if ok.any() else None
        out.append(entry)
    return out


def phase_accuracy(rows: Mapping[str, np.ndarray], static_windows: int) -> list[dict[str, Any]]:
    """Accuracy of the served and the static model in each scenario phase (scored rows only).

    Args:
        rows: as in :func:`score_rows`, plus ``phase`` ``(n,)`` int64.
        static_windows: rows of earlier windows are not scored.

    Returns:
        One entry per phase with scored rows: ``{"phase", "rows", "dynamic", "static"}``
        (``static`` is ``None`` when the static model did not answer).

    Examples:
        >>> r = {"window": np.array([0, 1, 1, 2]), "label": np.array([1, 0, 1, 1]), "phase": np.array([0, 0, 1, 1]),
        ...      "prediction": np.array([1, 0, 0, 1]), "static_prediction": np.array([-1, 1, 1, 1])}
        >>> phase_accuracy(r, 1)
        [{'phase': 0, 'rows': 1, 'dynamic': 1.0, 'static': 0.0}, {'phase': 1, 'rows': 2, 'dynamic': 0.5, 'static': 1.0}]
    """
    ev = rows["window"] >= static_windows
    out = []
    static = rows.get("static_prediction")
    for k in np.unique(rows["phase"][ev]):
        m = ev & (rows["phase"] == k)
        y, pred = rows["label"][m], rows["prediction"][m]
        ok = pred >= 0
        st = None
        if static is not None and (static[m] >= 0).any():
            sm = static[m] >= 0
            st = accuracy(y[sm], static[m][sm])
        out.append(
            {
                "phase": int(k),
                "rows": int(m.sum()),
                "dynamic": accuracy(y[ok], pred[ok]) if ok.any() else None,
                "static": st,
            }
        )
    return out


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 99)) -> dict[str, float | None]:
    """``{"p50": ..., "p99": ..., "max": ...}`` of ``values`` (``None`` when empty)."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    out: dict[str, float | None] = {f"p{q:g}": (float(np.percentile(arr, q)) if arr.size else None) for q in qs}
    out["max"] = float(arr.max()) if arr.size else None
    return out


def write_report(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write the report as indented JSON (``nan`` becomes ``null``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)

    def clean(o: Any) -> Any:
        if isinstance(o, float) and not np.isfinite(o):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, np.generic):
            return clean(o.item())
        return o

    p.write_text(json.dumps(clean(report), indent=2))
    return p


def _fmt(v: Any, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        if unit == "int":
            return f"{v:,.0f}"
        return f"{v * 1000:.1f} ms" if unit == "ms" else (f"{v:.2%}" if unit == "%" else f"{v:.4f}")
    return f"{v:,}" if isinstance(v, int) else str(v)


def format_table(report: Mapping[str, Any]) -> str:
    """The report as a plain-text table for the terminal."""
    run, fresh, http = report["run"], report["freshness_s"], report["http"]
    lines = [
        f"{'rows served / trained':34s} {_fmt(run['rows_served'])} / {_fmt(run['rows_trained'])}",
        f"{'windows (size)':34s} {_fmt(run['windows'])} ({run['window_size']} rows)",
        f"{'rows quarantined':34s} {_fmt(run['rows_quarantined'])}",
        *([f"{'files quarantined':34s} {len(run['files_quarantined'])}"] if run.get("files_quarantined") else []),
        f"{'model versions published / rejected':34s} {_fmt(run['versions_published'])} / {_fmt(run['versions_rejected'])}",
        f"{'freshness p50 / p99 (all replicas)':34s} {_fmt(fresh['p50'], 'ms')} / {_fmt(fresh['p99'], 'ms')}",
        (
            f"{'HTTP latency p50 / p99 (less hold)':34s} {_fmt(http['latency_s']['p50'], 'ms')} / "
            f"{_fmt(http['latency_s']['p99'], 'ms')}"
        ),
        *(
            [f"{'HTTP hold p50 / p99':34s} {_fmt(held['p50'], 'ms')} / {_fmt(held['p99'], 'ms')}"]
            if (held := http.get("held_s"))
            else []
        ),
        f"{'HTTP requests / failed':34s} {_fmt(http['requests'])} / {_fmt(http['failed'])}",
        (
            f"{'label delay rows p50 / max':34s} {_fmt(run['label_delay_rows']['p50'], 'int')} / "
            f"{_fmt(run['label_delay_rows']['max'], 'int')}"
        ),
        f"{'start -> first served update':34s} {_fmt(run['first_update_served_s'])} s",
        *_drift_lines(report.get("drift")),
        (
            f"{'trainer MSE before update':34s} {_fmt(report.get('trainer_pre_update_mse'))}"
            if "trainer_pre_update_mse" in report
            else f"{'trainer accuracy before update':34s} {_fmt(report.get('trainer_pre_update_accuracy'), '%')}"
        ),
        (
            f"{'peak memory, driver + local Ray':34s} RSS {run.get('peak_rss_bytes', 0) / 2**30:.2f} GiB, "
            f"PSS {run.get('peak_pss_bytes', float('nan')) / 2**30:.2f} GiB"
        ),
        f"{'wall time':34s} {run['wall_s']:.1f} s"
        + (
            f" (stream {run['stream_s']:.1f} s: {run['rows_served'] / run['stream_s']:,.0f} rows/s)"
            if run.get("stream_s")
            else ""
        ),
        "",
        (
            f"prequential scores on rows {_fmt(report['eval_rows']['start'])}-{_fmt(report['eval_rows']['end'])} "
            f"(after the static model's {report['eval_rows']['static_windows']} training windows; "
            f"the dynamic model on rows it answered)"
        ),
    ]
    if any("mse" in s for s in report["scores"].values()):
        lines.append(f"{'model':34s} {'MSE':>9s} {'MAE':>8s}")
        for name, s in report["scores"].items():
            lines.append(f"{name:34s} {_fmt(s['mse']):>9s} {_fmt(s['mae']):>8s}")
        return "\n".join(lines)
    lines.append(f"{'model':34s} {'accuracy':>9s} {'kappa':>8s} {'kappa_t':>8s}")
    for name, s in report["scores"].items():
        lines.append(
            f"{name:34s} {_fmt(s['accuracy'], '%'):>9s} {_fmt(s['kappa']):>8s} {_fmt(s['kappa_temporal']):>8s}"
        )
    return "\n".join(lines)


DECISION_COLORS = {"no-op": "0.6", "head": "tab:cyan", "all": "tab:purple", "reset": "black", "rollback": "tab:brown"}


def plot_accuracy(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    title: str,
    decisions: Sequence[tuple[int, str]] = (),
    ylabel: str = "accuracy per window",
) -> Path:
    """Plot per-window accuracy curves ``{name: (window ids, accuracy)}`` to a PNG.

    ``decisions`` are ``(window, decision)`` pairs (drift signals and what the policy
    did), drawn as vertical lines coloured by decision. With another ``ylabel`` (an error per
    window, e.g. MSE) the y axis is logarithmic instead of ``[0, 1]``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5))
    k = max(1, max(len(y) for _, y in series.values()) // 60)  # smooth long runs: moving average of k windows
    for name, (x, y) in series.items():
        ys = np.convolve(y, np.ones(k) / k, mode="valid") if k > 1 else y
        ax.plot(x[k - 1 :], ys, label=name, lw=1.4)
    seen: set[str] = set()
    first = min((x[0] for x, _ in series.values() if len(x)), default=0)
    for window, decision in (d for d in decisions if d[0] >= first):
        ax.axvline(
            window,
            color=DECISION_COLORS.get(decision, "k"),
            lw=0.8,
            alpha=0.7,
            ls=":" if decision == "no-op" else "-",
            label=None if decision in seen else f"drift: {decision}",
        )
        seen.add(decision)
    ax.set_xlabel("window")
    ax.set_ylabel(ylabel + (f" (mean of {k})" if k > 1 else ""))
    if ylabel.startswith("accuracy"):
        ax.set_ylim(0, 1)
    else:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def recovery_windows(
    accuracy: np.ndarray, drift_window: int, pre_windows: int = 10, fraction: float = 0.95
) -> int | None:
    """Windows after a drift until accuracy regains ``fraction`` of its pre-drift level.

    The pre-drift level is the mean of the ``pre_windows`` windows before ``drift_window``.

    Args:
        accuracy: ``(num_windows,)`` accuracy of each window.
        drift_window: index of the first window of the new concept.

    Returns:
        ``w - drift_window`` for the first ``w >= drift_window`` whose accuracy is at least
        ``fraction * level`` (0: no visible loss), or ``None`` if it never recovers.

    Examples:
        >>> recovery_windows(np.array([0.9, 0.9, 0.5, 0.7, 0.88]), 2, pre_windows=2)
        2
    """
    level = float(np.mean(accuracy[max(0, drift_window - pre_windows) : drift_window]))
    after = np.flatnonzero(accuracy[drift_window:] >= fraction * level)
    return int(after[0]) if len(after) else None


def detection_delays(
    detections: Sequence[int], drift_points: Sequence[int], max_delay: int
) -> tuple[list[int | None], int]:
    """Match detections to known drift points: delays and false alarms.

    A detection at offset ``d`` is a true detection of drift point ``p`` when it is the
    first detection with ``p <= d < p + max_delay`` (and before the next drift point);
    every other detection is a false alarm.

    Returns:
        ``(delays, false_alarms)``: one delay in rows per drift point (``None`` = missed).

    Examples:
        >>> detection_delays([120, 1030, 1100, 3000], [1000, 2000], max_delay=500)
        ([30, None], 3)
    """
    points, found = sorted(drift_points), sorted(detections)
    delays: list[int | None] = []
    used: set[int] = set()
    for i, p in enumerate(points):
        end = min(p + max_delay, points[i + 1] if i + 1 < len(points) else p + max_delay)
        hit = next((d for d in found if p <= d < end), None)
        delays.append(None if hit is None else hit - p)
        if hit is not None:
            used.add(hit)
    return delays, sum(1 for d in detections if d not in used)


def gem_metrics(r: np.ndarray, b: np.ndarray | None = None) -> dict[str, float]:
    """ACC, BWT and FWT of a task sequence (Lopez-Paz & Ranzato 2017, GEM, section 4).

    Args:
        r: ``(T, T)`` float, ``r[i, j]`` = test accuracy on task ``j`` after learning task ``i``.
        b: ``(T,)`` test accuracy of each task at random initialisation (needed for FWT).

    Returns:
        ``{"ACC": mean_j r[T-1, j], "BWT": mean_{j<T-1} (r[T-1, j] - r[j, j]),
        "FWT": mean_{j>0} (r[j-1, j] - b[j])}`` (FWT is ``nan`` without ``b``).

    Examples:
        >>> r = np.array([[0.9, 0.2], [0.7, 0.8]])
        >>> {k: round(v, 3) for k, v in gem_metrics(r, np.array([0.1, 0.1])).items()}
        {'ACC': 0.75, 'BWT': -0.2, 'FWT': 0.1}
    """
    t = r.shape[0]
    acc = float(r[-1].mean())
    bwt = float(np.mean([r[-1, j] - r[j, j] for j in range(t - 1)])) if t > 1 else 0.0
    fwt = float(np.mean([r[j - 1, j] - b[j] for j in range(1, t)])) if b is not None and t > 1 else float("nan")
    return {"ACC": acc, "BWT": bwt, "FWT": fwt}


def _drift_lines(drift: Mapping[str, Any] | None) -> list[str]:
    if not drift or drift.get("detector") in (None, "none"):
        return []
    decisions = ", ".join(f"{n} {k}" for k, n in sorted(drift["decisions"].items())) or "none"
    rec = drift.get("recovery_windows") or {}
    return [
        f"{'drift signals (' + drift['detector'] + ')':34s} {len(drift['events'])}: {decisions} (policy {drift['policy']})",
        f"{'recovery windows p50 / p90':34s} {_fmt(rec.get('p50'), 'int')} / {_fmt(rec.get('p90'), 'int')}",
    ]


class RssSampler:
    """Samples, in a daemon thread, the memory of this process and its descendants.

    For an in-process local cluster that is every Ray process (GCS, raylet, workers,
    replicas). :attr:`peak_bytes` is the peak of the summed RSS, which counts shared
    pages (the object store, libraries) once per process that maps them;
    :attr:`peak_pss_bytes` is the peak summed PSS, which splits shared pages among
    their users (``nan`` where the kernel does not report PSS). Read both after :meth:`stop`.

    RSS is cheap to read (``/proc/<pid>/statm``); PSS is not: the kernel walks every mapping of every process
    (``smaps_rollup``: about 4 ms of CPU a process, 95 ms for a main job's 24 on 2 cores, where the driver
    and the Train worker wait for a core). So PSS is sampled every ``pss_every`` RSS samples, and at the stop.

    Args:
        interval_s: seconds between RSS samples.
        pss_every: sample PSS at every ``pss_every``-th RSS sample (the first one included).
    """

    def __init__(self, interval_s: float = 1.0, pss_every: int = 10) -> None:
        import threading

        self.interval_s, self.pss_every = interval_s, pss_every
        self.peak_bytes = 0
        self.peak_pss_bytes = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _sample(self, pss: bool) -> tuple[int, float]:
        import psutil

        me = psutil.Process()
        rss, pss_sum = 0, 0.0
        for p in [me, *me.children(recursive=True)]:
            try:
                if pss:
                    info = p.memory_full_info()
                    pss_sum += getattr(info, "pss", float("nan"))
                else:
                    info = p.memory_info()
                rss += info.rss
            except psutil.Error:
                pass
        return rss, pss_sum

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            with_pss = n % self.pss_every == 0
            rss, pss = self._sample(with_pss)
            self.peak_bytes = max(self.peak_bytes, rss)
            if with_pss:
                self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
            n += 1
            self._stop.wait(self.interval_s)
        rss, pss = self._sample(True)  # and once more at the stop, the end of the run
        self.peak_bytes = max(self.peak_bytes, rss)
        self.peak_pss_bytes = max(self.peak_pss_bytes, pss)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_bytes
