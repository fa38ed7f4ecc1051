"""Predictive maintenance walk-through on NAB's machine temperature series, in process.

``realKnownCause/machine_temperature_system_failure.csv``: an internal sensor of a large
industrial machine, every 5 minutes, with 4 labelled failures (NAB's ``combined_labels.json``;
the first one is a planned shutdown, the third the catastrophic failure). The NAB job's
forecaster and detector (``benchmarks/nab_job_learner.py``: the job's stream and learner in
process, ``ddn_ray.usecases.anomaly.Detector``) score every point, learning from the start with no
labels. An alarm is a score at or above ``--alarm-level`` (the detector's alarm level). The
same forecaster frozen after NAB's probation (the first 15 %) is the static baseline.

For each labelled failure: the first alarm inside its anomaly window or in the
``--lookback-h`` hours before the window opens, and how long before the failure it fired.
Also reported: alarms elsewhere (false positives), the file's NAB scores with the
threshold swept on this file alone, and each failure's lead for every learner seed.
``--short-mean 20`` shows a more sensitive detector (the job's uses 30 points).

Run:  python benchmarks/nab_machine_temperature.py
Output: a table on stdout, benchmarks/results/nab_machine_temperature.{txt,json}, docs/nab_machine_temperature.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from nab_job_learner import series_errors

from ddn_ray.usecases import anomaly, nab

NAME = "realKnownCause/machine_temperature_system_failure.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="NAB folder (default: $DDN_RAY_DATA_DIR/nab)")
    parser.add_argument("--alarm-level", type=float, default=anomaly.Detector().alarm_level)
    parser.add_argument("--lookback-h", type=float, default=48.0)
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0, 1, 2],
        help="learner seeds; the table and plot are the first one's, the leads are printed for each",
    )
    parser.add_argument(
        "--short-mean",
        type=int,
        default=anomaly.Detector().scales[0][0],
        help="points in the detector's short error mean (default: the job's detector)",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "nab_machine_temperature"))
    parser.add_argument("--plot", default=str(Path(__file__).parents[1] / "docs" / "nab_machine_temperature.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.monotonic()
    s = nab.load_corpus(args.data, [NAME])[NAME]
    failures = json.loads((nab.data_dir(args.data) / "labels" / "combined_labels.json").read_text())[NAME]
    failures = [int(np.searchsorted(s.timestamps, np.datetime64(f))) for f in failures]
    profiles = nab.load_profiles(args.data)
    probation = nab.probation_length(len(s.values))
    step_h = float((s.timestamps[1] - s.timestamps[0]) / np.timedelta64(1, "h"))
    base = anomaly.Detector()
    detector = dataclasses.replace(base, scales=((args.short_mean, base.scales[0][1]), *base.scales[1:]))

    def walk(sc: np.ndarray) -> dict:
        alarms = np.flatnonzero(sc >= args.alarm_level)
        alarms = alarms[alarms >= probation]  # NAB ignores the probation period
        rows, used = [], set()
        for k, (f, (a, b)) in enumerate(zip(failures, s.windows)):
            start = max(probation, a - int(args.lookback_h / step_h))
            hits = [t for t in alarms if start <= t <= b]
            first = hits[0] if hits else None
            used.update(hits)
            rows.append(
                {
                    "failure": k + 1,
                    "at": str(s.timestamps[f])[:16],
                    "window_opens": str(s.timestamps[a])[:16],
                    "first_alarm": None if first is None else str(s.timestamps[first])[:16],
                    "lead_h": None if first is None else (f - first) * step_h,
                }
            )
        false = [int(t) for t in alarms if t not in used]
        file_scores = {p: nab.score_corpus({NAME: sc}, {NAME: s}, prof)["score"] for p, prof in profiles.items()}
        return {
            "failures": rows,
            "false_alarms": len(false),
            "nab_scores_this_file": file_scores,
            "alarms": [int(t) for t in alarms],
        }

    scores, by_seed = {}, {}
    for label in ("dynamic", "static"):
        for seed in args.seeds:
            errors, lags = series_errors(NAME, seed=seed, static=label == "static", data_dir=args.data)
            sc = detector.scores(errors, s.values, lags)
            by_seed[(label, seed)] = walk(sc)
            scores.setdefault(label, sc)
    out: dict = {
        "series": NAME,
        "points": len(s.values),
        "probation": probation,
        "alarm_level": args.alarm_level,
        "detector": dataclasses.asdict(detector),
        "seeds": args.seeds,
    }
    lines = [
        (
            f"{NAME}: {len(s.values):,} points every {step_h * 60:.0f} min, {len(failures)} labelled failures; "
            f"alarms: score >= {args.alarm_level}; short error mean {args.short_mean} points; table: seed "
            f"{args.seeds[0]}"
        )
    ]
    for label in scores:
        first = by_seed[(label, args.seeds[0])]
        out[label] = {**first, "by_seed": {str(seed): by_seed[(label, seed)] for seed in args.seeds[1:]}}
        rows, file_scores = first["failures"], first["nab_scores_this_file"]
        lines += [
            "",
            f"{label} forecaster: {first['false_alarms']} alarms away from the failures; NAB scores of "
            f"this file (threshold swept on it alone): " + ", ".join(f"{p} {v:.1f}" for p, v in file_scores.items()),
            (
                f"{'failure':>7}  {'labelled at':<16}  {'window opens':<16}  {'first alarm':<16}  {'lead':>8}  "
                f"lead, seeds {' / '.join(map(str, args.seeds))}"
            ),
        ]
        for k, r in enumerate(rows):
            lead = "missed" if r["lead_h"] is None else f"{r['lead_h']:.1f} h"
            leads = [by_seed[(label, seed)]["failures"][k]["lead_h"] for seed in args.seeds]
            each = " / ".join("-" if v is None else f"{v:.1f}" for v in leads)
            lines.append(
                f"{r['failure']:>7}  {r['at']:<16}  {r['window_opens']:<16}  {r['first_alarm'] or '-':<16}  "
                f"{lead:>8}  {each}"
            )
    lines.append(f"\nwall time {time.monotonic() - t0:.0f} s")
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).with_suffix(".txt").write_text(text + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(out, indent=2))

    fig, axes = plt.subplots(3, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [2, 1, 1]})
    ts = s.timestamps
    axes[0].plot(ts, s.values, lw=0.5, color="k")
    for a, b in s.windows:
        for ax in axes:
            ax.axvspan(ts[a], ts[b], color="orange", alpha=0.25, lw=0)
    for f in failures:
        axes[0].axvline(ts[f], color="red", lw=0.8)
    for ax, (label, sc), colour in zip(axes[1:], scores.items(), ("tab:blue", "tab:grey")):
        ax.plot(ts, sc, lw=0.5, color=colour)
        al = out[label]["alarms"]
        ax.plot(ts[al], sc[al], "v", color="red", ms=6)
        axes[0].plot(
            ts[al], s.values[al], "v", color="red" if label == "dynamic" else "tab:grey", ms=6, label=f"{label} alarms"
        )
        ax.set_ylabel(f"{label}\nscore")
        ax.axvline(ts[probation], color="k", ls=":", lw=0.8)
    axes[0].set_ylabel("temperature")
    axes[0].legend(fontsize=8, loc="lower left")
    axes[0].set_title("NAB machine temperature: value, failure windows (orange), failures (red lines), alarms")
    fig.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
