"""Meta-learned initialisation (Reptile) against fresh resets and plain fine-tuning: recovery after known drifts.

    python benchmarks/meta_init.py [--rows 12000 --drifts 4000 8000]

Streams with known drift points: three concepts of SEA, Agrawal and RandomRBF (River's generators,
abrupt drifts at ``--drifts``, the streams of ``benchmarks/synthetic_drift.py``, learned with
``jobs/configs/elec2_builtin.yaml``'s network and settings), and Fashion-MNIST under rotation
(``jobs/configs/fashion_mnist.yaml``), whose known abrupt drift is the 180 deg flip at 75 % of the stream.

Three learners replay each stream test-then-train (``ddn_ray.train.replay_in_process``, the job's
protocol in one process), with ADWIN on the prequential error stream:

* **fine-tune**: policy ``none``: signals are logged, the model keeps learning window by window;
* **fresh reset**: policy ``reset``: on a signal, new random weights, retrained on the recent windows and the
  replay memory;
* **meta-init reset**: the same policy, but a reset loads the Reptile meta-initialisation (``meta.init:
  reptile``, Nichol et al. 2018), meta-trained on every window learned so far.

A second table isolates the initialisation: no detector; at each known drift point, before the
first window of the new concept is answered, the learner resets to fresh weights or to the
meta-initialisation with nothing to retrain on (the replay memory and recent windows emptied), and
then learns the new concept window by window. Fine-tuning without a reset is the reference.

Recovery: windows after each drift until the window accuracy regains 90 % of its mean over the 10
windows before the drift (``evaluate.recovery_windows``; ``never`` if it does not within the stream);
"after" is the accuracy over the 20 windows that follow the drift.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from synthetic_drift import make_table  # the same streams, drawn the same way

from ddn_ray import config, evaluate, stream, usecase
from ddn_ray.policy import Decision
from ddn_ray.stream import Table
from ddn_ray.train import in_process_learner, replay_in_process

VARIANTS: dict[str, dict[str, Any]] = {
    "fine-tune": {"policy": {"name": "none"}},
    "fresh reset": {"policy": {"name": "reset"}, "meta": {"init": "fresh"}},
    "meta-init reset": {"policy": {"name": "reset"}, "meta": {"init": "reptile"}},
}
AFTER_WINDOWS = 20


def run_variants(base: config.JobConfig, table: Table, drift_rows: list[int]) -> list[dict[str, Any]]:
    w = base.stream.window_size
    out = []
    for name, sections in VARIANTS.items():
        cfg = config.load(
            None,
            config.merge(
                base.model_dump(mode="json"),
                {**sections, "drift": {"detector": "adwin", "mmd_permutations": 0}},
            ),
        )
        t0 = time.perf_counter()
        run = replay_in_process(cfg, table)
        acc = evaluate.window_accuracy(table.labels, run.predictions, run.windows)[1]
        recover = [evaluate.recovery_windows(acc, d // w, pre_windows=10, fraction=0.9) for d in drift_rows]
        after = [float(np.mean(acc[d // w : d // w + AFTER_WINDOWS])) for d in drift_rows]
        resets = sum(e["decision"] == "reset" for e in run.events)
        out.append(
            {
                "variant": name,
                "accuracy": evaluate.accuracy(table.labels, run.predictions),
                "recover": recover,
                "after": after,
                "resets": resets,
                "wall_s": time.perf_counter() - t0,
            }
        )
    return out


def oracle_resets(base: config.JobConfig, table: Table, drift_rows: list[int]) -> list[dict[str, Any]]:
    """Reset at each known drift (fresh or meta-init), nothing retrained: how fast each start learns the new concept."""
    w = base.stream.window_size
    starts = {d // w for d in drift_rows}
    out = []
    for name, init in (
        ("fine-tune, no reset", None),
        ("reset to fresh weights", "fresh"),
        ("reset to the meta-init", "reptile"),
    ):
        cfg = config.load(
            None,
            config.merge(
                base.model_dump(mode="json"),
                {"meta": {"init": init or "fresh"}, "drift": {"detector": "none"}, "policy": {"name": "none"}},
            ),
        )
        lag = cfg.stream.last_label_feature
        learner = in_process_learner(cfg, stream.input_names(table.feature_names, lag), table.num_classes)
        acc = []
        for win in stream.iter_windows(stream.ReplaySource(table, w), lag):
            x, y = torch.from_numpy(win.features), torch.from_numpy(win.labels)
            if init is not None and win.index in starts:
                learner.recent.clear()
                learner.recent.append((x[:0], y[:0]))  # nothing to retrain on: the start alone
                learner.apply(Decision.RESET)
            learner.raw.eval()
            with torch.no_grad():
                acc.append(float((learner.raw(x).argmax(1) == y).float().mean()))
            learner.step(win.index, win.start, win.end, x, y)
        a = np.asarray(acc)
        out.append(
            {
                "variant": name,
                "first": [float(a[d // w]) for d in drift_rows],
                "recover": [evaluate.recovery_windows(a, d // w, pre_windows=10, fraction=0.9) for d in drift_rows],
                "after": [float(np.mean(a[d // w : d // w + AFTER_WINDOWS])) for d in drift_rows],
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", nargs="+", default=["SEA", "Agrawal", "RandomRBF", "fashion_mnist"])
    parser.add_argument("--rows", type=int, default=12_000)
    parser.add_argument("--drifts", type=int, nargs=2, default=[4000, 8000])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("DDN_RAY_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))
    torch.set_num_threads(1)
    print(f"# meta-init, measured {time.strftime('%Y-%m-%d')} ({os.cpu_count()} CPUs, torch {torch.__version__})")
    print()
    print(
        "| stream | learner | accuracy % | windows to 90 % after each drift | accuracy % over the 20 windows "
        "after each drift | resets |"
    )
    print("|---|---|---|---|---|---|")
    oracle_rows = []
    for name in args.streams:
        if name == "fashion_mnist":
            base = config.load(ROOT / "jobs" / "configs" / "fashion_mnist.yaml")
            table = usecase.stream_table(base)
            drifts = [int(0.75 * len(table))]  # rotation_angles: 180 deg from f = 0.75
        else:
            base = config.load(ROOT / "jobs" / "configs" / "elec2_builtin.yaml")
            table = make_table(name, args.rows, args.drifts, 1, args.seed)
            drifts = list(args.drifts)
        for r in run_variants(base, table, drifts):
            recover = " / ".join("never" if v is None else str(v) for v in r["recover"])
            after = " / ".join(f"{100 * a:.1f}" for a in r["after"])
            print(f"| {name} | {r['variant']} | {100 * r['accuracy']:.2f} | {recover} | {after} | {r['resets']} |")
        oracle_rows += [(name, r) for r in oracle_resets(base, table, drifts)]
        print(f"  {name} done", file=sys.stderr, flush=True)
    print("\nThe start alone: a reset at each known drift, nothing retrained, no detector")
    print()
    print(
        "| stream | start | accuracy % on the first window after each drift | windows to 90 % | "
        "accuracy % over the 20 windows after each drift |"
    )
    print("|---|---|---|---|---|")
    for name, r in oracle_rows:
        first = " / ".join(f"{100 * a:.1f}" for a in r["first"])
        recover = " / ".join("never" if v is None else str(v) for v in r["recover"])
        after = " / ".join(f"{100 * a:.1f}" for a in r["after"])
        print(f"| {name} | {r['variant']} | {first} | {recover} | {after} |")
    print(
        "\nDrift points: the synthetic streams at rows "
        f"{args.drifts} (abrupt, {args.rows:,} rows, seed {args.seed}); Fashion-MNIST at 75 % (the 180 deg flip). "
        "ADWIN (delta 0.002) on the prequential errors; the reset policy's cooldown and retraining as configured."
    )


if __name__ == "__main__":
    main()
