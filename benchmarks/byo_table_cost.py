"""What a user's table costs against the built-in Elec2 path, both measured in this run.

    python benchmarks/byo_table_cost.py [--repeats 5] [--rounds 2] [--max-rows N] [--no-jobs]

Both paths read the same CSV (``$DDN_RAY_DATA_DIR/elec2/electricity.csv``) and give the trainer
the same windows, bit for bit (``tests/unit/test_tables.py``).
The generic rows are what the main job does: requests of named columns in pandas' split
orientation; other rows vary one thing (``records`` bodies; running scaling and imputation).

1. **Stream side, no Ray**: per window of 50 rows, from the file to what the client sends and
   the trainer gets. Built-in: ``datasets.load_elec2`` + ``stream.ReplaySource`` + an
   ``instances`` body. Generic: ``sources.FileSource`` (a pyarrow dataset over the CSV) +
   ``tables.TabularStream`` (row checks, the request's rows, then on reveal the featurizer's update,
   transform and label ids). Best of ``--repeats``, in microseconds per window.
2. **Replica side, no Ray**: per request of 50 rows, what a replica does before the model:
   parse an ``instances`` body (pydantic) against parse, check and featurize a body of named columns.
3. **The main job** (Ray, HTTP, Train, controller) on all of Elec2 with
   ``jobs/configs/elec2_builtin.yaml`` and with ``jobs/configs/elec2.yaml`` (the default) in this process,
   ``--rounds`` times each with the order reversed every other round (load on this machine drifts
   over minutes): the median wall time, time per window, versions, served accuracy.

Ratios are generic / built-in (the issue's goal: per-window cost ratio <= 1.1, wall not slower).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddn_ray import config, stream, tables
from ddn_ray.client import instances_body
from ddn_ray.features import Featurizer
from ddn_ray.serve import PredictRequest
from ddn_ray.usecases import datasets

CONFIGS = {
    "built-in (data.name: elec2)": ROOT / "jobs" / "configs" / "elec2_builtin.yaml",
    "generic (data.source: table)": ROOT / "jobs" / "configs" / "elec2.yaml",
}


def _best(fn: Any, repeats: int) -> tuple[float, int]:
    best, n = float("inf"), 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - t0)
    return best, n


def stream_side(cfg: config.JobConfig, repeats: int) -> dict[str, tuple[float, int]]:
    w = cfg.stream.window_size

    def built_in() -> int:
        table = datasets.load_elec2(None, cfg.data.max_rows)
        n = 0
        for win in stream.iter_windows(stream.ReplaySource(table, w, 0), False):
            instances_body(win.offsets, win.features)
            n += 1
        return n

    def generic(data: config.DataConfig, body: str) -> Any:
        def run() -> int:
            schema = tables.read_schema(data)
            fz = tables.featurizer_for(data, cfg.model.task, schema=schema)
            s = tables.TabularStream(source=tables.source_for(data, fz, window_size=w, schema=schema), featurizer=fz)
            n = 0
            for win in s.windows():
                s.split(win) if body == "split" else s.records(win)
                s.reveal(win)
                n += 1
            return n

        return run

    # Elec2's config needs no fitted preprocessing (its columns come scaled, a gap is quarantined); the
    # same table with running scaling and imputation shows what stateful preprocessing costs a window.
    stateful = cfg.data.model_copy(update={"scaling": "standard", "missing": "impute"})
    return {
        "built-in": _best(built_in, repeats),
        "generic": _best(generic(cfg.data, "split"), repeats),
        "generic, records": _best(generic(cfg.data, "records"), repeats),
        "generic, scaling + imputation": _best(generic(stateful, "split"), repeats),
    }


def replica_side(cfg: config.JobConfig, repeats: int) -> dict[str, tuple[float, int]]:
    fz = tables.featurizer_for(cfg.data, cfg.model.task)
    s = tables.TabularStream(source=tables.source_for(cfg.data, fz, window_size=cfg.stream.window_size), featurizer=fz)
    wins = [w for _, w in zip(range(200), s.windows())]
    for w in wins:
        s.reveal(w)
    state = Featurizer.from_state(fz.state_dict())
    bodies_r = [json.dumps({"records": s.records(w)}) for w in wins]
    bodies_s = [json.dumps({"columns": s.record_columns, "data": s.split(w)}) for w in wins]
    bodies_i = [json.dumps(instances_body(w.offsets, state.transform(w.table))) for w in wins]

    def instances() -> int:
        for b in bodies_i:
            np.asarray(PredictRequest.model_validate_json(b).instances, np.float32)
        return len(bodies_i)

    def records() -> int:
        for b in bodies_r:
            req = PredictRequest.model_validate_json(b)
            rows, _ = state.read_records(req.records)
            state.check(rows, labels=False)
            state.transform(rows)
        return len(bodies_r)

    def split() -> int:
        for b in bodies_s:
            req = PredictRequest.model_validate_json(b)
            rows, _ = state.read_split(req.columns, req.data)
            state.check(rows, labels=False)
            state.transform(rows)
        return len(bodies_s)

    sizes = {
        k: float(np.mean([len(b) for b in bodies]))
        for k, bodies in (("built-in", bodies_i), ("generic", bodies_s), ("generic, records", bodies_r))
    }
    return {
        "built-in": _best(instances, repeats),
        "generic": _best(split, repeats),
        "generic, records": _best(records, repeats),
    }, sizes


def jobs(max_rows: int | None, port: int, rounds: int) -> dict[str, dict[str, Any]]:
    """Each config ``rounds`` times, the order reversed every other round (A B, B A, ...): the median of each figure."""
    spec = importlib.util.spec_from_file_location("continuous", ROOT / "jobs" / "continuous.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, path in list(CONFIGS.items()) if r % 2 == 0 else list(CONFIGS.items())[::-1]:
                over: dict[str, Any] = {
                    "storage_path": f"{tmp}/storage",
                    "serve": {"port": port},
                    "report": {"output_dir": f"{tmp}/runs", "plot": False},
                    "run_name": f"{Path(path).stem}-{r}",
                }
                if max_rows:
                    over["data"] = {"max_rows": max_rows}
                rep = module.main(config.load(path, over))
                runs[name].append(
                    {
                        "wall_s": rep["run"]["wall_s"],
                        "windows": rep["run"]["windows"],
                        "versions": rep["run"]["versions_published"],
                        "rows": rep["run"]["rows_served"],
                        "accuracy": rep["scores"]["dynamic (served)"]["accuracy"],
                        "static": rep["scores"]["static (frozen after training)"]["accuracy"],
                        "http_p50_s": rep["http"]["latency_s"]["p50"],
                        "failed": rep["http"]["failed"],
                    }
                )
    return {
        name: {k: float(np.median([x[k] for x in xs])) for k in xs[0]} | {"walls": [x["wall_s"] for x in xs]}
        for name, xs in runs.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-rows", type=int, default=None, help="a slice of Elec2 (default: all 45,312 rows)")
    parser.add_argument("--no-jobs", action="store_true", help="skip part 3 (the two main jobs, ~6 min here)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each job, alternating which goes first")
    parser.add_argument("--port", type=int, default=18400, help="Serve HTTP port of the two jobs (127.0.0.1)")
    args = parser.parse_args(argv)
    if not os.environ.get(datasets.DATA_DIR_ENV):
        os.environ[datasets.DATA_DIR_ENV] = str(ROOT.parent / "shared" / "datasets")
    over = {"data": {"max_rows": args.max_rows}} if args.max_rows else {}
    cfg = config.load(CONFIGS["generic (data.source: table)"], over)
    print(
        f"Elec2 from {os.environ[datasets.DATA_DIR_ENV]}, windows of {cfg.stream.window_size} rows, "
        f"best of {args.repeats}"
    )
    print(
        'generic: named columns in pandas\' split orientation ({"columns": [...], "data": [[...], ...]}), '
        "what the replay client sends; the other rows vary one thing"
    )
    print("| part | built-in | generic | ratio |\n|---|---|---|---|")
    stream_m = stream_side(cfg, args.repeats)
    replica_m, sizes = replica_side(cfg, args.repeats)
    for part, m, unit in (
        ("1. stream side, per window", stream_m, "window"),
        ("2. replica side, per request of 50 rows", replica_m, "request"),
    ):
        b, nb = m["built-in"]
        for name, (g, ng) in m.items():
            if name == "built-in":
                continue
            assert nb == ng, (nb, ng)
            label = part if name == "generic" else f"{part}: {name}"
            print(
                f"| {label} ({nb} {unit}s) | {1e6 * b / nb:.0f} µs | {1e6 * g / ng:.0f} µs | {g / b:.2f} |", flush=True
            )
    print(
        f"| request body of 50 rows | {sizes['built-in']:.0f} B | {sizes['generic']:.0f} B | "
        f"{sizes['generic'] / sizes['built-in']:.2f} |"
    )
    print(
        f"| request body of 50 rows: records | {sizes['built-in']:.0f} B | {sizes['generic, records']:.0f} B | "
        f"{sizes['generic, records'] / sizes['built-in']:.2f} |"
    )
    if args.no_jobs:
        return
    res = jobs(args.max_rows, args.port, args.rounds)
    (_, b), (_, g) = res.items()
    print(
        f"\n| main job (median of {args.rounds}) | wall s (each run) | ms / window | windows | versions "
        "| served accuracy | static | HTTP p50 | failed |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in res.items():
        each = ", ".join(f"{w:.0f}" for w in r["walls"])
        print(
            f"| {name} | {r['wall_s']:.1f} ({each}) | {1e3 * r['wall_s'] / r['windows']:.1f} | {r['windows']:.0f} "
            f"| {r['versions']:.0f} | {r['accuracy']:.2%} | {r['static']:.2%} | {1e3 * r['http_p50_s']:.1f} ms "
            f"| {r['failed']:.0f} |"
        )
    print(
        f"| ratio generic / built-in | {g['wall_s'] / b['wall_s']:.2f} | {g['wall_s'] / b['wall_s']:.2f} | | | "
        f"{100 * (g['accuracy'] - b['accuracy']):+.2f} points | | {g['http_p50_s'] / b['http_p50_s']:.2f} | |"
    )


if __name__ == "__main__":
    main()
