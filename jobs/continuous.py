"""The main job: continuous train-and-serve on a drifting stream: a user's table (``data.source``;
Elec2's CSV by default) or a built-in use case's stream (``data.name``, :mod:`ddn_ray.usecase`).

Run:  python jobs/continuous.py --config jobs/configs/elec2.yaml [--set train.lr=0.003 ...]
  or: ddn-ray run --config jobs/configs/elec2.yaml
  or: ray job submit --working-dir . -- python jobs/continuous.py --config jobs/configs/elec2.yaml

Per window of the stream: (1+2) send the window's features over HTTP, to the replicas' own HTTP servers
(Serve's direct ingress, ``serve.direct_ingress``) or through Serve's proxy, asking for a model that has
learned the window ``max_lag_windows + 1`` back (``?min_window``): each request waits in its replica until
the trainer is there, while the driver asks the controller which version that made, and asks again with that
version (``?min_version``) where an answer came from an older one; keep the answers; (3) reveal the labels:
hand the window to the Train workers as Arrow blocks (by value when small). Workers test-then-train, publish
weights to the controller, and checkpoint; replicas long-poll the controller. At the end, (4) the report
(:mod:`ddn_ray.report`) joins every answer with its label and scores it.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from ddn_ray import localcluster

# closed by default: a cluster this driver starts itself listens on 127.0.0.1 only (before Ray is imported)
localcluster.prefer_loopback()

import ray
import torch
from ray import serve
from ray.train.torch import TorchTrainer
from ray.util.queue import Queue
from tqdm import tqdm

from ddn_ray import checkpoint as checkpoint_io
from ddn_ray import config, devices, evaluate, feeds, models, report, usecase, versions
from ddn_ray.client import TrafficClient
from ddn_ray.controller import ServeReady, create_actor
from ddn_ray.errors import DataError
from ddn_ray.handoff import WindowItem, shard_tables
from ddn_ray.serve import build_app, ingress
from ddn_ray.served import ServedStore, StaticBaseline
from ddn_ray.train import WindowSender, WorkerArgs, make_trainer


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
    localcluster.before_init(metrics=cfg.ray.metrics)  # Ray's metrics off unless ray.metrics
    if cfg.serve.direct_ingress:  # read by Serve's processes as they start: the replicas' own HTTP servers
        ingress.enable(ports=cfg.serve.direct_ingress_ports)
    ray.init(
        num_cpus=cfg.ray.num_cpus,
        include_dashboard=cfg.ray.include_dashboard,
        namespace=cfg.ray.namespace,
        runtime_env=env,
        log_to_driver=False,
    )
    localcluster.after_init()  # a SIGKILLed driver's cluster does not outlive it (Ray's agents would)
    return True


def main(cfg: config.JobConfig) -> dict[str, Any]:
    """Run the job end to end and return its report (also written as JSON + PNG)."""
    t0 = time.monotonic()
    # the driver's own torch work (the static baseline's answers) on one thread: on 2 busy cores an intra-op
    # parallel region waits for a second thread that the scheduler may not run (~4 ms for 50 rows, py-spy)
    torch.set_num_threads(1)
    # A user's table (data.source) or a built-in use case's stream (data.name); checked before Ray starts.
    feed = feeds.TableFeed(job=cfg) if cfg.data.source is not None else usecase.feed(cfg)
    started_ray = start_ray(cfg)
    # GPUs asked for (train.use_gpu, serve.num_gpus) that the cluster does not have: CPU, with one warning each
    cfg = devices.fit_to_this_cluster(cfg)
    rss = evaluate.RssSampler().start()
    run_name = cfg.run_name or f"{feed.run_stem()}-{time.strftime('%Y%m%d-%H%M%S')}"
    # this attempt of the run: its controller journal and its served answers, beside the earlier attempts'
    run_uri, attempt = f"{cfg.storage_uri}/{run_name}", versions.attempt_name()
    served = ServedStore(run_uri=run_uri, attempt=attempt)
    feature_names, nc = feed.feature_names, feed.num_classes
    nf, workers = len(feature_names), cfg.train.num_workers

    # Controller: owns every version; version 0 is the seeded initial model.
    # Killed, Ray restarts it (max_restarts) and it restores itself from its journal; calls in flight run again.
    controller = create_actor(job=cfg, store_uri=f"{run_uri}/controller/{attempt}")
    ray.get(
        controller.set_model_spec.remote(
            checkpoint_io.model_spec(cfg.model, nf, nc, feature_names, feed.inputs, cfg.distill.student)
        )
    )
    init = models.build(cfg.model, nf, nc, seed=cfg.train.seed)
    ray.get(
        controller.publish.remote(
            models.state_to_numpy(init),
            {"window": -1, "trained_end_offset": 0, "num_classes": nc},
            feed.initial_preprocessing(),
        )
    )

    # Serve: replicas load the latest version before they take traffic.
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(build_app(cfg, nf, nc, feed.inputs), name=cfg.serve.app_name, route_prefix=cfg.serve.route_prefix)
    url = f"http://{cfg.serve.host}:{cfg.serve.port}{cfg.serve.route_prefix.rstrip('/')}{feed.route}"
    client = TrafficClient(
        url,
        cfg.serve.request_rows,
        cfg.serve.num_clients,
        cfg.serve.request_timeout_s,
        feed.body,
        outputs=nc if cfg.model.task == "regression" else None,
        answer_key=feed.answer_key,
        auth_token=cfg.serve.token(),
        # straight to the replicas (Serve's direct ingress) when the cluster has it, else through the proxy
        replicas=partial(ingress.replica_urls, cfg.serve.app_name, host=cfg.serve.host)
        if cfg.serve.direct_ingress
        else None,
    )

    # Train: one long-lived fit(); windows arrive through one queue per rank.
    queues = [Queue(actor_options={"num_cpus": 0}) for _ in range(workers)]
    args = WorkerArgs(
        job=cfg, feature_names=feature_names, num_classes=nc, queues=queues, controller=controller, inputs=feed.inputs
    )
    trainer = make_trainer(args=args, run_name=run_name, max_failures=cfg.train.max_failures)
    # keeps the windows a restarted worker group may need again: since its last checkpoint, plus the lag
    sender = WindowSender(
        queues=queues,
        controller=controller,
        keep_windows=2 * cfg.train.checkpoint_every_windows + cfg.stream.max_lag_windows + 2,
    )
    fit: dict[str, Any] = {}
    fit_thread = threading.Thread(target=lambda: fit.update(result=_fit(trainer, fit)), daemon=True)
    fit_thread.start()

    def learned_target(window: int) -> int:
        """The window to wait for: ``window``, or the last window sent before it (an empty window, every row
        quarantined, is never sent); ``-1`` when nothing was sent yet in this run (the latest version)."""
        window = min(window, last_sent)
        return -1 if window < ready["next_window"] else window

    def wait_learned(window: int, asked: Any = None) -> ServeReady:
        """Wait for the trainer to finish ``window`` (:func:`learned_target`): one controller call, or the
        reply of ``asked``, that call made already. Its version is what the next requests ask for."""
        window = learned_target(window)
        asked = asked or controller.wait_learned.remote(window, 5.0)
        while (state := ray.get(asked)).windows_done < window:
            if not fit_thread.is_alive():
                raise RuntimeError(f"the trainer stopped before window {window}: {fit.get('error')!r}")
            asked = controller.wait_learned.remote(window, 5.0)
        return state

    ready = None
    while ready is None:
        ready = ray.get(controller.wait_trainer_ready.remote(5.0))
        if ready is None and not fit_thread.is_alive():
            raise RuntimeError(f"the trainer failed to start: {fit.get('error')!r}")
    feed.start(next_offset=ready["next_offset"], preprocessing=ready.get("preprocessing"))
    last_sent = ready["next_window"] - 1  # the last window index the trainer was given

    # a resumed run: what earlier attempts served before this one's first offset, and the run's static baseline
    prior = served.earlier(before_offset=ready["next_offset"])
    log = report.ServedLog(regression=cfg.model.task == "regression", sink=served, prior=prior)
    static_model, first_update_s, sync_timeouts = None, None, 0
    driver_s: dict[str, list[float]] = {"wait_learned": [], "serve": [], "hand_off": [], "log": []}
    first_window = int(prior.rows["window"][0]) if prior is not None else ready["next_window"]
    static_windows = max(first_window + cfg.report.static_windows, ready["next_window"])
    baseline = served.read_static()
    if baseline is not None:  # frozen by an earlier attempt: the same static model scores every row
        static_windows = baseline.window
        feed.snapshot_static(baseline.preprocessing)
        static_model = models.load_numpy_state(
            models.build(cfg.model, nf, models.output_width(baseline.weights)), baseline.weights
        ).eval()
    t_stream = time.monotonic()
    try:
        for window in tqdm(feed.windows(), desc="windows", unit="win", total=feed.total_windows(), mininterval=2.0):
            # 1. Backpressure: training at most max_lag windows behind; its version is what the requests ask for.
            behind = learned_target(window.index - 1 - cfg.stream.max_lag_windows)
            early = len(window) > 0 and behind >= 0 and window.index != static_windows
            t_wait = time.perf_counter()
            if early:
                # 1+2. The requests go at once and wait in their replicas until the window before is learned
                # (?min_window): a replica hears it with the version it made. The controller's word comes meanwhile.
                asked = controller.wait_learned.remote(behind, 5.0)
                answers = client.predict(*feed.request(window), min_window=behind)
                t_served = time.perf_counter()
                state = wait_learned(behind, asked)
                t_learned = time.perf_counter()
                if answers.older_than(state.version):
                    # a replica's wait ran out (serve.version_wait_s), or a newer version came (a rollback)
                    answers = client.predict(*feed.request(window), min_version=state.version)
                served_s, learned_s = time.perf_counter() - t_learned + t_served - t_wait, t_learned - t_served
            else:
                state = wait_learned(behind)
                learned_s = time.perf_counter() - t_wait
            if window.index == static_windows and static_model is None:  # freeze the static baseline
                wait_learned(static_windows - 1)
                version, weights = ray.get(controller.latest_weights.remote())
                preprocessing = ray.get(controller.preprocessing.remote(version))
                feed.snapshot_static(preprocessing)
                static_model = models.load_numpy_state(
                    models.build(cfg.model, nf, models.output_width(weights)), weights
                ).eval()
                served.write_static(
                    StaticBaseline(weights=dict(weights), preprocessing=preprocessing, window=static_windows)
                )
            if not len(window):
                continue
            # 2. Serve the features before the labels exist anywhere in the system, from that version or newer:
            # each request waits in its replica until the replica serves it (?min_version). (The first windows,
            # and the one the static baseline is frozen at; the others went at step 1.)
            if not early:
                t_serve = time.perf_counter()
                answers = client.predict(*feed.request(window), min_version=state.version)
                served_s = time.perf_counter() - t_serve
            if answers.older_than(state.version):
                sync_timeouts += 1  # a replica did not load it within serve.version_wait_s
            if first_update_s is None and answers.versions.max(initial=-1) >= 1:
                first_update_s = time.monotonic() - t0
            # 3. Reveal the labels: the window goes to training, one Arrow block per rank.
            t_reveal = time.perf_counter()
            revealed = feed.reveal(window)
            w = revealed.window
            sender.send(
                [
                    WindowItem.put(
                        index=w.index,
                        start=w.start,
                        end=w.end,
                        rows=shard,
                        preprocessing=revealed.preprocessing,
                        num_classes=revealed.num_classes,
                    )
                    for shard in shard_tables(w, workers)
                ]
            )
            t_sent = time.perf_counter()
            log.add(
                window=w,
                answers=answers,
                ids=feed.ids(window),
                rows_trained=(len(w) // workers) * workers,
                static_prediction=None
                if static_model is None
                else models.predict(static_model, feed.static_inputs(window, revealed), cfg.model.task),
            )
            last_sent = w.index
            for phase, seconds in zip(driver_s, (learned_s, served_s, t_sent - t_reveal, time.perf_counter() - t_sent)):
                driver_s[phase].append(seconds)
        last = wait_learned(last_sent).version  # every window learned and on every replica: the stream's end
        if last is not None and not ray.get(controller.wait_all_serving.remote(last, cfg.controller.sync_timeout_s)):
            sync_timeouts += 1
        stream_s = time.monotonic() - t_stream  # (Train's own shutdown, a few seconds, is not counted)
        sender.end()
        fit_thread.join()
        if "error" in fit:
            raise RuntimeError(f"training failed: {fit['error']!r}")
        last = ray.get(controller.latest_version.remote())
        ray.get(controller.wait_all_serving.remote(last, cfg.controller.sync_timeout_s))
        summary = ray.get(controller.summary.remote())
    finally:
        sender.close()
        client.close()
        serve.delete(cfg.serve.app_name)
        ray.kill(controller)
        for q in queues:
            q.shutdown(force=True)

    if not log:
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
    # 4. The report: served answers joined with the revealed labels, scored against static and no-change.
    facts = report.RunFacts(
        run_name=run_name,
        num_classes=nc,
        static_windows=static_windows,
        first_update_s=first_update_s,
        sync_timeouts=sync_timeouts,
        driver_s=driver_s,
        requests_by_ingress=dict(client.sent),
    )
    result, curves, rows = report.build(job=cfg, log=log, summary=summary, feed=feed, facts=facts)
    # restarts of the Train worker group (a worker died): where each resumed, and which windows it trained again
    done_at = {r["generation"]: r["windows_done"] for r in summary["trainer_restarts"]}
    result["run"]["trainer_restarts"] = [
        {**r, "trained_again": [i for i in r["resent"] if i <= done_at.get(r["generation"], -1)]}
        for r in sender.restarts
    ]
    # restarts of the controller (it died): when it came back from its journal, and when each replica re-attached
    result["run"]["controller_restarts"] = summary["controller_restarts"]
    # where rank 0 learned: {"device": "cuda:0" | "cpu", "gpu_ids": [the GPUs Ray assigned it]}
    result["run"]["trainer_device"] = (summary["trainer"] or {}).get("device")
    result["run"]["peak_rss_bytes"] = rss.stop()
    result["run"]["peak_pss_bytes"] = rss.peak_pss_bytes
    result["run"]["stream_s"] = stream_s
    result["run"]["wall_s"] = time.monotonic() - t0
    report.write(result, curves, rows, job=cfg)
    if started_ray:
        serve.shutdown()
        ray.shutdown()
    return result


def _fit(trainer: TorchTrainer, into: dict[str, Any]) -> Any:
    try:
        return trainer.fit()
    except Exception as exc:  # noqa: BLE001 (any failure of fit is surfaced by the stream loop)
        into["error"] = exc
        return None


def cli(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(Path(__file__).parent / "configs" / "elec2.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override a field")
    args = parser.parse_args(argv)
    return main(config.load(args.config, config.parse_overrides(args.set)))


if __name__ == "__main__":
    cli()
