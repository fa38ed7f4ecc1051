"""Detectors and policies on synthetic streams with known drift points.

Three concepts of SEA, Agrawal or RandomRBF (River's generators) follow each other,
with drifts at rows ``--drifts``: abrupt (the generators concatenated) or gradual
(River's ``ConceptDriftStream``, a sigmoid transition of ``--gradual-width`` rows centred there). Every run is the main job's learning protocol
in-process (``train.replay_in_process``: windows of W rows, test then train), so a
detection offset is the row at which the detector, reading the prequential error
stream, fired.

Two tables:

1. Detectors (policy ``none``: signals are logged, the model keeps learning as usual):
   detection delay in rows from the start of each transition (``None`` = missed within
   ``--max-delay`` rows) and false alarms.
2. Policies (detector ADWIN): overall accuracy, accuracy over the ``--after`` rows that
   follow each drift, and recovery time: windows until the window accuracy regains 95 %
   of its level over the 10 windows before the drift (``evaluate.recovery_windows``).

Run:  python benchmarks/synthetic_drift.py [--rows 12000 --drifts 4000 8000]
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
from ddn_ray.stream import Table
from ddn_ray.train import replay_in_process

DETECTORS = ["adwin", "page_hinkley", "kswin", "ddm"]
POLICIES = ["none", "head", "all", "reset", "level"]


def concepts(name: str, seed: int) -> list:
    """Three concepts of one generator family, in stream order."""
    from river.datasets import synth

    if name == "SEA":
        return [synth.SEA(variant=v, seed=seed) for v in (0, 2, 3)]
    if name == "Agrawal":
        return [synth.Agrawal(classification_function=f, seed=seed) for f in (0, 2, 4)]
    return [synth.RandomRBF(seed_model=seed + k, seed_sample=seed, n_features=10) for k in range(3)]


def make_table(name: str, rows: int, drifts: list[int], width: int, seed: int) -> Table:
    """Draw the stream and standardise features with the first 1,000 rows' mean and std (the past only)."""
    from river.datasets import synth

    a, b, c = concepts(name, seed)
    if width <= 1:  # abrupt: concatenate (River's sigmoid overflows for width 1 far from the drift)
        parts = [a.take(drifts[0]), b.take(drifts[1] - drifts[0]), c.take(rows - drifts[1])]
        xs, ys = zip(*(row for part in parts for row in part))
    else:
        inner = synth.ConceptDriftStream(a, b, position=drifts[0], width=width, seed=seed)
        stream = synth.ConceptDriftStream(inner, c, position=drifts[1], width=width, seed=seed)
        xs, ys = zip(*stream.take(rows))
    names = tuple(str(k) for k in sorted(xs[0]))
    x = np.array([[float(r[k]) for k in sorted(xs[0])] for r in xs], dtype=np.float32)
    mu, sd = x[:1000].mean(0), x[:1000].std(0) + 1e-6
    return Table(((x - mu) / sd).astype(np.float32), np.array(ys, dtype=np.int64), names, int(max(ys)) + 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "jobs" / "configs" / "elec2_builtin.yaml"))
    parser.add_argument("--streams", nargs="+", default=["SEA", "Agrawal", "RandomRBF"])
    parser.add_argument("--rows", type=int, default=12_000)
    parser.add_argument("--drifts", type=int, nargs=2, default=[4000, 8000])
    parser.add_argument("--gradual-width", type=int, default=1000)
    parser.add_argument("--max-delay", type=int, default=2000)
    parser.add_argument("--after", type=int, default=1000, help="rows after a drift scored as 'post-drift'")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = config.load(args.config)
    w = base.stream.window_size
    det_rows, pol_rows = [], []
    t_start = time.perf_counter()
    for name in args.streams:
        for kind, width in (("abrupt", 1), ("gradual", args.gradual_width)):
            table = make_table(name, args.rows, args.drifts, width, args.seed)
            starts = [d - width // 2 for d in args.drifts]
            y = table.labels
            for det in DETECTORS:
                cfg = base.model_copy(
                    update={
                        "drift": config.DriftConfig(detector=det, mmd_permutations=0),
                        "policy": config.PolicyConfig(name="none"),
                    }
                )
                run = replay_in_process(cfg, table)
                delays, false_alarms = evaluate.detection_delays(
                    [e["offset"] for e in run.events], starts, args.max_delay
                )
                det_rows.append((f"{name} {kind}", det, delays, false_alarms, len(run.events)))
            for pol in POLICIES:
                cfg = base.model_copy(
                    update={
                        "drift": config.DriftConfig(detector="adwin", mmd_permutations=0),
                        "policy": base.policy.model_copy(update={"name": pol}),
                    }
                )
                run = replay_in_process(cfg, table)
                acc = evaluate.window_accuracy(y, run.predictions, run.windows)[1]
                recover = [evaluate.recovery_windows(acc, d // w) for d in args.drifts]
                post = np.concatenate([np.arange(d, min(d + args.after, len(y))) for d in args.drifts])
                decided = sum(e["decision"] != "no-op" for e in run.events)
                pol_rows.append(
                    (
                        f"{name} {kind}",
                        pol,
                        evaluate.accuracy(y, run.predictions),
                        evaluate.accuracy(y[post], run.predictions[post]),
                        recover,
                        decided,
                    )
                )
            print(f"  {name} {kind} done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr, flush=True)

    print(
        f"\nDetectors on the prequential error stream (policy none); W={w}, drifts at {args.drifts}, "
        f"gradual width {args.gradual_width}; delay in rows from the start of the transition"
    )
    print("| stream | detector | delay drift 1 | delay drift 2 | false alarms | signals |")
    print("|---|---|---|---|---|---|")
    for s, det, delays, fa, n in det_rows:
        d1, d2 = ("missed" if d is None else str(d) for d in delays)
        print(f"| {s} | {det} | {d1} | {d2} | {fa} | {n} |")
    print(
        f"\nPolicies with ADWIN; accuracy overall and over the {args.after} rows after each drift; "
        "recovery = windows to 95 % of the pre-drift level"
    )
    print("| stream | policy | accuracy | after drifts | recovery 1 | recovery 2 | retrainings |")
    print("|---|---|---|---|---|---|---|")
    for s, pol, acc, post, rec, n in pol_rows:
        r1, r2 = ("never" if r is None else str(r) for r in rec)
        print(f"| {s} | {pol} | {acc:.2%} | {post:.2%} | {r1} | {r2} | {n} |")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
