"""Choose the window size: served accuracy on all of Elec2 against the label delay it implies.

    python benchmarks/window_size.py [--sizes 25 50 100 250 500 1000] [--config jobs/configs/elec2_builtin.yaml]

A window's labels are revealed only after the whole window was served, so a row
waits between 1 and W rows for its label to reach training (plus the publish).
This runs the main job's learning protocol in-process (``train.replay_in_process``,
the one the Ray job's served predictions match row for row) for each W and prints
prequential accuracy, kappa, kappa-temporal, the static and no-change baselines, and
compute time. In the Ray job each window also costs a fixed overhead (HTTP, Dataset
hand-off, publish, replica sync): see the main job's wall time in docs/usecases/elec2.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddn_ray import config, evaluate
from ddn_ray.train import replay_in_process
from ddn_ray.usecases import datasets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "jobs" / "configs" / "elec2_builtin.yaml"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 250, 500, 1000])
    parser.add_argument("--eval-from", type=int, default=500, help="score rows from this offset on (as the job)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = config.load(args.config)
    table = datasets.load_elec2(base.data.path, base.data.max_rows)
    y = table.labels
    prev = np.concatenate([[0], y[:-1]])
    ev = np.arange(len(y)) >= args.eval_from
    print(
        f"Elec2, {len(y):,} rows; scores on rows {args.eval_from:,}-{len(y):,}; "
        f"{base.train.optimizer} lr={base.train.lr} batch={base.train.batch_size} epochs/window={base.train.epochs_per_window}"
    )
    print(
        f"| {'W':>5s} | {'windows':>7s} | {'accuracy':>8s} | {'kappa':>6s} | {'kappa_t':>7s} | {'static':>7s} "
        f"| {'no-change (same delay)':>22s} | {'mean delay rows':>15s} | {'compute s':>9s} |"
    )
    print("|" + "|".join("-" * (n + 2) for n in (5, 7, 8, 6, 7, 7, 22, 15, 9)) + "|")
    for w in args.sizes:
        cfg = base.model_copy(update={"stream": base.stream.model_copy(update={"window_size": w})})
        t0 = time.perf_counter()
        pred, win, _, _ = replay_in_process(cfg, table)
        dt = time.perf_counter() - t0
        static = replay_in_process(cfg, table, freeze_after=max(1, -(-args.eval_from // w))).predictions
        last_revealed = np.array([y[i * w - 1] if i else 0 for i in win])
        s = evaluate.score(y[ev], pred[ev], prev[ev], table.num_classes)
        st = evaluate.accuracy(y[ev], static[ev])
        nc = evaluate.accuracy(y[ev], last_revealed[ev])
        print(
            f"| {w:5d} | {win.max() + 1:7d} | {s['accuracy']:8.2%} | {s['kappa']:6.3f} | {s['kappa_temporal']:7.3f} "
            f"| {st:7.2%} | {nc:22.2%} | {(w + 1) / 2:15.1f} | {dt:9.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
