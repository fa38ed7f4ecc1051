"""Early exit and int8 serving: accuracy against compute as the exit threshold sweeps, and served HTTP latency.

    python benchmarks/early_exit.py [--streams elec2 fashion_mnist] [--requests 300]

Part 1, per stream (Elec2 at W=50 from ``jobs/configs/elec2.yaml``; Fashion-MNIST under rotation
from ``jobs/configs/fashion_mnist.yaml``): the job's network with early exits (``model.exits``) learns
the stream prequentially through the job's own :class:`~ddn_ray.learner.OnlineLearner` (drift detector
and retraining policy included). Before each window is learned, every row is answered by
:func:`ddn_ray.exits.early_exit` at each threshold of the sweep, by the same network at threshold 1
(every row from its last exit: the baseline), and by an int8 dynamically quantised copy
(:func:`ddn_ray.models.quantized`, rebuilt once per window as a replica rebuilds it per version).
The same network without exits learns the same windows beside it (the plain model).
MACs per answer are the exit's count by ``FlopCounterMode``.

Part 2 (HTTP, the Elec2 network at the end of the stream, served from a checkpoint by
``ddn_ray.serve.Predictor`` on a local Ray cluster, 1 replica): latency p50 / p99 of ``/predict``
for 1 row and 50 rows, from the last exit and with early exit, float and int8; one client,
requests one after the other.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddn_ray import checkpoint as checkpoint_io
from ddn_ray import config, exits, models, stream, usecase
from ddn_ray.train import in_process_learner

PORT = 18230
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
STREAMS: dict[str, dict[str, Any]] = {
    "elec2": {"config": "jobs/configs/elec2.yaml", "model": {"exits": [0]}},
    "fashion_mnist": {"config": "jobs/configs/fashion_mnist.yaml", "model": {"exits": [0]}},
}


def state_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's serialised state_dict (what a version's weights weigh)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def sweep_stream(name: str, thresholds: tuple[float, ...]) -> dict[str, Any]:
    """Part 1 on one stream: prequential accuracy and mean MACs per threshold, plain model and int8 beside."""
    spec = STREAMS[name]
    cfg = config.load(ROOT / spec["config"], {"model": spec["model"]})
    plain_cfg = config.load(ROOT / spec["config"])
    table = usecase.stream_table(cfg)
    names = stream.input_names(table.feature_names, cfg.stream.last_label_feature)
    learner = in_process_learner(cfg, names, table.num_classes)
    plain = in_process_learner(plain_cfg, names, table.num_classes)
    costs = exits.exit_macs(learner.raw, len(names))
    plain_macs = exits.exit_macs(plain.raw, len(names))[0]
    cuts = (*thresholds, 1.0)
    hits = dict.fromkeys(cuts, 0)
    macs = dict.fromkeys(cuts, 0)
    per_exit = {t: np.zeros(len(costs), np.int64) for t in cuts}
    q_hits = dict.fromkeys(("float", "int8"), 0)
    plain_hits, rows, t0 = 0, 0, time.perf_counter()
    chosen = cfg.model.exit_threshold
    for w in stream.iter_windows(stream.ReplaySource(table, cfg.stream.window_size), cfg.stream.last_label_feature):
        x, y = torch.from_numpy(w.features), torch.from_numpy(w.labels)
        learner.raw.eval()
        for t in cuts:
            out, exit_of = exits.early_exit(learner.raw, x, t, cfg.model.exit_criterion)
            hits[t] += int((out.argmax(1) == y).sum())
            counts = np.bincount(exit_of.numpy(), minlength=len(costs))
            per_exit[t] += counts
            macs[t] += int(counts @ np.asarray(costs))
        q_out, _ = exits.early_exit(models.quantized(learner.raw), x, chosen, cfg.model.exit_criterion)
        f_out, _ = exits.early_exit(learner.raw, x, chosen, cfg.model.exit_criterion)
        q_hits["int8"] += int((q_out.argmax(1) == y).sum())
        q_hits["float"] += int((f_out.argmax(1) == y).sum())
        plain.raw.eval()
        with torch.no_grad():
            plain_hits += int((plain.raw(x).argmax(1) == y).sum())
        rows += len(w)
        learner.step(w.index, w.start, w.end, x, y)
        plain.step(w.index, w.start, w.end, x, y)
    return {
        "name": name,
        "rows": rows,
        "wall_s": time.perf_counter() - t0,
        "costs": costs,
        "exits": list(cfg.model.exits),
        "thresholds": cuts,
        "accuracy": {t: hits[t] / rows for t in cuts},
        "mean_macs": {t: macs[t] / rows for t in cuts},
        "share": {t: (per_exit[t] / rows).tolist() for t in cuts},
        "plain": {"accuracy": plain_hits / rows, "macs": plain_macs, "params": num_params(plain.raw)},
        "chosen": chosen,
        "quantised": {k: v / rows for k, v in q_hits.items()},
        "params": num_params(learner.raw),
        "bytes": {"float": state_bytes(learner.raw), "int8": state_bytes(models.quantized(learner.raw))},
        "model": learner.raw,
        "cfg": cfg,
        "names": names,
        "num_classes": table.num_classes,
        "sample": table.features[-500:],
    }


def format_sweep(r: dict[str, Any]) -> str:
    base_acc, base_macs = r["accuracy"][1.0], r["mean_macs"][1.0]
    lines = [
        (
            f"{r['name']}: {r['rows']:,} rows, exits after {r['exits']} + head; MACs per exit {list(r['costs'])}; "
            f"{r['wall_s']:.0f} s"
        ),
        "",
        "| threshold | accuracy % | vs last exit (points) | mean MACs | MACs saved % | rows per exit % |",
        "|---|---|---|---|---|---|",
    ]
    for t in r["thresholds"]:
        acc, m = r["accuracy"][t], r["mean_macs"][t]
        share = " / ".join(f"{100 * s:.0f}" for s in r["share"][t])
        label = "1 (last exit)" if t == 1.0 else f"{t:g}" + (" (config)" if t == r["chosen"] else "")
        lines.append(
            f"| {label} | {100 * acc:.2f} | {100 * (acc - base_acc):+.2f} | {m:,.0f} | "
            f"{100 * (1 - m / base_macs):.1f} | {share} |"
        )
    p = r["plain"]
    lines.append(
        f"| plain network, no exits | {100 * p['accuracy']:.2f} | {100 * (p['accuracy'] - base_acc):+.2f} | "
        f"{p['macs']:,} | {100 * (1 - p['macs'] / base_macs):.1f} | 100 |"
    )
    return "\n".join(lines)


def serve_latency(r: dict[str, Any], requests_n: int) -> list[dict[str, Any]]:
    """Part 2: HTTP latency of the stream's final multi-exit network, float and int8, with and without early exit."""
    import ray
    import requests
    from ray import serve

    from ddn_ray.serve import app_builder

    out = []
    with tempfile.TemporaryDirectory() as d:
        meta = {
            "next_offset": r["rows"],
            "next_window": 0,
            "model_version": 1,
            **checkpoint_io.model_spec(r["cfg"].model, len(r["names"]), r["num_classes"], r["names"]),
        }
        checkpoint_io.write(d, r["model"].state_dict(), [], meta)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="ddn_ray_bench")
        serve.start(http_options={"host": "127.0.0.1", "port": PORT})
        rng = np.random.default_rng(0)
        sample = r["sample"].astype(np.float32)
        try:
            for quantize in ("none", "dynamic_int8"):
                app = app_builder({"checkpoint": d, "quantize": quantize})
                serve.run(app, name="exits", route_prefix="/", blocking=False)
                url = f"http://127.0.0.1:{PORT}/predict"
                session = requests.Session()
                for batch in (1, 50):
                    for threshold in (1.0, r["chosen"]):
                        times, exits_used = [], []
                        for i in range(requests_n + 20):
                            rows = sample[rng.integers(0, len(sample), batch)].tolist()
                            t = time.perf_counter()
                            resp = session.post(url, json={"instances": rows, "exit_threshold": threshold}, timeout=30)
                            dt = time.perf_counter() - t
                            resp.raise_for_status()
                            if i >= 20:  # warm-up requests left out
                                times.append(dt)
                                exits_used += resp.json()["macs"]
                        out.append(
                            {
                                "quantize": quantize,
                                "batch": batch,
                                "threshold": threshold,
                                "p50_ms": 1000 * statistics.median(times),
                                "p99_ms": 1000 * float(np.percentile(times, 99)),
                                "mean_macs": float(np.mean(exits_used)),
                            }
                        )
                serve.delete("exits")
        finally:
            serve.shutdown()
            ray.shutdown()
    return out


def format_latency(rows: list[dict[str, Any]]) -> str:
    base = {(r["batch"]): r["p50_ms"] for r in rows if r["quantize"] == "none" and r["threshold"] == 1.0}
    lines = [
        "| weights | rows per request | threshold | p50 ms | p99 ms | vs float, last exit (p50) | mean MACs per row |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = "1 (last exit)" if r["threshold"] == 1.0 else f"{r['threshold']:g}"
        w = "float32" if r["quantize"] == "none" else "int8 dynamic"
        lines.append(
            f"| {w} | {r['batch']} | {t} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['p50_ms'] / base[r['batch']]:.2f}x | {r['mean_macs']:,.0f} |"
        )
    return "\n".join(lines)


def format_quantised(r: dict[str, Any]) -> str:
    c = r["chosen"]
    return "\n".join(
        [
            f"{r['name']} at threshold {c:g}: float32 against its int8 dynamically quantised copy (rebuilt per window)",
            "",
            "| weights | prequential accuracy % | parameters | state bytes | mean MACs per answer |",
            "|---|---|---|---|---|",
            (
                f"| float32 | {100 * r['quantised']['float']:.2f} | {r['params']:,} | {r['bytes']['float']:,} | "
                f"{r['mean_macs'][c]:,.0f} |"
            ),
            (
                f"| int8 dynamic | {100 * r['quantised']['int8']:.2f} | {r['params']:,} | {r['bytes']['int8']:,} | "
                f"{r['mean_macs'][c]:,.0f} (int8) |"
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", nargs="+", default=list(STREAMS), choices=list(STREAMS))
    parser.add_argument("--requests", type=int, default=300, help="timed HTTP requests per cell")
    args = parser.parse_args()
    os.environ.setdefault("DDN_RAY_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))
    torch.set_num_threads(1)
    print(f"# early exit, measured {time.strftime('%Y-%m-%d')} ({os.cpu_count()} CPUs, torch {torch.__version__})")
    results = {}
    for name in args.streams:
        results[name] = sweep_stream(name, THRESHOLDS)
        print()
        print(format_sweep(results[name]))
        print()
        print(format_quantised(results[name]))
    if "elec2" in results and args.requests > 0:
        print()
        print(f"elec2 served over HTTP (1 replica, 0.25 CPU; {args.requests} requests per row, one client)")
        print()
        print(format_latency(serve_latency(results["elec2"], args.requests)))


if __name__ == "__main__":
    main()
