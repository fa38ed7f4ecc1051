"""Strategies on Elec2 against River's online learners, under the same label delay.

    python benchmarks/elec2_strategies.py [--windows 1 50 500] [--methods finetune:adwin:all ...]

Every method sees the same copy in the same order under the main job's protocol at
each window size W: predict a whole window, then learn it (labels revealed once per
window; W=1 is zero delay, River's ``progressive_val_score`` with ``delay=0``). Ours
run ``train.replay_in_process`` (the Ray job's served predictions match it row for
row) with a strategy, drift detector and policy; River's ARF and Hoeffding Adaptive
Tree run ``predict_one`` on every row of the window, then ``learn_one``. Also the
static MLP (trained on the rows before --eval-from, then frozen) and no-change (the
last revealed label). Scores on rows from --eval-from on.
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
    parser.add_argument("--config", default=str(ROOT / "jobs" / "configs" / "elec2_builtin.yaml"))
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 50, 500], help="label-reveal window sizes W")
    parser.add_argument("--eval-from", type=int, default=2000)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[
            "finetune:none:none",
            "finetune:adwin:all",
            "online_ewc:adwin:all",
            "finetune:adwin:all:lag",
            "online_ewc:adwin:all:lag",
        ],
        help="ours as strategy:detector:policy[:lag] (lag: the last revealed label as an input)",
    )
    parser.add_argument(
        "--small-window-epochs",
        type=int,
        default=3,
        help="epochs per window when W < batch size (W=1 at 1, 2, 3: 86.6, 87.5, 87.7%%)",
    )
    parser.add_argument("--no-river", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = config.load(args.config)
    table = datasets.load_elec2(base.data.path, base.data.max_rows)
    x, y = table.features, table.labels
    prev = np.concatenate([[0], y[:-1]])
    ev = np.arange(len(y)) >= args.eval_from
    rows: list[tuple[int, str, np.ndarray, float]] = []

    def add(w: int, label: str, make_pred) -> None:
        t0 = time.perf_counter()
        rows.append((w, label, make_pred(), time.perf_counter() - t0))
        print(f"  W={w} {label}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    for w in args.windows:
        last_revealed = np.array([y[(i // w) * w - 1] if i >= w else 0 for i in range(len(y))])  # newest label known
        at_w = base.model_copy(update={"stream": base.stream.model_copy(update={"window_size": w})})
        if w < base.train.batch_size:  # a window smaller than a batch: fewer passes (10 over 1 row overfit it)
            at_w = at_w.model_copy(
                update={"train": base.train.model_copy(update={"epochs_per_window": args.small_window_epochs})}
            )
        for spec in args.methods:
            strat, det, pol, *extra = spec.split(":")
            lag = extra == ["lag"]
            at_w_lag = at_w.model_copy(update={"stream": at_w.stream.model_copy(update={"last_label_feature": lag})})
            cfg = at_w_lag.model_copy(
                update={
                    "strategy": base.strategy.model_copy(update={"name": strat}),
                    "drift": base.drift.model_copy(
                        update={"detector": det, "params": base.drift.params if det == base.drift.detector else {}}
                    ),
                    "policy": base.policy.model_copy(update={"name": pol}),
                }
            )
            add(
                w,
                f"ddn_ray MLP {strat}"
                + (f" + {det}/{pol}" if det != "none" else "")
                + (" + last label" if lag else ""),
                lambda cfg=cfg: replay_in_process(cfg, table).predictions,
            )
        add(
            w,
            "static MLP (first rows, frozen)",
            lambda at_w=at_w, w=w: (
                replay_in_process(at_w, table, freeze_after=max(1, -(-args.eval_from // w))).predictions
            ),
        )
        if not args.no_river:
            from river import forest, tree

            add(
                w,
                "River ARFClassifier",
                lambda w=w: river_windowed(lambda: forest.ARFClassifier(seed=42), x, y, table.feature_names, w),
            )
            add(
                w,
                "River HoeffdingAdaptiveTree",
                lambda w=w: river_windowed(
                    lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=42), x, y, table.feature_names, w
                ),
            )
            # the same extra input as ours: the last label revealed before the row's window
            x_lag = np.column_stack([x, last_revealed])
            add(
                w,
                "River ARFClassifier + last label",
                lambda w=w, x_lag=x_lag: river_windowed(
                    lambda: forest.ARFClassifier(seed=42), x_lag, y, (*table.feature_names, "last_label"), w
                ),
            )
        rows.append((w, "no-change (last revealed label)", last_revealed, 0.0))
    print(
        f"\nElec2, {len(y):,} rows; labels revealed once per window of W rows (W=1: delay 0; "
        f"delay of a row = its distance to the window's end); scores on rows {args.eval_from:,}-{len(y):,}"
    )
    print("| W | method | accuracy | kappa | kappa-temporal | wall s |\n|---|---|---|---|---|---|")
    for w, label, pred, dt in rows:
        s = evaluate.score(y[ev], pred[ev], prev[ev], table.num_classes)
        print(f"| {w} | {label} | {s['accuracy']:.2%} | {s['kappa']:.3f} | {s['kappa_temporal']:.3f} | {dt:.0f} |")


if __name__ == "__main__":
    main()
