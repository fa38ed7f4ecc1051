"""Strategies on Elec2 against River's online learners, under the same label delay.

    python benchmarks/elec2_strategies.py [--window 50] [--strategies finetune replay online_ewc lwf]

Every method sees the same copy in the same order under the main job's protocol:
predict a whole window, then learn it (labels revealed once per window). Ours run
``train.replay_in_process`` (the Ray job's served predictions match it row for row);
River's ARF and Hoeffding Adaptive Tree run ``predict_one`` on every row of the window,
then ``learn_one``. Also: River at zero delay (``learn_one`` right after each
``predict_one``), no-change and the static model. Scores on rows from --eval-from on.
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

from ddn_ray import config, datasets, evaluate  # noqa: E402
from ddn_ray.train import replay_in_process  # noqa: E402


def river_windowed(make, x: np.ndarray, y: np.ndarray, names: tuple[str, ...], window: int) -> np.ndarray:
    """Predict each window with the model as it was before the window, then learn the window."""
    model, pred = make(), np.zeros(len(y), dtype=np.int64)
    rows = [dict(zip(names, map(float, r))) for r in x]
    for s in range(0, len(y), window):
        for i in range(s, min(s + window, len(y))):
            p = model.predict_one(rows[i])
            pred[i] = 0 if p is None else int(p)
        for i in range(s, min(s + window, len(y))):
            model.learn_one(rows[i], int(y[i]))
    return pred


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "jobs" / "configs" / "elec2.yaml"))
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--eval-from", type=int, default=2000)
    parser.add_argument("--strategies", nargs="+", default=["finetune", "replay", "online_ewc", "lwf"])
    parser.add_argument("--no-river", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = config.load(args.config, {"stream": {"window_size": args.window}})
    table = datasets.load_elec2(base.data.path, base.data.max_rows)
    x, y, w = table.features, table.labels, args.window
    prev = np.concatenate([[0], y[:-1]])
    ev = np.arange(len(y)) >= args.eval_from
    rows: list[tuple[str, np.ndarray, float]] = []
    for name in args.strategies:
        cfg = base.model_copy(update={"strategy": base.strategy.model_copy(update={"name": name})})
        t0 = time.perf_counter()
        pred, _ = replay_in_process(cfg, table)
        rows.append((f"ddn_ray MLP + {name}", pred, time.perf_counter() - t0))
        print(f"  done {rows[-1][0]} in {rows[-1][2]:.0f} s", flush=True)
    if not args.no_river:
        from river import forest, tree

        learners = {"River ARFClassifier": lambda: forest.ARFClassifier(seed=42),
                    "River HoeffdingAdaptiveTree": lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=42)}
        for label, make in learners.items():
            for window, tag in ((w, f"window {w}"), (1, "delay 0")):
                t0 = time.perf_counter()
                pred = river_windowed(make, x, y, table.feature_names, window)
                rows.append((f"{label} ({tag})", pred, time.perf_counter() - t0))
                print(f"  done {rows[-1][0]} in {rows[-1][2]:.0f} s", flush=True)
    last_revealed = np.array([y[(i // w) * w - 1] if i >= w else 0 for i in range(len(y))])
    rows.append((f"no-change (window {w})", last_revealed, 0.0))
    rows.append(("no-change (delay 0)", prev, 0.0))
    print(f"\nElec2, {len(y):,} rows in windows of {w}; scores on rows {args.eval_from:,}-{len(y):,}")
    print("| method | accuracy | kappa | kappa-temporal | wall s |\n|---|---|---|---|---|")
    for label, pred, dt in rows:
        s = evaluate.score(y[ev], pred[ev], prev[ev], table.num_classes)
        print(f"| {label} | {s['accuracy']:.2%} | {s['kappa']:.3f} | {s['kappa_temporal']:.3f} | {dt:.0f} |")


if __name__ == "__main__":
    main()
