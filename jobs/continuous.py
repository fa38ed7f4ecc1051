"""The main job: continuous train-and-serve on a drifting stream (Elec2 by default; any
``data`` of ``ddn_ray.usecases.scenarios``: Fashion-MNIST and BBC News scenarios too).

Run:  python jobs/continuous.py --config jobs/configs/elec2.yaml [--set train.lr=0.003 ...]
  or: ddn-ray run --config jobs/configs/elec2.yaml
  or: ray job submit --working-dir . -- python jobs/continuous.py --config jobs/configs/elec2.yaml

Per window of the stream: (1) wait until training is at most ``max_lag_windows``
behind and every replica serves the latest version, (2) send the window's features
to the Serve endpoint over HTTP and keep the answers, (3) reveal the labels: hand the
window to the Train workers as Ray Dataset shards. Workers test-then-train, publish
weights to the controller, and checkpoint; replicas long-poll the controller.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.util.queue import Queue
from tqdm import tqdm

from ddn_ray import checkpoint as checkpoint_io
from ddn_ray import config, evaluate, feeds, models, stream, usecase
from ddn_ray.client import TrafficClient
from ddn_ray.controller import ControllerActor
from ddn_ray.errors import DataError
from ddn_ray.serve import build_app
from ddn_ray.train import WindowItem, WorkerArgs, train_loop_per_worker


def start_ray(cfg: config.JobConfig) -> bool:
    """Join ``RAY_ADDRESS`` or start a local cluster; return whether this call started a local cluster
    (then the job shuts Serve and Ray down at its end; a joined cluster keeps them)."""
    if ray.is_initialized():
        return False
    env = {"env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}}
    # A local cluster inherits this: Serve's proxy gets 30 s (not 5) to pass its readiness check,
    # which a loaded 2-core machine needs.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "30")
    if os.environ.get("RAY_ADDRESS"):  # a submitted job, or a user joining a cluster: its CPUs, its dashboard
        ray.init(namespace=cfg.ray.namespace, log_to_driver=False)  # the job's own runtime_env applies
        return False
    ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=cfg.ray.include_dashboard,
             namespace=cfg.ray.namespace, runtime_env=env, log_to_driver=False)
    return True


def storage_path(cfg: config.JobConfig) -> str:
    s = cfg.storage_path
    return s if "://" in s else str(Path(s).expanduser().resolve())


def main(cfg: config.JobConfig) -> dict[str, Any]:
    """Run the job end to end and return its report (also written as JSON + PNG)."""
    t0 = time.monotonic()
    # A user's table (data.source) or a built-in use case's stream (data.name); checked before Ray starts.
    feed = feeds.TableFeed(job=cfg) if cfg.data.source is not None else usecase.feed(cfg)
    started_ray = start_ray(cfg)
    rss = evaluate.RssSampler().start()
    run_name = cfg.run_name or f"{feed.run_stem()}-{time.strftime('%Y%m%d-%H%M%S')}"
    feature_names, nc = feed.feature_names, feed.num_classes
    nf, workers = len(feature_names), cfg.train.num_workers

    # Controller: owns every version; version 0 is the seeded initial model.
    controller = ray.remote(ControllerActor).options(
        name=cfg.controller.name, namespace=cfg.ray.namespace, num_cpus=0, max_concurrency=1000
    ).remote(replica_ttl_s=max(30.0, 3 * cfg.controller.poll_timeout_s))
    ray.get(controller.set_model_spec.remote(checkpoint_io.model_spec(cfg.model, nf, nc, feature_names, feed.inputs)))
    init = models.build(cfg.model, nf, nc, seed=cfg.train.seed)
    ray.get(controller.publish.remote(models.state_to_numpy(init), {"window": -1, "trained_end_offset": 0,
                                                                    "num_classes": nc}, feed.initial_preprocessing()))

    # Serve: replicas load the latest version before they take traffic.
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(build_app(cfg, nf, nc, feed.inputs), name=cfg.serve.app_name, route_prefix=cfg.serve.route_prefix)
    url = f"http://{cfg.serve.host}:{cfg.serve.port}{cfg.serve.route_prefix.rstrip('/')}{feed.route}"
    client = TrafficClient(url, cfg.serve.request_rows, cfg.serve.num_clients, cfg.serve.request_timeout_s, feed.body,
                           outputs=nc if cfg.model.task == "regression" else None, answer_key=feed.answer_key)

    # Train: one long-lived fit(); windows arrive through one queue per rank.
    queues = [Queue(actor_options={"num_cpus": 0}) for _ in range(workers)]
    args = WorkerArgs(job=cfg, feature_names=feature_names, num_classes=nc, queues=queues, controller=controller,
                      inputs=feed.inputs)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"args": args},
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": cfg.train.cpus_per_worker}),
        run_config=RunConfig(storage_path=storage_path(cfg), name=run_name),
    )
    fit: dict[str, Any] = {}
    fit_thread = threading.Thread(target=lambda: fit.update(result=_fit(trainer, fit)), daemon=True)
    fit_thread.start()

    def wait_trained(window: int) -> None:
        """Wait for the trainer to finish ``window``, or the last window sent before it (an empty window,
        every row quarantined, is never sent)."""
        window = min(window, last_sent)
        if window < ready["next_window"]:
            return  # nothing sent yet in this run
        while ray.get(controller.wait_progress.remote(window, 5.0)) < window:
            if not fit_thread.is_alive():
                raise RuntimeError(f"the trainer stopped before window {window}: {fit.get('error')!r}")

    ready = None
    while ready is None:
        ready = ray.get(controller.wait_trainer_ready.remote(5.0))
        if ready is None and not fit_thread.is_alive():
            raise RuntimeError(f"the trainer failed to start: {fit.get('error')!r}")
    feed.start(next_offset=ready["next_offset"], preprocessing=ready.get("preprocessing"))
    last_sent = ready["next_window"] - 1  # the last window index the trainer was given

    served: list[stream.Window] = []
    answers: list[Any] = []
    static_preds: list[np.ndarray | None] = []
    ids: list[list[str | None]] = []
    static_model, first_update_s, sync_timeouts, rows_trained = None, None, 0, 0
    static_windows = ready["next_window"] + cfg.report.static_windows
    try:
        for window in tqdm(feed.windows(), desc="windows", unit="win", total=feed.total_windows(), mininterval=2.0):
            # 1. Backpressure: training at most max_lag windows behind, replicas on the latest version.
            if window.index - 1 - cfg.stream.max_lag_windows >= ready["next_window"]:
                wait_trained(window.index - 1 - cfg.stream.max_lag_windows)
            latest = ray.get(controller.latest_version.remote())
            if not ray.get(controller.wait_all_serving.remote(latest, cfg.controller.sync_timeout_s)):
                sync_timeouts += 1
            elif first_update_s is None and latest >= 1:
                first_update_s = time.monotonic() - t0
            if window.index == static_windows:  # freeze the static baseline: weights and preprocessing
                wait_trained(static_windows - 1)
                version, weights = ray.get(controller.latest_weights.remote())
                feed.snapshot_static(ray.get(controller.preprocessing.remote(version)))
                static_model = models.load_numpy_state(
                    models.build(cfg.model, nf, models.output_width(weights)), weights).eval()
            if not len(window):
                continue
            # 2. Serve the features before the labels exist anywhere in the system.
            answers.append(client.predict(*feed.request(window)))
            # 3. Reveal the labels: the window goes to training as Ray Dataset shards.
            revealed = feed.reveal(window)
            w = revealed.window
            served.append(w)
            ids.append(feed.ids(window) or [])
            static_preds.append(None if static_model is None else
                                models.predict(static_model, feed.static_inputs(window, revealed), cfg.model.task))
            for rank, shard in enumerate(stream.shard_tables(w, workers)):
                queues[rank].put(WindowItem(w.index, w.start, w.end, ray.data.from_arrow(shard),
                                            revealed.preprocessing, revealed.num_classes))
            rows_trained += (len(w) // workers) * workers
            last_sent = w.index
        for q in queues:
            q.put(None)
        fit_thread.join()
        if "error" in fit:
            raise RuntimeError(f"training failed: {fit['error']!r}")
        last = ray.get(controller.latest_version.remote())
        ray.get(controller.wait_all_serving.remote(last, cfg.controller.sync_timeout_s))
        summary = ray.get(controller.summary.remote())
    finally:
        client.close()
        serve.delete(cfg.serve.app_name)
        ray.kill(controller)
        for q in queues:
            q.shutdown(force=True)

    if not served:
        rss.stop()
        if started_ray:
            serve.shutdown()
            ray.shutdown()
        bad = feed.quarantine
        if len(bad):  # nothing was trained on: say why, with the first offsets and reasons
            first = "; ".join(f"offset {o}: {r}" for o, r in list(zip(bad.offsets, bad.reasons))[:3])
            raise DataError(f"every row of the stream was quarantined ({len(bad):,} rows), e.g. {first}")
        print(f"nothing to serve: run {run_name!r} had already trained up to offset {ready['next_offset']:,}")
        return {"run": {"name": run_name, "rows_served": 0, "resumed_at": ready["next_offset"]}}
    report, curves, rows = build_report(cfg, run_name, nc, served, answers, static_preds, summary, feed,
                                        first_update_s, sync_timeouts, rows_trained, static_windows)
    if any(ids):
        rows["id"] = np.array([i for chunk in ids for i in chunk], dtype=object).astype(str)
    report["run"]["traffic_route"] = feed.route
    report["run"]["peak_rss_bytes"] = rss.stop()
    report["run"]["peak_pss_bytes"] = rss.peak_pss_bytes
    report["run"]["wall_s"] = time.monotonic() - t0
    out = Path(cfg.report.output_dir) / run_name
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "predictions.npz", **rows)  # served answers joined with the revealed labels
    report["files"] = {"report": str(out / "report.json"), "predictions": str(out / "predictions.npz")}
    if cfg.report.plot:
        marks = [(e["window"], e["decision"]) for e in report["drift"]["events"]]
        what = ("served accuracy", "accuracy per window") if cfg.model.task == "classification" else (
            "served one-step error", "MSE per window")
        report["files"]["plot"] = str(evaluate.plot_accuracy(curves, out / "accuracy.png", f"{run_name}: {what[0]}", marks,
                                                             what[1]))
    evaluate.write_report(report, out / "report.json")
    print(evaluate.format_table(report))
    print(f"report: {report['files']}")
    if started_ray:
        serve.shutdown()
        ray.shutdown()
    return report


def _fit(trainer: TorchTrainer, into: dict[str, Any]) -> Any:
    try:
        return trainer.fit()
    except Exception as exc:  # surfaced by the stream loop
        into["error"] = exc
        return None


def build_report(cfg: config.JobConfig, run_name: str, nc: int, served: list[stream.Window], answers: list[Any],
                 static_preds: list[np.ndarray | None], summary: dict[str, Any], feed: feeds.Feed,
                 first_update_s: float | None, sync_timeouts: int, rows_trained: int,
                 static_windows: int) -> tuple[dict, dict, dict]:
    """Join served answers with revealed labels; score dynamic, static and no-change."""
    regression = cfg.model.task == "regression"
    y = np.concatenate([w.labels for w in served])
    win = np.concatenate([np.full(len(w), w.index) for w in served])
    offsets = np.concatenate([w.offsets for w in served])
    pred = np.concatenate([a.predictions for a in answers])
    ver = np.concatenate([a.versions for a in answers])
    # No-change with the model's delay: the last label revealed before the window was served.
    last_revealed = np.concatenate([np.broadcast_to(served[i - 1].labels[-1] if i else np.zeros_like(w.labels[:1])[0],
                                                    w.labels.shape) for i, w in enumerate(served)])
    versions = {v["version"]: v for v in summary["versions"]}
    trained_end = np.array([versions[v]["meta"].get("trained_end_offset", 0) if v >= 0 else 0 for v in ver])
    # The static model's answers exist from its freeze on (rows after its training windows).
    static_pred = np.concatenate([
        (p.reshape(w.labels.shape) if regression else p) if p is not None else
        (np.full(w.labels.shape, np.nan) if regression else np.full(len(w), -1, dtype=np.int64))
        for w, p in zip(served, static_preds)])
    rows = {"offset": offsets, "window": win, "label": y, "prediction": pred, "version": ver,
            "static_prediction": static_pred, "phase": feed.phase(offsets)}
    if regression:
        rows["no_change"] = feed.no_change(y, last_revealed)
        scores, curves = evaluate.score_regression_rows(rows, static_windows)
    else:
        rows["last_revealed"] = last_revealed
        scores, curves = evaluate.score_rows(rows, static_windows, int(max(nc, y.max(initial=0) + 1)))
    fresh = [v["all_served_s"] for v in summary["versions"] if v["version"] >= 1]
    latencies = [s for a in answers for s in a.latencies_s]
    errors = [e for a in answers for e in a.errors]
    progress = [p for p in summary["progress"] if p["index"] >= static_windows]
    trainer_rows = sum(p["num_rows"] for p in progress)
    trainer = ({"trainer_pre_update_mse": sum(p["pre_loss"] * p["num_rows"] for p in progress) / max(trainer_rows, 1)}
               if regression else
               {"trainer_pre_update_accuracy": sum(p["pre_accuracy"] * p["num_rows"] for p in progress) / max(trainer_rows, 1)})
    quarantine = feed.quarantine
    ev = win >= static_windows
    return {
        "run": {
            "name": run_name, "rows_served": len(y), "rows_trained": int(rows_trained),
            "windows": len(served), "window_size": cfg.stream.window_size,
            "rows_quarantined": len(quarantine), "quarantined": list(zip(quarantine.offsets, quarantine.reasons))[:100],
            "versions_published": len(summary["versions"]) - 1, "versions_rejected": len(summary["rejected"]),
            "label_delay_rows": evaluate.percentiles((offsets - trained_end).tolist(), (50, 99)),
            "first_update_served_s": first_update_s, "replica_sync_timeouts": sync_timeouts,
            "num_workers": cfg.train.num_workers, "num_replicas": cfg.serve.num_replicas,
            "window_versions": [[w.index, int(a.versions.min()), int(a.versions.max())] for w, a in zip(served, answers)],
            "replica_versions_at_end": summary["replica_versions"],
        },
        "data": feed.summary(),
        "eval_rows": {"start": int(offsets[ev][0]) if ev.any() else None, "end": int(offsets[-1]) + 1,
                      "static_windows": static_windows, "num_classes": nc},
        "scores": scores,
        "phases": (evaluate.phase_mse if regression else evaluate.phase_accuracy)(rows, static_windows),
        **feed.report_extras(rows, static_windows),
        **trainer,
        "freshness_s": evaluate.percentiles(fresh, (50, 99)),
        "http": {"requests": len(latencies), "failed": len(errors), "errors": errors[:20],
                 "latency_s": evaluate.percentiles(latencies, (50, 99))},
        "drift": drift_section(cfg, summary["decisions"], None if regression else curves["dynamic (served)"]),
        "versions": summary["versions"][-5:],
        "config": cfg.model_dump(mode="json"),
    }, curves, rows


def drift_section(cfg: config.JobConfig, events: list[dict[str, Any]],
                  served: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Any]:
    """The controller's decision log: each drift signal with what it saw and the decision it led to.

    Each event also gets ``recovery_windows``: windows after the signal until the served
    accuracy of a window regains 95% of its mean over the 10 windows before the signal
    (``None``: never, or the signal came before the scored windows, or ``served`` is ``None``:
    a regression, not scored this way).
    """
    ids, acc = served if served is not None else (np.zeros(0, np.int64), np.zeros(0))
    at = {int(w): i for i, w in enumerate(ids)}
    counts = Counter(e["decision"] for e in events)
    for e in events:
        i = at.get(e["window"] + 1)
        e["recovery_windows"] = evaluate.recovery_windows(acc, i) if i is not None and i >= 10 else None
    recoveries = [e["recovery_windows"] for e in events if e["recovery_windows"] is not None]
    return {"detector": cfg.drift.detector, "policy": cfg.policy.name, "decisions": dict(counts),
            "recovery_windows": evaluate.percentiles(recoveries, (50, 90)), "events": events}


def cli(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(Path(__file__).parent / "configs" / "elec2.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override a field")
    args = parser.parse_args(argv)
    return main(config.load(args.config, config.parse_overrides(args.set)))


if __name__ == "__main__":
    cli()
