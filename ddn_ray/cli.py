"""The ``ddn-ray`` command line: ``run``, ``tune``, ``serve-learn``, ``stop``, ``submit``, ``serve``, ``report``,
``rollback``.

``run`` executes a job recipe from ``jobs/`` (found in the current directory, or next to an
editable install), so the CLI and ``ray job submit`` run the very same script. Every
subcommand's ``--help`` ends with an example.

Examples:
    ddn-ray run --config jobs/configs/elec2.yaml --set data.max_rows=8000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import runpy
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = [
    "console",
    "main",
    "rerender_report",
    "rollback",
    "run_foreground",
    "served_report",
    "service_report",
    "submit",
]

EXAMPLES = {
    "run": "ddn-ray run --config jobs/configs/elec2.yaml --set data.max_rows=8000 --set train.num_workers=2",
    "tune": "ddn-ray tune --config jobs/configs/sweep_elec2.yaml --set num_samples=4",
    "serve-learn": "ddn-ray serve-learn --config jobs/configs/service.yaml --set serve.port=8001",
    "stop": "ddn-ray stop --config jobs/configs/service.yaml",
    "submit": "ddn-ray submit --address http://127.0.0.1:8265 --config jobs/configs/elec2.yaml --set data.max_rows=4000",
    "serve": "ddn-ray serve --checkpoint runs/storage/elec2-20261122-081500/checkpoint_2026-11-22_08-17-42.123456",
    "report": "ddn-ray report runs/elec2-20261122-081500",
    "rollback": "ddn-ray rollback --to 41 --address 127.0.0.1:6379",
}
JOB_SCRIPTS = {"run": "continuous.py", "tune": "sweep.py", "serve-learn": "service.py", "stop": "service.py"}
SUBMIT_EXCLUDES = [".git", ".venv", "runs", "*.egg-info", "__pycache__", ".pytest_cache"]


def _repo_root() -> Path:
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (root / "jobs" / "continuous.py").is_file():
            return root
    raise SystemExit(
        f"ddn-ray: jobs/continuous.py not found in {Path.cwd()} or beside the package; run from the repo root"
    )


def _run_script(script: str, rest: list[str]) -> Any:
    """Run a recipe from ``jobs/`` as ``python jobs/<script>`` would, and return what its ``cli`` returns."""
    path = _repo_root() / "jobs" / script
    sys.argv = [str(path), *rest]
    module = runpy.run_path(str(path), run_name="ddn_ray_recipe")  # not __main__: its cli() is called here
    return module["cli"](rest)


def submit(
    address: str,
    config_path: str,
    overrides: list[str],
    script: str = "jobs/continuous.py",
    env: dict[str, str] | None = None,
    working_dir: str = ".",
    wait: bool = True,
    timeout_s: float = 3600.0,
    headers: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> tuple[str, str]:
    """Submit a job recipe to a running cluster through the Jobs API (``JobSubmissionClient``).

    Args:
        address: the dashboard's HTTP address, e.g. ``http://127.0.0.1:8265``.
        config_path: the job YAML, relative to ``working_dir``.
        overrides: ``section.field=value`` items passed as ``--set``.
        script: the recipe, relative to ``working_dir``.
        env: environment variables for the job (``runtime_env.env_vars``).
        working_dir: uploaded as the job's working directory (``.gitignore`` and
            :data:`SUBMIT_EXCLUDES` are left out).
        wait: follow the job until it ends, printing its logs; Ctrl-C or SIGTERM meanwhile stops the job
            (``JobSubmissionClient.stop_job``) and raises :class:`KeyboardInterrupt`.
        timeout_s: give up waiting after this long (the job keeps running).
        headers: extra HTTP headers, e.g. ``{"Authorization": "Bearer <token>"}``; with
            ``RAY_AUTH_MODE=token`` in the environment Ray adds the token itself.
        args: more arguments for the recipe, e.g. ``["--variants", "physics_drift/cartpole"]``.

    Returns:
        ``(submission_id, status)``; the status is ``PENDING``/``RUNNING`` when not waiting.

    Raises:
        FileNotFoundError: the script or config does not exist under ``working_dir``.
        TimeoutError: the job did not end within ``timeout_s``.
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    for rel in (script, config_path):
        if not (Path(working_dir) / rel).is_file():
            raise FileNotFoundError(f"{rel} not found under the working dir {working_dir}")
    entrypoint = shlex.join(
        ["python", script, "--config", config_path, *(args or []), *[a for o in overrides for a in ("--set", o)]]
    )
    client = JobSubmissionClient(address, headers=headers)
    runtime_env = {"working_dir": working_dir, "excludes": SUBMIT_EXCLUDES, "env_vars": dict(env or {})}
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
    print(f"submitted {job_id}: {entrypoint}", flush=True)
    if not wait:
        return job_id, client.get_job_status(job_id).value
    deadline, printed = time.monotonic() + timeout_s, 0
    # followed in the foreground, the job is this command's: Ctrl-C or SIGTERM stops it (--no-wait detaches it)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if main_thread else None
    try:
        while time.monotonic() < deadline:
            status = client.get_job_status(job_id)
            logs = client.get_job_logs(job_id)
            print(logs[printed:], end="", flush=True)
            printed = len(logs)
            if status in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
                return job_id, status.value
            time.sleep(2.0)
    except KeyboardInterrupt:
        client.stop_job(job_id)
        print(f"\nstopped {job_id}", flush=True)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    raise TimeoutError(f"job {job_id} still running after {timeout_s} s (it was not stopped)")


def rerender_report(run_dir: str | Path, write: bool = True) -> dict[str, Any]:
    """Recompute a run's scores, table and plot from its ``report.json`` and ``predictions.npz``.

    Raises:
        FileNotFoundError: ``run_dir`` lacks ``report.json`` or ``predictions.npz``.
    """
    import json

    import numpy as np

    from ddn_ray import evaluate

    run = Path(run_dir)
    for name in ("report.json", "predictions.npz"):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run / name} not found: pass a run directory written by the main job")
    report = json.loads((run / "report.json").read_text())
    with np.load(run / "predictions.npz") as z:
        rows = {k: z[k] for k in z.files}
    regression = "no_change" in rows  # a regression run stores its no-change targets
    if not regression and "last_revealed" not in rows:
        raise ValueError(f"{run / 'predictions.npz'} predates last_revealed/static_prediction: re-run the job")
    static_windows = report["eval_rows"]["static_windows"]
    if regression:
        report["scores"], curves = evaluate.score_regression_rows(rows, static_windows)
        what = ("served one-step error", "MSE per window (standardised targets)")
    else:
        nc = report["eval_rows"].get("num_classes") or int(rows["label"].max()) + 1
        report["scores"], curves = evaluate.score_rows(rows, static_windows, nc)
        what = ("served accuracy", "accuracy per window")
    marks = [(e["window"], e["decision"]) for e in report.get("drift", {}).get("events", [])]
    if write:
        report.setdefault("files", {})["plot"] = str(
            evaluate.plot_accuracy(curves, run / "accuracy.png", f"{report['run']['name']}: {what[0]}", marks, what[1])
        )
        evaluate.write_report(report, run / "report.json")
    print(evaluate.format_table(report))
    return report


def served_report(run_dir: str | Path, write: bool = True) -> dict[str, Any]:
    """Score every row a main-job run served, from the answers it wrote as it went
    (``<storage_path>/<run_name>/served/``, :mod:`ddn_ray.served`): a run that failed or was killed before its
    report still has one. Every attempt's rows, each offset once (the latest attempt's answer), against the
    run's static model from the window it was frozen at (none yet: every row is scored, static n/a); the
    no-change baseline is the last label revealed before each row's window. Writes ``served_report.json`` in
    ``run_dir`` unless ``write`` is false.

    Raises:
        FileNotFoundError: ``run_dir`` holds no served rows.
    """

    import numpy as np

    from ddn_ray import evaluate
    from ddn_ray.report import last_revealed
    from ddn_ray.served import ServedStore

    store = ServedStore(run_uri=str(run_dir), attempt=None)
    prior = store.earlier(before_offset=np.iinfo(np.int64).max)
    if prior is None:
        raise FileNotFoundError(f"{run_dir}/served holds no served rows")
    rows = prior.rows
    rows.pop("trained_end")
    baseline = store.read_static()
    static_windows = baseline.window if baseline is not None else int(rows["window"][0])
    if rows["label"].ndim == 2:  # a regression: (n, k) targets
        rows["no_change"] = last_revealed(rows["window"], rows["label"]).astype(np.float64)
        scores, _ = evaluate.score_regression_rows(rows, static_windows)
    else:
        rows["last_revealed"] = last_revealed(rows["window"], rows["label"])
        answered = [rows[k].max(initial=0) for k in ("label", "prediction", "static_prediction") if k in rows]
        scores, _ = evaluate.score_rows(rows, static_windows, int(max(answered)) + 1)
    report = {
        "rows_served": len(rows["offset"]),
        "offsets": [int(rows["offset"][0]), int(rows["offset"][-1]) + 1],
        "windows": len(np.unique(rows["window"])),
        "static_windows": static_windows,
        "attempts": prior.attempts,
        "scores": scores,
    }
    print(f"{len(rows['offset']):,} rows served by {len(prior.attempts)} attempt(s), offsets {report['offsets']}")
    for name, s in scores.items():
        print(f"{name:34s} " + "  ".join(f"{k} {v:.4f}" for k, v in s.items() if isinstance(v, float)))
    if write:
        evaluate.write_report(report, Path(run_dir) / "served_report.json")
    return report


def service_report(run_dir: str | Path, write: bool = True, rows_per_point: int = 50) -> dict[str, Any]:
    """A service's online figures from its logs (``<storage_path>/<run_name>``, :mod:`ddn_ray.eventlog`): the
    served answers' accuracy (regression: MSE) in serving order as their labels joined, drawn by the main job's
    plot into ``<run_dir>/service/online.png``.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``service/joined`` log.
    """
    import json

    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ddn_ray import evaluate

    run = Path(run_dir)
    joined_dir, logged_dir = run / "service" / "joined", run / "service" / "predictions"
    if not joined_dir.is_dir():
        raise FileNotFoundError(f"{joined_dir} not found: pass <storage_path>/<run_name> of a service")
    joined = pq.read_table(joined_dir, columns=["predicted_at_s", "joined_at_s", "served_error", "model_version"])
    served = joined.filter(pc.is_valid(joined["served_error"])).sort_by("predicted_at_s")
    errors = served["served_error"].to_numpy()
    regression = "target" in pq.read_schema(next(joined_dir.glob("part-*.parquet"))).names
    n = len(errors) // rows_per_point
    points = errors[: n * rows_per_point].reshape(n, rows_per_point).mean(axis=1) if n else np.zeros(0)
    curve = points if regression else 1.0 - points
    delay = served["joined_at_s"].to_numpy() - served["predicted_at_s"].to_numpy()
    answered = pq.read_table(logged_dir, columns=["event_id"]).num_rows if logged_dir.is_dir() else 0
    metric = "MSE" if regression else "accuracy"
    figures = {
        "rows_answered": answered,
        "labels_joined": joined.num_rows,
        "labels_of_served_rows": len(errors),
        f"online_{metric.lower()}": (float(errors.mean()) if regression else 1.0 - float(errors.mean()))
        if len(errors)
        else None,
        "label_delay_s": {"p50": float(np.quantile(delay, 0.5)), "p99": float(np.quantile(delay, 0.99))}
        if len(delay)
        else None,
        "versions": [int(pc.min(served["model_version"]).as_py()), int(pc.max(served["model_version"]).as_py())]
        if len(errors)
        else None,
    }
    if write and n:
        figures["plot"] = str(
            evaluate.plot_accuracy(
                {"served (online)": (np.arange(n), curve)},
                run / "service" / "online.png",
                f"{run.name}: served {metric} as labels joined",
                ylabel=f"{metric} per {rows_per_point} labelled answers" if regression else "accuracy per window",
            )
        )
    print(json.dumps(figures, indent=2))
    return figures


def _serve(args: argparse.Namespace) -> None:
    import yaml

    raw = yaml.safe_load(Path(args.config or _repo_root() / "clusters" / "serve_config.yaml").read_text())
    app = raw["applications"][0]
    ckpt = args.checkpoint if "://" in args.checkpoint else str(Path(args.checkpoint).resolve())
    app["args"] = {
        **{k: v for k, v in app.get("args", {}).items() if k not in ("checkpoint", "controller")},
        "checkpoint": ckpt,
    }
    raw["http_options"] = {**raw.get("http_options", {}), "port": args.port}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(raw, f)
    serve_bin = str(Path(sys.executable).parent / "serve")
    cmd = [serve_bin, "deploy", f.name, "--address", args.address] if args.address else [serve_bin, "run", f.name]
    print(" ".join(cmd), flush=True)
    try:
        raise SystemExit(run_foreground(cmd))
    finally:
        os.unlink(f.name)


def run_foreground(cmd: list[str], grace_s: float = 30.0) -> int:
    """Run ``cmd`` in its own process group until it exits; SIGTERM or Ctrl-C stops all of it.

    The signal reaches the child as SIGINT (``serve run`` then shuts Serve and the Ray cluster it started
    down); after the child exits, or ``grace_s`` seconds after the signal, whatever is left of its process
    group (Ray's agents ignore SIGTERM) is killed, so nothing outlives the command.

    Returns:
        The child's exit status (``128 + n`` when a signal ``n`` ended it).
    """
    import signal

    proc = subprocess.Popen(cmd, start_new_session=True)  # its own group: the whole tree can be stopped
    stopping: list[float] = []

    def forward(signum: int, _frame: Any) -> None:
        if not stopping:
            stopping.append(time.monotonic())
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while proc.poll() is None:
            if stopping and time.monotonic() - stopping[0] > grace_s:
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.2)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the child (if still there) and what it left behind
        proc.wait()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode


def console() -> None:
    """The ``ddn-ray`` console script: :func:`main`, exit status 0 unless a subcommand fails.

    (``sys.exit(main())`` would print a returned report or job id to stderr and exit 1.)
    """
    main()


def rollback(to: int, address: str, controller: str, namespace: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Serve version ``to`` again (:meth:`ddn_ray.controller.Controller.rollback`): a new version with its
    weights, which every replica loads like any other; the trainer then learns on from it.

    Args:
        to: the model version to serve again (one the controller still holds: ``keep_versions``).
        address: the Ray cluster to connect to (when this process is not in one already).
        controller: the controller actor's name; namespace: its namespace.
        timeout_s: wait at most this long for every live replica to serve it.

    Returns:
        ``{"version": the new id, "rollback_to": to, "all_serving": bool}``.

    Raises:
        SystemExit: no such controller, or the version is not held (the message says which).
    """
    import ray

    if not ray.is_initialized():
        ray.init(address=address, namespace=namespace, log_to_driver=False)
    try:
        actor = ray.get_actor(controller, namespace=namespace)
    except ValueError:
        raise SystemExit(f"ddn-ray rollback: no controller actor {controller!r} in namespace {namespace!r}") from None
    try:
        result = ray.get(actor.rollback.remote(to))
    except KeyError as exc:  # Ray re-raises the actor's KeyError as a subclass of it
        raise SystemExit(f"ddn-ray rollback: {exc.args[0] if exc.args else exc}") from None
    served = ray.get(actor.wait_all_serving.remote(result["version"], timeout_s))
    out = {"version": result["version"], "rollback_to": to, "all_serving": bool(served)}
    print(f"version {out['version']} serves version {to}'s weights; every live replica serving it: {served}")
    return out


def main(argv: list[str] | None = None) -> Any:
    """Parse ``argv`` and run the subcommand; return what it gives (``run``: the report, ``tune``: the sweep's
    summary, ``submit``: the job id, ``report``: the re-rendered report)."""
    parser = argparse.ArgumentParser(
        prog="ddn-ray",
        description="Dynamic deep networks on Ray: train and serve on a drifting stream.",
        epilog="examples:\n  " + "\n  ".join(EXAMPLES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {
        "run": "the main job: continuous train-and-serve with a report (jobs/continuous.py)",
        "tune": "a Ray Tune sweep of the adaptation hyperparameters (jobs/sweep.py)",
        "serve-learn": "the long-running service: outside clients, labels by /feedback, until SIGTERM (jobs/service.py)",
        "stop": "stop a running service (its config's apps): drain, write the log and a checkpoint (jobs/service.py)",
        "submit": "submit a job recipe to a running cluster through the Jobs API",
        "serve": "deploy the Serve app alone, serving a checkpoint (clusters/serve_config.yaml)",
        "report": "re-render a run's report table and plot from its run directory",
        "rollback": "serve an earlier model version of a running job or service again (its controller actor)",
    }
    subs = {}
    for name, text in helps.items():
        kw: dict[str, Any] = {
            "help": text,
            "description": text,
            "epilog": f"example:\n  {EXAMPLES[name]}",
            "formatter_class": argparse.RawDescriptionHelpFormatter,
        }
        if name in JOB_SCRIPTS:  # the recipe parses its own options; --help shows both
            kw["add_help"] = False
        subs[name] = sub.add_parser(name, **kw)
    for name in JOB_SCRIPTS:
        subs[name].add_argument("-h", "--help", action="store_true")
    s = subs["submit"]
    s.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS", "http://127.0.0.1:8265"),
        help="the dashboard's HTTP address (default: $RAY_ADDRESS or http://127.0.0.1:8265)",
    )
    s.add_argument("--config", default="jobs/configs/elec2.yaml", help="job YAML, relative to the working dir")
    s.add_argument("--script", default="jobs/continuous.py", help="job recipe, relative to the working dir")
    s.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    s.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="runtime_env env_vars")
    s.add_argument("--working-dir", default=".")
    s.add_argument("--no-wait", action="store_true", help="print the submission id and return")
    v = subs["serve"]
    v.add_argument("--checkpoint", required=True, help="a main-job checkpoint directory or s3:// / gs:// URI")
    v.add_argument("--config", default=None, help="Serve config file (default: clusters/serve_config.yaml)")
    v.add_argument(
        "--address",
        default=None,
        help="deploy to this cluster's dashboard (serve deploy); "
        "default: serve run on a local cluster, in the foreground",
    )
    v.add_argument("--port", type=int, default=8000, help="Serve HTTP port (127.0.0.1)")
    r = subs["report"]
    r.add_argument(
        "run_dir",
        help="runs/<run name>, holding report.json and predictions.npz; or a service's "
        "<storage_path>/<run_name> (its online figures and plot from the logs); or a main job's "
        "<storage_path>/<run_name> (every row it served, from its served logs: a failed run's report)",
    )
    r.add_argument("--no-write", action="store_true", help="print the table only; keep report.json and the plot")

    b = subs["rollback"]
    b.add_argument("--to", type=int, required=True, metavar="VERSION", help="the version to serve again")
    b.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "auto"), help="the Ray cluster (GCS address)")
    b.add_argument("--controller", default="ddn_ray_controller", help="the controller actor's name (controller.name)")
    b.add_argument("--namespace", default="ddn_ray", help="its Ray namespace (ray.namespace)")
    b.add_argument("--timeout-s", type=float, default=30.0, help="wait this long for every replica to serve it")

    args, rest = parser.parse_known_args(argv)
    if args.command in JOB_SCRIPTS:
        if args.help:
            subs[args.command].print_help()
            print()
        extra = ["--stop"] if args.command == "stop" else []
        return _run_script(JOB_SCRIPTS[args.command], [*rest, *extra, *(["--help"] if args.help else [])])
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "submit":
        env = dict(item.split("=", 1) for item in args.env)
        job_id, status = submit(
            args.address, args.config, args.set, args.script, env, args.working_dir, wait=not args.no_wait
        )
        print(f"{job_id}: {status}")
        if not args.no_wait and status != "SUCCEEDED":
            raise SystemExit(1)
        return job_id
    if args.command == "serve":
        return _serve(args)
    if args.command == "rollback":
        return rollback(args.to, args.address, args.controller, args.namespace, args.timeout_s)
    if (Path(args.run_dir) / "service" / "joined").is_dir():
        return service_report(args.run_dir, write=not args.no_write)
    if (Path(args.run_dir) / "served").is_dir():  # a main job's <storage_path>/<run_name>: from its served logs
        return served_report(args.run_dir, write=not args.no_write)
    return rerender_report(args.run_dir, write=not args.no_write)


if __name__ == "__main__":
    main()
