"""The long-running service: serve outside clients' records, learn from the labels they send later.

Run:   ddn-ray serve-learn --config jobs/configs/service.yaml [--set serve.port=8001 ...]
  or:  python jobs/service.py --config jobs/configs/service.yaml
Stop:  SIGTERM or Ctrl-C to that process, or ``ddn-ray stop --config jobs/configs/service.yaml`` from another
       shell (it joins the running cluster). Either way: the HTTP app drains its in-flight requests (each replica
       hands its answered rows to the prediction log first), the learner finishes its window, writes the log and a
       checkpoint of every window learned, and the process exits 0. Start it again with the same run_name and
       storage_path and it resumes (ddn_ray.service).
Without a driver: ``serve deploy clusters/service_config.yaml`` or the RayService in clusters/kuberay/.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import continuous`, also when run by the CLI
import continuous
import ray
from ray import serve

from ddn_ray import config, devices, service


def deploy(cfg: config.JobConfig) -> str:
    """Start (or resume) the service on the connected cluster: the learner's app, then the HTTP app. Returns the
    base URL."""
    # GPUs asked for (train.use_gpu, serve.num_gpus) that the cluster does not have: CPU, with one warning each
    cfg = devices.fit_to_this_cluster(cfg)
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    learner, ingress = service.build_apps(cfg)
    serve.run(learner, name=service.learner_app_name(cfg), route_prefix=None)
    serve.run(ingress, name=cfg.serve.app_name, route_prefix=cfg.serve.route_prefix)
    return f"http://{cfg.serve.host}:{cfg.serve.port}{cfg.serve.route_prefix.rstrip('/')}"


def stop(cfg: config.JobConfig) -> dict[str, Any]:
    """Stop the service and return its final figures: the HTTP app first (in-flight requests finish, replicas hand
    their answered rows to the log), then the learner (its window finished, log written, checkpoint reported)."""
    if cfg.serve.app_name in serve.status().applications:
        serve.delete(cfg.serve.app_name)
    name = service.learner_app_name(cfg)
    final: dict[str, Any] = {}
    if name in serve.status().applications:
        final = serve.get_app_handle(name).drain.remote().result(timeout_s=600)
        serve.delete(name)
    return final


def _final_stats(cfg: config.JobConfig) -> dict[str, Any]:
    """The learner's last figures, as its drain wrote them (a local storage_path; else {})."""
    path = Path(cfg.storage_uri) / cfg.run_name / "service" / "final_stats.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def main(cfg: config.JobConfig, stop_event: threading.Event | None = None) -> dict[str, Any]:
    """Run the service until SIGTERM / SIGINT (or ``stop_event``, or its apps deleted by ``ddn-ray stop``)."""
    started = continuous.start_ray(cfg)
    stop_event = stop_event or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop_event.set())
    final: dict[str, Any] = {}
    try:
        url = deploy(cfg)
        print(
            f"ddn_ray service {cfg.run_name!r} at {url}: POST /predict, /feedback, /learn; GET /stats, /schema. "
            "Stop with SIGTERM or Ctrl-C.",
            flush=True,
        )
        while not stop_event.wait(2.0):
            if cfg.serve.app_name not in serve.status().applications:  # `ddn-ray stop` stopped it
                break
    finally:
        final = stop(cfg) or _final_stats(cfg)  # {} when `ddn-ray stop` stopped it: the learner wrote them
        out = Path(cfg.report.output_dir) / cfg.run_name
        out.mkdir(parents=True, exist_ok=True)
        (out / "service_stats.json").write_text(json.dumps(final, indent=2, default=str))
        print(f"stopped; final figures in {out / 'service_stats.json'}", flush=True)
        if started:
            serve.shutdown()
            ray.shutdown()
    return final


def cli(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(Path(__file__).parent / "configs" / "service.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override a field")
    parser.add_argument("--stop", action="store_true", help="stop the running service of this config and exit")
    args = parser.parse_args(argv)
    cfg = service.service_config(args.config, config.parse_overrides(args.set))
    if args.stop:
        import os

        ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), namespace=cfg.ray.namespace, log_to_driver=False)
        t0 = time.monotonic()
        final = stop(cfg)
        print(f"stopped {cfg.run_name!r} in {time.monotonic() - t0:.1f} s: {json.dumps(final, default=str)}")
        return final
    return main(cfg)


if __name__ == "__main__":
    cli()
