"""The service under sustained load: /predict + /feedback throughput and latency, training on vs off, one run.

    python benchmarks/service_load.py [--seconds 60] [--clients 4] [--rows 20]

Three services in turn on one local Ray cluster (4 logical CPUs on this 2-core machine), with the same config
(``jobs/configs/service.yaml``: Elec2's columns, 2 replicas at 0.25 CPU, windows of 50 joined rows) except:

* **on**: every label is joined and learned by the Train worker (0.5 CPU), a new version and a checkpoint per
  window (the shipped config: a restart learns no joined row twice);
* **on, checkpoint every 10 windows**: the same, with up to 10 windows learned again after a crash;
* **off**: the same requests; labels are joined and logged, no Train worker runs (the baseline).

Each of ``--clients`` threads loops over Elec2's rows: ``POST /predict`` with ``--rows`` records, then
``POST /feedback`` with the labels of the rows it was answered for one request earlier (so a label arrives
about one request after its answer). The first ``--warmup-s`` seconds are not counted. Prints a table of
per-route latency p50 / p99, requests and rows per second, windows learned, failures, and the on / off
ratios; writes it to ``benchmarks/results/service_load.txt``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.csv as pacsv
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "jobs"))

PORT = 18210
NAMESPACE = "ddn_ray_bench"


def load(
    url: str,
    rows: list[dict[str, Any]],
    labels: list[int],
    clients: int,
    per_request: int,
    seconds: float,
    warmup_s: float,
) -> dict[str, Any]:
    """``clients`` threads of predict-then-feedback for ``seconds``; figures after ``warmup_s``."""
    t0 = time.monotonic()
    stop_at, count_from = t0 + seconds, t0 + warmup_s
    lat: dict[str, list[float]] = {"predict": [], "feedback": []}
    counts = {"predict_rows": 0, "feedback_rows": 0, "failed": 0, "joined": 0}
    lock = threading.Lock()

    def client(k: int) -> None:
        s = requests.Session()
        i = (k * 997 * per_request) % len(rows)
        previous: list[dict[str, Any]] = []  # the labels of the last answer, sent after the next /predict
        while time.monotonic() < stop_at:
            batch = [rows[(i + j) % len(rows)] for j in range(per_request)]
            ys = [labels[(i + j) % len(rows)] for j in range(per_request)]
            i += per_request
            for route in ("predict", "feedback"):
                body: Any = {"records": batch} if route == "predict" else previous
                if route == "feedback" and not body:
                    continue
                t = time.monotonic()
                try:
                    r = s.post(f"{url}/{route}", json=body, timeout=60)
                    ok = r.status_code == 200
                except requests.RequestException:
                    ok, r = False, None
                dt = time.monotonic() - t
                with lock:
                    if not ok:
                        counts["failed"] += 1
                    elif t >= count_from:
                        lat[route].append(dt)
                        if route == "predict":
                            counts["predict_rows"] += len(batch)
                        else:
                            counts["feedback_rows"] += len(body)
                            counts["joined"] += r.json()["joined"]
                if route == "predict":
                    answered = [{"event_id": e, "label": y} for e, y in zip(r.json()["event_ids"], ys)] if ok else []
                else:
                    previous = []
            previous = answered

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    span = seconds - warmup_s
    q = lambda a, p: 1000 * float(np.quantile(a, p)) if a else float("nan")
    return {
        "predict_p50_ms": q(lat["predict"], 0.5),
        "predict_p99_ms": q(lat["predict"], 0.99),
        "feedback_p50_ms": q(lat["feedback"], 0.5),
        "feedback_p99_ms": q(lat["feedback"], 0.99),
        "predict_req_s": len(lat["predict"]) / span,
        "predict_rows_s": counts["predict_rows"] / span,
        "feedback_rows_s": counts["feedback_rows"] / span,
        "joined": counts["joined"],
        "failed": counts["failed"],
    }


def _fmt(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def _ratio(x: Any, base: Any) -> str:
    return f"{x / base:.2f}" if isinstance(x, (int, float)) and isinstance(base, (int, float)) and base else "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--warmup-s", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rows", type=int, default=20, help="records per /predict request")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "service_load.txt"))
    args = p.parse_args(argv)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, 127.0.0.1-only benchmark cluster
    os.environ.setdefault("DDN_RAY_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))
    import ray
    import service as recipe  # jobs/service.py
    from ray import serve

    from ddn_ray import service

    csv = Path(os.environ["DDN_RAY_DATA_DIR"]) / "elec2" / "electricity.csv"
    table = pacsv.read_csv(csv)
    features = ["period", "nswprice", "nswdemand", "vicprice", "vicdemand", "transfer"]
    rows = table.select(features).to_pylist()
    labels = table["class"].to_pylist()
    ray.init(
        num_cpus=4, include_dashboard=False, namespace=NAMESPACE, _node_ip_address="127.0.0.1", log_to_driver=False
    )
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, every in (("on", 1), ("on10", 10), ("off", 1)):
            cfg = service.service_config(
                ROOT / "jobs" / "configs" / "service.yaml",
                {
                    "run_name": f"load-{mode}",
                    "storage_path": f"{tmp}/storage",
                    "serve": {"port": PORT},
                    "service": {"learn": mode != "off", "window_timeout_s": 5.0},
                    "train": {"checkpoint_every_windows": every},
                    "report": {"output_dir": f"{tmp}/runs"},
                },
            )
            recipe.deploy(cfg)
            url = f"http://127.0.0.1:{PORT}"
            deadline = time.monotonic() + 300
            while mode != "off" and not requests.get(url + "/stats", timeout=30).json()["trainer_ready"]:
                if time.monotonic() > deadline:
                    raise SystemExit("the trainer did not start within 300 s")
                time.sleep(1.0)
            figures = load(url, rows, labels, args.clients, args.rows, args.seconds, args.warmup_s)
            final = recipe.stop(cfg)
            figures.update(
                windows_learned=final.get("windows_learned", 0),
                versions=final.get("model_version"),
                rows_learned=final.get("rows_learned", 0),
                backlog=final.get("pending_learn", 0),
            )
            results[mode] = figures
            print(mode, figures, flush=True)
    serve.shutdown()
    ray.shutdown()

    on, on10, off = results["on"], results["on10"], results["off"]
    title = (
        f"service_load: {args.clients} clients x (/predict {args.rows} rows, then /feedback of the previous "
        f"answer's labels), {args.seconds:g} s each ({args.warmup_s:g} s warm-up not counted), Elec2 records, "
        f"2 replicas at 0.25 CPU; training on = 1 Train worker at 0.5 CPU, windows of 50 joined rows, a "
        f"checkpoint every window (the shipped service.yaml) or every 10"
    )
    header = (
        "| figure | training on | on, checkpoint every 10 windows | training off (baseline) | on / off "
        "| on (every 10) / off |"
    )
    lines = [title, "", header, "|---|---|---|---|---|---|"]
    for key, name in (
        ("predict_p50_ms", "/predict p50 ms"),
        ("predict_p99_ms", "/predict p99 ms"),
        ("feedback_p50_ms", "/feedback p50 ms"),
        ("feedback_p99_ms", "/feedback p99 ms"),
        ("predict_req_s", "/predict requests/s"),
        ("predict_rows_s", "rows answered/s"),
        ("feedback_rows_s", "labels sent/s"),
        ("joined", "labels joined"),
        ("windows_learned", "windows learned"),
        ("rows_learned", "rows learned"),
        ("backlog", "joined rows not yet learned at the stop"),
        ("versions", "last version"),
        ("failed", "failed requests"),
    ):
        a, a10, b = on[key], on10[key], off[key]
        lines.append(f"| {name} | {_fmt(a)} | {_fmt(a10)} | {_fmt(b)} | {_ratio(a, b)} | {_ratio(a10, b)} |")
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text + "\n")
    return 1 if on["failed"] or on10["failed"] or off["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
