"""Dynamic networks against the plain model, one run per stream: early exit, int8 serving, a distilled student.

    python benchmarks/dynamic_networks.py [--streams elec2 fashion_mnist] [--requests 200]

Streams: Elec2 at W=50 (``jobs/configs/elec2.yaml``) and Fashion-MNIST under rotation
(``jobs/configs/fashion_mnist.yaml``), each with its job's network given one early exit
(``model.exits: [0]``) and a distilled student (``distill.student``, Hinton et al. 2015).
One :class:`~ddn_ray.learner.OnlineLearner` per stream learns the multi-exit teacher and
distils the student, the job's drift detector and retraining policy included; the same
network without exits learns the same windows beside it (the plain model). Before each window is
learned, every row of it is answered:

* by :func:`ddn_ray.exits.early_exit` at each threshold of the sweep, and at threshold 1 (every
  row from its last exit: the baseline the savings are measured against);
* by an int8 dynamically quantised copy (:func:`ddn_ray.models.quantized`), rebuilt once per
  window as a replica rebuilds it once per version;
* by the student, and by what the controller would serve: the student while it was within
  ``distill.margin`` of the teacher on the window before (:func:`ddn_ray.distill.serve_student`).

MACs per answer are the answering exit's count by ``FlopCounterMode``. Then each model at the
end of the stream is served from a checkpoint by ``ddn_ray.serve.Predictor`` on a local Ray
cluster (1 replica, 0.25 CPU) and ``/predict`` is timed for 1 row and 50 rows, one client,
requests one after the other (latency p50 / p99 over ``--requests`` requests after 20 warm-up ones).
"""

from __future__ import annotations

import argparse
import io
import logging
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
from ddn_ray import config, distill, exits, models, stream, usecase
from ddn_ray.config import ModelConfig
from ddn_ray.train import in_process_learner

PORT = 18230
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
STREAMS: dict[str, dict[str, Any]] = {
    "elec2": {
        "config": "jobs/configs/elec2.yaml",
        "overrides": {"model": {"exits": [0]}, "distill": {"student": {"hidden_sizes": [16]}}},
    },
    "fashion_mnist": {
        "config": "jobs/configs/fashion_mnist.yaml",
        "overrides": {"model": {"exits": [0]}, "distill": {"student": {"kind": "mlp", "hidden_sizes": [64]}}},
    },
}


def state_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's serialised ``state_dict`` (what a version's weights weigh)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def hits(out: torch.Tensor, y: torch.Tensor) -> int:
    return int((out.argmax(1) == y).sum())


def learn_stream(name: str) -> dict[str, Any]:
    """One prequential pass: every answer above scored on each window before the window is learned."""
    spec = STREAMS[name]
    cfg = config.load(ROOT / spec["config"], spec["overrides"])
    plain_cfg = config.load(ROOT / spec["config"])
    table = usecase.stream_table(cfg)
    names = stream.input_names(table.feature_names, cfg.stream.last_label_feature)
    learner = in_process_learner(cfg, names, table.num_classes)
    plain = in_process_learner(plain_cfg, names, table.num_classes)
    assert learner.distiller is not None
    student = learner.distiller.student
    costs = exits.exit_macs(learner.raw, len(names))
    cuts = (*THRESHOLDS, 1.0)
    chosen = cfg.model.exit_threshold
    assert chosen in cuts, f"the config's exit_threshold {chosen} must be one of the swept thresholds"
    n_exit = len(costs)
    count = dict.fromkeys(("rows", "plain", "int8", "student", "served", "student_windows", "windows"), 0)
    by_cut = {t: {"hits": 0, "macs": 0, "per_exit": np.zeros(n_exit, np.int64)} for t in cuts}
    previous: tuple[float, float] | None = None  # (teacher, student) accuracy on the window before
    t0 = time.perf_counter()
    for w in stream.iter_windows(stream.ReplaySource(table, cfg.stream.window_size), cfg.stream.last_label_feature):
        x, y = torch.from_numpy(w.features), torch.from_numpy(w.labels)
        learner.raw.eval()
        for t in cuts:
            out, exit_of = exits.early_exit(learner.raw, x, t, cfg.model.exit_criterion)
            per = np.bincount(exit_of.numpy(), minlength=n_exit)
            by_cut[t]["hits"] += hits(out, y)
            by_cut[t]["per_exit"] += per
            by_cut[t]["macs"] += int(per @ np.asarray(costs))
        count["int8"] += hits(
            exits.early_exit(models.quantized(learner.raw), x, chosen, cfg.model.exit_criterion)[0], y
        )
        with torch.no_grad():
            teacher_hits = hits(learner.raw(x), y)
            student_hits = hits(student.eval()(x), y)
            count["plain"] += hits(plain.raw.eval()(x), y)
        count["student"] += student_hits
        serve_student = previous is not None and distill.serve_student(*previous, cfg.distill.margin)
        count["served"] += student_hits if serve_student else teacher_hits
        count["student_windows"] += int(serve_student)
        count["windows"] += 1
        count["rows"] += len(w)
        metrics, _ = learner.step(w.index, w.start, w.end, x, y)
        previous = (metrics.pre_accuracy, metrics.student_pre_accuracy)
        plain.step(w.index, w.start, w.end, x, y)
    rows = count["rows"]
    return {
        "name": name,
        "rows": rows,
        "windows": count["windows"],
        "wall_s": time.perf_counter() - t0,
        "cfg": cfg,
        "names": names,
        "num_classes": table.num_classes,
        "costs": costs,
        "cuts": cuts,
        "chosen": chosen,
        "accuracy": {t: by_cut[t]["hits"] / rows for t in cuts},
        "mean_macs": {t: by_cut[t]["macs"] / rows for t in cuts},
        "share": {t: (by_cut[t]["per_exit"] / rows).tolist() for t in cuts},
        "plain": {
            "accuracy": count["plain"] / rows,
            "macs": exits.exit_macs(plain.raw, len(names))[0],
            "params": num_params(plain.raw),
            "bytes": state_bytes(plain.raw),
        },
        "teacher": {"params": num_params(learner.raw), "bytes": state_bytes(learner.raw)},
        "int8": {
            "float": by_cut[chosen]["hits"] / rows,  # the float model at the config's threshold, swept above
            "int8": count["int8"] / rows,
            "bytes": state_bytes(models.quantized(learner.raw)),
        },
        "student": {
            "accuracy": count["student"] / rows,
            "served": count["served"] / rows,
            "student_share": count["student_windows"] / count["windows"],
            "macs": exits.exit_macs(student, len(names))[0],
            "params": num_params(student),
            "bytes": state_bytes(student),
            "distillations": learner.distiller.distillations,
        },
        "models": {"teacher": learner.raw, "student": student},
        "sample": table.features[-500:].astype(np.float32),
    }


def format_exits(r: dict[str, Any]) -> str:
    base_acc, base_macs = r["accuracy"][1.0], r["mean_macs"][1.0]
    lines = [
        (
            f"{r['name']}: early exit, {r['rows']:,} rows; exits after {list(r['cfg'].model.exits)} + head; "
            f"MACs per exit {list(r['costs'])}"
        ),
        "",
        "| threshold | accuracy % | vs last exit (points) | mean MACs per answer | MACs saved % | rows per exit % |",
        "|---|---|---|---|---|---|",
    ]
    for t in r["cuts"]:
        acc, m = r["accuracy"][t], r["mean_macs"][t]
        share = " / ".join(f"{100 * s:.0f}" for s in r["share"][t])
        label = "1 (last exit)" if t == 1.0 else f"{t:g}" + (" (config)" if t == r["chosen"] else "")
        lines.append(
            f"| {label} | {100 * acc:.2f} | {100 * (acc - base_acc):+.2f} | {m:,.0f} | "
            f"{100 * (1 - m / base_macs):.1f} | {share} |"
        )
    p = r["plain"]
    lines.append(
        f"| plain network (no exits) | {100 * p['accuracy']:.2f} | {100 * (p['accuracy'] - base_acc):+.2f} | "
        f"{p['macs']:,} | {100 * (1 - p['macs'] / base_macs):.1f} | 100 |"
    )
    return "\n".join(lines)


def format_models(r: dict[str, Any], latency: dict[str, dict[int, float]] | None) -> str:
    """Accuracy, parameters, bytes, MACs and HTTP p50 of every served variant, ratios against the teacher."""
    c, s, q = r["chosen"], r["student"], r["int8"]
    full = r["costs"][-1]
    rows = [  # name, accuracy, params, bytes, MACs per answer, latency key
        (
            "teacher, last exit (float32)",
            r["accuracy"][1.0],
            r["teacher"]["params"],
            r["teacher"]["bytes"],
            full,
            "teacher",
        ),
        (
            f"teacher, early exit at {c:g}",
            q["float"],
            r["teacher"]["params"],
            r["teacher"]["bytes"],
            r["mean_macs"][c],
            "teacher_exit",
        ),
        (
            f"teacher int8, early exit at {c:g}",
            q["int8"],
            r["teacher"]["params"],
            q["bytes"],
            r["mean_macs"][c],
            "int8_exit",
        ),
        ("student (distilled)", s["accuracy"], s["params"], s["bytes"], s["macs"], "student"),
        (
            f"served: student within {r['cfg'].distill.margin:g} of the teacher ({100 * s['student_share']:.0f} % of windows)",
            s["served"],
            None,
            None,
            None,
            None,
        ),
        (
            "plain network (no exits, float32)",
            r["plain"]["accuracy"],
            r["plain"]["params"],
            r["plain"]["bytes"],
            r["plain"]["macs"],
            None,
        ),
    ]
    lines = [
        (
            f"{r['name']}: served variants ({s['distillations']} distillations, every "
            f"{r['cfg'].distill.every_windows} windows; student {list(r['cfg'].distill.student.hidden_sizes)})"
        ),
        "",
        "| model | accuracy % | parameters | weights (bytes) | MACs per answer | vs teacher (MACs) | HTTP p50 ms, 1 row | HTTP p50 ms, 50 rows |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, acc, params, size, macs, key in rows:
        lat = (latency or {}).get(key or "", {})
        cells = [
            name,
            f"{100 * acc:.2f}",
            f"{params:,}" if params is not None else "-",
            f"{size:,}" if size is not None else "-",
            f"{macs:,.0f}" if macs is not None else "-",
            f"{macs / full:.3f}x" if macs is not None else "-",
            f"{lat[1]:.2f}" if 1 in lat else "-",
            f"{lat[50]:.2f}" if 50 in lat else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _checkpoint(directory: str, model: torch.nn.Module, mcfg: ModelConfig, r: dict[str, Any]) -> str:
    meta = {
        "next_offset": r["rows"],
        "next_window": r["windows"],
        "model_version": 1,
        **checkpoint_io.model_spec(mcfg, len(r["names"]), r["num_classes"], r["names"]),
    }
    checkpoint_io.write(directory, model.state_dict(), [], meta)
    return directory


def serve_latency(r: dict[str, Any], requests_n: int) -> tuple[dict[str, dict[int, float]], list[str]]:
    """HTTP ``/predict`` latency of each variant at the end of the stream: ``{variant: {rows: p50 ms}}`` and lines
    with p50 / p99 for the table's notes."""
    import requests
    from ray import serve

    from ddn_ray.serve import app_builder

    variants = [  # key, model, config, quantize, threshold
        ("teacher", r["models"]["teacher"], r["cfg"].model, "none", 1.0),
        ("teacher_exit", r["models"]["teacher"], r["cfg"].model, "none", r["chosen"]),
        ("int8_exit", r["models"]["teacher"], r["cfg"].model, "dynamic_int8", r["chosen"]),
        ("student", r["models"]["student"], r["cfg"].distill.student, "none", 1.0),
    ]
    rng = np.random.default_rng(0)
    out: dict[str, dict[int, float]] = {}
    notes = []
    session = requests.Session()
    url = f"http://127.0.0.1:{PORT}/predict"
    for key, model, mcfg, quantize, threshold in variants:
        with tempfile.TemporaryDirectory() as d:
            serve.run(
                app_builder({"checkpoint": _checkpoint(d, model, mcfg, r), "quantize": quantize}),
                name="bench",
                route_prefix="/",
            )
            for batch in (1, 50):
                times = []
                for i in range(requests_n + 20):
                    rows = r["sample"][rng.integers(0, len(r["sample"]), batch)].tolist()
                    t = time.perf_counter()
                    resp = session.post(url, json={"instances": rows, "exit_threshold": threshold}, timeout=30)
                    dt = time.perf_counter() - t
                    resp.raise_for_status()
                    if i >= 20:
                        times.append(dt)
                out.setdefault(key, {})[batch] = 1000 * statistics.median(times)
                notes.append(
                    f"{key}, {batch} rows: p50 {1000 * statistics.median(times):.2f} ms, p99 {1000 * float(np.percentile(times, 99)):.2f} ms"
                )
            serve.delete("bench")
    return out, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", nargs="+", default=list(STREAMS), choices=list(STREAMS))
    parser.add_argument("--requests", type=int, default=200, help="timed HTTP requests per variant and batch size")
    args = parser.parse_args()
    os.environ.setdefault("DDN_RAY_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))
    torch.set_num_threads(1)
    print(
        f"# dynamic networks, measured {time.strftime('%Y-%m-%d')} ({os.cpu_count()} CPUs, torch {torch.__version__})"
    )
    results = {}
    for name in args.streams:
        results[name] = learn_stream(name)
        print(f"\n{name}: learned in {results[name]['wall_s']:.0f} s\n", file=sys.stderr)
        print()
        print(format_exits(results[name]))
    latency: dict[str, Any] = {}
    notes: list[str] = []
    if args.requests > 0:
        import ray
        from ray import serve

        logging.getLogger("ray").setLevel(logging.WARNING)
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local cluster on 127.0.0.1 for this run only
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            namespace="ddn_ray_bench",
            logging_level=logging.WARNING,
        )
        serve.start(http_options={"host": "127.0.0.1", "port": PORT})
        try:
            for name, r in results.items():
                latency[name], lines = serve_latency(r, args.requests)
                notes += [f"{name} {line}" for line in lines]
        finally:
            serve.shutdown()
            ray.shutdown()
    for name, r in results.items():
        print()
        print(format_models(r, latency.get(name)))
    if notes:
        print(f"\nHTTP: 1 replica at 0.25 CPU, one client, {args.requests} requests per cell after 20 warm-up ones")
        for line in notes:
            print(f"- {line}")


if __name__ == "__main__":
    main()
