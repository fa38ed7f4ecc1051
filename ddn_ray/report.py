"""The main job's report: every served answer joined with its revealed label, scored and written.

The stream loop records each window it served in a :class:`ServedLog` (the window's revealed
labels, the answers the replicas gave before the labels existed, the static model's answers,
the ids), and writes it to durable storage as it goes (:mod:`ddn_ray.served`); :func:`build` joins them,
with what earlier attempts of a resumed run served before it, with the controller's version log and scores the served
dynamic model against the static model frozen after ``static_windows`` windows and the
no-change baseline with the same label delay (prequential evaluation, Gama et al. 2013, "On
evaluating stream learning algorithms"); :func:`write` saves ``report.json``,
``predictions.npz`` (one row per served row) and the plot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ddn_ray import evaluate

if TYPE_CHECKING:
    from ddn_ray import config, stream
    from ddn_ray.client import Answers
    from ddn_ray.feeds import Feed
    from ddn_ray.served import Prior, ServedStore

__all__ = ["RunFacts", "ServedLog", "build", "drift_section", "last_revealed", "window_rows", "write"]


def window_rows(
    *,
    window: stream.Window,
    answers: Answers,
    static_prediction: np.ndarray | None,
    ids: list[str | None] | None,
    regression: bool,
) -> dict[str, np.ndarray]:
    """One served window as the report's columns: ``offset``, ``window`` (``(n,)`` int64), ``label`` (``(n,)``
    int64 classes or ``(n, k)`` float targets), ``prediction``, ``version``, ``static_prediction`` (``-1`` /
    NaN before the static model was frozen), and ``id`` (``(n,)`` str) when the stream has ids."""
    labels = window.labels
    if static_prediction is None:
        static = np.full(labels.shape, np.nan) if regression else np.full(len(window), -1, dtype=np.int64)
    else:
        static = static_prediction.reshape(labels.shape) if regression else static_prediction
    rows = {
        "offset": np.asarray(window.offsets, np.int64),
        "window": np.full(len(window), window.index, np.int64),
        "label": labels,
        "prediction": answers.predictions,
        "version": answers.versions,
        "static_prediction": static,
    }
    if ids:
        rows["id"] = np.array(ids, dtype=object).astype(str)
    return rows


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    keys = [k for k in parts[0] if all(k in p for p in parts)]
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def last_revealed(windows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each row, the last label of the window served before its own (zeros for the first window)."""
    starts = np.flatnonzero(np.r_[True, windows[1:] != windows[:-1]])
    sizes = np.diff(np.r_[starts, len(windows)])
    previous = np.concatenate([np.zeros_like(labels[:1]), labels[starts[1:] - 1]])
    return np.repeat(previous, sizes, axis=0)


@dataclass
class ServedLog:
    """What the stream loop keeps of every window it served, in stream order.

    Attributes:
        regression: the model's task is a regression (targets and outputs ``(n, k)`` floats).
        sink: where each window's rows go as soon as it is added (``None``: memory only).
        prior: what earlier attempts of the run served before this attempt's first window (a resumed run).
        windows: the revealed windows (labels: ``(n,)`` int64 classes or ``(n, k)`` float32 targets).
        answers: the replicas' answers to each window, aligned with its rows.
        rows: each window's report columns (:func:`window_rows`).
        rows_trained: rows handed to the Train workers (whole shards only).
    """

    regression: bool = False
    sink: ServedStore | None = None
    prior: Prior | None = None
    windows: list[stream.Window] = field(default_factory=list)
    answers: list[Answers] = field(default_factory=list)
    rows: list[dict[str, np.ndarray]] = field(default_factory=list)
    rows_trained: int = 0

    def add(
        self,
        *,
        window: stream.Window,
        answers: Answers,
        static_prediction: np.ndarray | None,
        ids: list[str | None] | None,
        rows_trained: int,
    ) -> None:
        """Record a served window once its labels were revealed, and write it to the sink."""
        rows = window_rows(
            window=window, answers=answers, static_prediction=static_prediction, ids=ids, regression=self.regression
        )
        if self.sink is not None:
            self.sink.write(rows, window=window.index, rows_trained=rows_trained)
        self.windows.append(window)
        self.answers.append(answers)
        self.rows.append(rows)
        self.rows_trained += rows_trained

    def __len__(self) -> int:
        return len(self.windows)


@dataclass(frozen=True)
class RunFacts:
    """What the stream loop measured besides the answers.

    Attributes:
        run_name: the run's name (its checkpoint and report directory).
        num_classes: the model's output width at the start.
        static_windows: the window index the static model was frozen at (its training windows are not scored).
        first_update_s: seconds from the job's start until a request was answered by a trained version.
        sync_timeouts: windows answered in part by an older version than the one trained through the window
            before (a replica did not load it within ``serve.version_wait_s``, ``?min_window`` and then
            ``?min_version``), and a last version not on every replica within ``controller.sync_timeout_s`` at the
            stream's end.
        driver_s: where the driver's time went, seconds per window for each phase: ``serve`` (the window's
            requests, their wait in the replicas included: for the window before to be handed off, learned and
            published, and for its version to be loaded), ``wait_learned`` (the controller's word on which
            version that made, once the answers are in; the whole wait for the first windows, whose requests go
            after it), ``hand_off`` (labels revealed, the window put in the trainer's queue), ``log`` (the served
            answers and the static model's recorded).
        requests_by_ingress: the HTTP requests sent to the replicas' own servers (``direct``, Serve's direct
            ingress) and through Serve's proxy (``proxy``, retries of refused direct ones included).
    """

    run_name: str
    num_classes: int
    static_windows: int
    first_update_s: float | None
    sync_timeouts: int
    driver_s: Mapping[str, Sequence[float]] = field(default_factory=dict)
    requests_by_ingress: Mapping[str, int] = field(default_factory=dict)


def build(
    *, job: config.JobConfig, log: ServedLog, summary: dict[str, Any], feed: Feed, facts: RunFacts
) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """Join served answers with revealed labels; score the dynamic, static and no-change models.

    A resumed run's report covers every row of the stream once: ``log.prior``'s rows (earlier attempts,
    before this attempt's first offset) and this attempt's (``run.attempts`` lists each attempt's share).

    Args:
        job: the job's config.
        log: the served windows (at least one).
        summary: the controller's :meth:`~ddn_ray.controller.ControllerActor.summary`: versions, progress,
            drift decisions, replica versions.
        feed: the stream (phases, no-change baseline, quarantine, use-case sections).
        facts: the loop's own measurements.

    Returns:
        ``(report, curves, rows)``: the JSON-able report, the per-window score curves the plot draws,
        and one array per column of ``predictions.npz`` (``offset``, ``window``, ``label``, ``prediction``,
        ``version``, ``static_prediction``, ``phase``, ``last_revealed`` or ``no_change``, ``id``).
    """
    served, answers, static_windows = log.windows, log.answers, facts.static_windows
    regression = job.model.task == "regression"
    current = _concat(log.rows)
    versions = {v["version"]: v for v in summary["versions"]}
    current["trained_end"] = np.array(
        [versions[v]["meta"].get("trained_end_offset", 0) if v >= 0 else 0 for v in current["version"]], np.int64
    )
    rows = _concat([log.prior.rows, current]) if log.prior is not None else current
    trained_end = rows.pop("trained_end")
    y, win, offsets = rows["label"], rows["window"], rows["offset"]
    rows["phase"] = feed.phase(offsets)
    # No-change with the model's delay: the last label revealed before the window was served.
    revealed_before = last_revealed(win, y)
    attempts = [*(log.prior.attempts if log.prior is not None else [])]
    attempts.append(
        {
            "attempt": log.sink.attempt if log.sink is not None else None,
            "rows": len(current["offset"]),
            "first_offset": int(current["offset"][0]),
            "end_offset": int(current["offset"][-1]) + 1,
        }
    )
    if regression:
        rows["no_change"] = feed.no_change(y, revealed_before)
        scores, curves = evaluate.score_regression_rows(rows, static_windows)
    else:
        rows["last_revealed"] = revealed_before
        scores, curves = evaluate.score_rows(rows, static_windows, int(max(facts.num_classes, y.max(initial=0) + 1)))
    fresh = [v["all_served_s"] for v in summary["versions"] if v["version"] >= 1]
    latencies = [s for a in answers for s in a.latencies_s]  # less the hold in the replica
    holds = [s for a in answers for s in a.held_s]
    errors = [e for a in answers for e in a.errors]
    # a window trained again after a restart of the worker group counts once: its last training
    progress = [p for p in {p["index"]: p for p in summary["progress"]}.values() if p["index"] >= static_windows]
    trainer_rows = sum(p["num_rows"] for p in progress)
    trainer = (
        {"trainer_pre_update_mse": sum(p["pre_loss"] * p["num_rows"] for p in progress) / max(trainer_rows, 1)}
        if regression
        else {
            "trainer_pre_update_accuracy": sum(p["pre_accuracy"] * p["num_rows"] for p in progress)
            / max(trainer_rows, 1)
        }
    )
    quarantine = feed.quarantine
    ev = win >= static_windows
    report = {
        "run": {
            "name": facts.run_name,
            "rows_served": len(y),
            "rows_trained": int(log.rows_trained) + (log.prior.rows_trained if log.prior is not None else 0),
            "windows": len(np.unique(win)),
            # a resumed run: each attempt's rows in this report (earlier attempts' from their served logs)
            "attempts": attempts,
            "window_size": job.stream.window_size,
            "rows_quarantined": len(quarantine),
            "quarantined": list(zip(quarantine.offsets, quarantine.reasons))[:100],
            # a landing dir's files it could not read (unknown format, truncated, wrong columns): path, reason
            "files_quarantined": [list(f) for f in quarantine.files],
            "versions_published": len(summary["versions"]) - 1,
            "versions_rejected": len(summary["rejected"]),
            # what each version's replicas served: the learner's model or its distilled student (distill.student)
            "served_models": dict(
                Counter(v["meta"].get("served_model", "teacher") for v in summary["versions"] if v["version"] >= 1)
            ),
            "label_delay_rows": evaluate.percentiles((offsets - trained_end).tolist(), (50, 99)),
            "first_update_served_s": facts.first_update_s,
            "replica_sync_timeouts": facts.sync_timeouts,
            "driver_window_s": {
                phase: {**evaluate.percentiles(v, (50, 99)), "mean": float(np.mean(v)) if len(v) else None}
                for phase, v in facts.driver_s.items()
            },
            "num_workers": job.train.num_workers,
            "num_replicas": job.serve.num_replicas,
            "window_versions": [
                [w.index, int(a.versions.min()), int(a.versions.max())] for w, a in zip(served, answers)
            ],
            "replica_versions_at_end": summary["replica_versions"],
            "traffic_route": feed.route,
        },
        "data": feed.summary(),
        "eval_rows": {
            "start": int(offsets[ev][0]) if ev.any() else None,
            "end": int(offsets[-1]) + 1,
            "static_windows": static_windows,
            "num_classes": facts.num_classes,
        },
        "scores": scores,
        "phases": (evaluate.phase_mse if regression else evaluate.phase_accuracy)(rows, static_windows),
        **feed.report_extras(rows, static_windows),
        **trainer,
        "freshness_s": evaluate.percentiles(fresh, (50, 99)),
        "http": {
            "requests": len(latencies),
            "failed": len(errors),
            "by_ingress": {"direct": 0, "proxy": 0, **facts.requests_by_ingress},
            "errors": errors[:20],
            # a request's round trip less its hold in the replica (what answering took once its model was there),
            # and the hold: for the version or window it asked for (Server-Timing: hold)
            "latency_s": evaluate.percentiles(latencies, (50, 99)),
            "held_s": evaluate.percentiles(holds, (50, 99)),
        },
        "drift": drift_section(job, summary["decisions"], None if regression else curves["dynamic (served)"]),
        "versions": summary["versions"][-5:],
        "config": job.model_dump(mode="json"),
    }
    return report, curves, rows


def drift_section(
    job: config.JobConfig, events: list[dict[str, Any]], served: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, Any]:
    """The controller's decision log: each drift signal with what it saw and the decision it led to.

    Each event also gets ``recovery_windows``: windows after the signal until the served
    accuracy of a window regains 95% of its mean over the 10 windows before the signal
    (``None``: never, or the signal came before the scored windows, or ``served`` is ``None``:
    a regression, not scored this way).

    Args:
        job: the job's config (detector and policy names).
        events: the controller's drift decisions, each a dict with at least ``window`` and ``decision``.
        served: ``(window ids, served accuracy per window)``, or ``None``.
    """
    ids, acc = served if served is not None else (np.zeros(0, np.int64), np.zeros(0))
    at = {int(w): i for i, w in enumerate(ids)}
    counts = Counter(e["decision"] for e in events)
    for e in events:
        i = at.get(e["window"] + 1)
        e["recovery_windows"] = evaluate.recovery_windows(acc, i) if i is not None and i >= 10 else None
    recoveries = [e["recovery_windows"] for e in events if e["recovery_windows"] is not None]
    return {
        "detector": job.drift.detector,
        "policy": job.policy.name,
        "decisions": dict(counts),
        "recovery_windows": evaluate.percentiles(recoveries, (50, 90)),
        "events": events,
    }


def write(
    report: dict[str, Any], curves: dict[str, Any], rows: dict[str, np.ndarray], *, job: config.JobConfig
) -> dict[str, Any]:
    """Save ``predictions.npz``, the plot (``report.plot``) and ``report.json`` under
    ``report.output_dir/<run name>``, print the score table, and return ``report`` with its ``files``."""
    run_name = report["run"]["name"]
    out = Path(job.report.output_dir) / run_name
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "predictions.npz", **rows)  # type: ignore[arg-type]  # numpy stubs: no allow_pickle key  # served answers joined with the revealed labels
    report["files"] = {"report": str(out / "report.json"), "predictions": str(out / "predictions.npz")}
    if job.report.plot:
        marks = [(e["window"], e["decision"]) for e in report["drift"]["events"]]
        what = (
            ("served accuracy", "accuracy per window")
            if job.model.task == "classification"
            else ("served one-step error", "MSE per window")
        )
        report["files"]["plot"] = str(
            evaluate.plot_accuracy(curves, out / "accuracy.png", f"{run_name}: {what[0]}", marks, what[1])
        )
    evaluate.write_report(report, out / "report.json")
    print(evaluate.format_table(report))
    print(f"report: {report['files']}")
    return report
