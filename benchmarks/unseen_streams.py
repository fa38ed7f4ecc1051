"""The main job on tables no test and no loader knows: River's generators written as a user's files.

    python benchmarks/unseen_streams.py [--rows 24000] [--window 100] [--port 18410]

Each stream is drawn from a River generator (``river.datasets.synth``), written as a user would
have it (named columns, string categories and string labels, a few gaps), described in a YAML
config, and run with ``ddn-ray run --config`` (``ddn_ray.cli``, one local Ray cluster in this
process): Serve replicas answer every window over HTTP before Train learns it, ADWIN reads the
prequential errors, the ``all`` policy retrains on a signal. The four cover what the issue asks:

* **SEA, abrupt**: 3 numeric columns (1 % missing, imputed), 2 classes; the concept changes
  (SEA variants 0 -> 2 -> 3, 10 % label noise) at 1/3 and 2/3 of the rows. CSV.
* **Agrawal, gradual**: 6 numeric and 3 categorical columns (``elevel``, ``car``, ``zipcode`` as
  strings), 2 classes; classification function 0 turns into 2 over a sigmoid of ``rows / 6``
  rows centred at the middle (River's ``ConceptDriftStream``). Parquet.
* **RandomRBF, abrupt, 5 classes**: 8 numeric columns; the centroids are redrawn at the middle;
  the classes are not declared (``allow_new_classes``: the output layer grows as they appear). CSV.
* **STAGGER, abrupt**: 3 categorical columns only, 2 classes; functions 0 -> 1 -> 2 at 1/3 and
  2/3. JSON lines.

The table: served accuracy (every row answered before its label was revealed) against the
static model (frozen after ``--static-windows`` windows) and no-change, both measured in the
same run; ADWIN's signals; wall time. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from river.datasets import synth

from ddn_ray import cli


def _draw(stream: Any, n: int) -> tuple[list[dict[str, Any]], list[Any]]:
    xs, ys = [], []
    for x, y in itertools.islice(stream, n):
        xs.append(x)
        ys.append(y)
    return xs, ys


def _concat(streams: list[Any], n: int) -> tuple[list[dict[str, Any]], list[Any]]:
    xs, ys = [], []
    for k, s in enumerate(streams):
        part = n // len(streams) + (n % len(streams) if k == len(streams) - 1 else 0)
        x, y = _draw(s, part)
        xs += x
        ys += y
    return xs, ys


def sea(n: int, seed: int) -> tuple[pa.Table, dict[str, Any]]:
    xs, ys = _concat([synth.SEA(variant=v, noise=0.1, seed=seed + v) for v in (0, 2, 3)], n)
    rng = np.random.default_rng(seed)
    cols = {f"x{j}": [None if rng.random() < 0.01 else float(x[j]) for x in xs] for j in range(3)}
    table = pa.table({**cols, "label": ["high" if y else "low" for y in ys]})
    return table, {"features": list(cols), "label": "label", "classes": ["low", "high"]}


def agrawal(n: int, seed: int) -> tuple[pa.Table, dict[str, Any]]:
    drifting = synth.ConceptDriftStream(
        synth.Agrawal(classification_function=0, seed=seed),
        synth.Agrawal(classification_function=2, seed=seed + 1),
        position=n // 2,
        width=n // 6,
        seed=seed,
    )
    xs, ys = _draw(drifting, n)
    numeric = ["salary", "commission", "age", "hvalue", "hyears", "loan"]
    cols: dict[str, list[Any]] = {c: [float(x[c]) for x in xs] for c in numeric}
    cols |= {
        "elevel": [f"level-{x['elevel']}" for x in xs],
        "car": [f"make-{x['car']}" for x in xs],
        "zipcode": [f"zone-{x['zipcode']}" for x in xs],
    }
    table = pa.table({**cols, "decision": ["accept" if y else "reject" for y in ys]})
    return table, {
        "features": [*numeric, "elevel", "car", "zipcode"],
        "label": "decision",
        "classes": ["reject", "accept"],
    }  # categorical: from the string columns' type


def rbf(n: int, seed: int) -> tuple[pa.Table, dict[str, Any]]:
    xs, ys = _concat(
        [synth.RandomRBF(seed_model=seed + k, seed_sample=seed, n_classes=5, n_features=8) for k in range(2)], n
    )
    cols = {f"v{j}": [float(x[j]) for x in xs] for j in range(8)}
    table = pa.table({**cols, "cluster": [f"c{y}" for y in ys]})
    return table, {"features": list(cols), "label": "cluster", "allow_new_classes": True}


def stagger(n: int, seed: int) -> tuple[pa.Table, dict[str, Any]]:
    xs, ys = _concat(
        [synth.STAGGER(classification_function=f, seed=seed + f, balance_classes=True) for f in (0, 1, 2)], n
    )
    names = {
        "size": ["small", "medium", "large"],
        "color": ["red", "green", "blue"],
        "shape": ["square", "circle", "triangle"],
    }
    cols = {c: [v[x[c]] for x in xs] for c, v in names.items()}
    table = pa.table({**cols, "match": ["yes" if y else "no" for y in ys]})
    return table, {"features": list(cols), "label": "match", "classes": ["no", "yes"], "categorical": list(cols)}


STREAMS = {  # name: (generator, file suffix, drift, kinds, where the drifts start, as fractions of the rows)
    "SEA, abrupt": (sea, "csv", "abrupt at 1/3, 2/3", "3 numeric (1 % gaps)", (1 / 3, 2 / 3)),
    "Agrawal, gradual": (
        agrawal,
        "parquet",
        "gradual over rows/6 around 1/2",
        "6 numeric + 3 categorical",
        (1 / 2 - 1 / 12,),
    ),
    "RandomRBF, abrupt": (rbf, "csv", "abrupt at 1/2", "8 numeric", (1 / 2,)),
    "STAGGER, abrupt": (stagger, "jsonl", "abrupt at 1/3, 2/3", "3 categorical", (1 / 3, 2 / 3)),
}


def _write(table: pa.Table, path: Path) -> None:
    if path.suffix == ".csv":
        pacsv.write_csv(table, path)
    elif path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        with open(path, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in table.to_pylist())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=24000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--static-windows", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--port", type=int, default=18410, help="Serve HTTP port (127.0.0.1)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (make, suffix, drift, kinds, starts) in STREAMS.items():
            table, data = make(args.rows, args.seed)
            stem = name.split(",")[0].lower()
            path = Path(tmp) / f"{stem}.{suffix}"
            _write(table, path)
            cfg = {
                "run_name": stem,
                "storage_path": f"{tmp}/storage",
                "data": {"source": {"kind": "table", "uri": str(path)}, **data},
                "stream": {"window_size": args.window},
                "train": {"epochs_per_window": 5, "lr": 0.003},
                "drift": {"detector": "adwin"},
                "policy": {"name": "all", "cooldown_windows": 10},
                "serve": {"port": args.port, "num_replicas": 2},
                "report": {"output_dir": f"{tmp}/runs", "static_windows": args.static_windows, "plot": False},
            }
            config_path = Path(tmp) / f"{stem}.yaml"
            config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            t0 = time.monotonic()
            report = cli.main(["run", "--config", str(config_path)])
            wall = time.monotonic() - t0
            s, run = report["scores"], report["run"]
            events = sorted(e["window"] for e in report["drift"]["events"])
            delays = []  # windows from the start of each drift to the first signal after it
            for k, start in enumerate(starts):
                w0 = int(start * len(table)) // args.window
                w1 = int(starts[k + 1] * len(table)) // args.window if k + 1 < len(starts) else run["windows"] + 1
                delays.append(next((str(e - w0) for e in events if w0 <= e < w1), "missed"))
            signals = f"{len(events)}; {', '.join(delays)}"
            rows.append(
                f"| {name} | {len(table):,} | {kinds} | {len(report['data']['classes'])} | {drift} "
                f"| {run['windows']} | {run['versions_published']} | {run['rows_quarantined']} "
                f"| {s['dynamic (served)']['accuracy']:.2%} | {s['static (frozen after training)']['accuracy']:.2%} "
                f"| {s['no-change (same label delay)']['accuracy']:.2%} | {signals} "
                f"| {report['http']['failed']} | {wall:.0f} |"
            )
            print(rows[-1], flush=True)
    print(
        f"\nwindows of {args.window} rows; static = frozen after {args.static_windows} windows; scores on the rows "
        "after them\n"
    )
    print(
        "| stream | rows | features | classes | drift | windows | versions | quarantined | served | static "
        "| no-change | ADWIN signals; windows to the first after each drift | failed requests | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
