"""NAB with an online forecaster, in process (groundwork for the anomaly use case, issue 4).

Per series, from its first point and without labels: a small MLP forecasts the next value
from the last ``lags`` values (scaled by the file's min/max, as NAB gives detectors), learns
every ``update_every`` points on the most recent ``buffer`` points (test, then train), and
turns its absolute errors into an anomaly score with a Gaussian tail probability of the
short-term mean error against the long-term error distribution (the anomaly likelihood of
Ahmad, Lavin, Purdy & Agha 2017, "Unsupervised real-time anomaly detection for streaming
data", section 4). The scores are rated with ``ddn_ray.nab.score_corpus`` in the three profiles.

Run: python benchmarks/nab_forecaster.py [--series realKnownCause/machine_temperature_system_failure.csv ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddn_ray import nab


def forecast_scores(values: np.ndarray, lags: int = 16, update_every: int = 8, buffer: int = 256, epochs: int = 1,
                    lr: float = 3e-3, short: int = 10, long: int = 1000, seed: int = 0,
                    frozen_after: int | None = None, alarm_level: float = 0.99,
                    quiet_fraction: float = 0.05) -> np.ndarray:
    """Anomaly scores ``(n,)`` float64 in [0, 1] for one series (see the module docstring).

    ``frozen_after``: stop learning after this many points (a static forecaster).
    ``alarm_level``, ``quiet_fraction``: after a score at or above ``alarm_level``, later scores are
    capped below it for ``quiet_fraction`` of the series (one alarm per event, as NAB rewards).
    """
    torch.manual_seed(seed)
    lo, hi = float(values.min()), float(values.max())
    x = (values - lo) / (hi - lo if hi > lo else 1.0)
    n = len(x)
    model = nn.Sequential(nn.Linear(lags, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    windows = np.lib.stride_tricks.sliding_window_view(x, lags)[:-1].astype(np.float32)  # inputs for targets lags..n-1
    targets = x[lags:].astype(np.float32)
    errors = np.zeros(n)
    t = lags
    while t < n:
        end = min(t + update_every, n)
        xb = torch.from_numpy(windows[t - lags:end - lags])
        with torch.no_grad():  # test ...
            pred = model(xb).squeeze(1).numpy()
        errors[t:end] = np.abs(pred - targets[t - lags:end - lags])
        if frozen_after is None or end <= frozen_after:  # ... then train on the recent buffer
            a = max(lags, end - buffer)
            xs, ys = torch.from_numpy(windows[a - lags:end - lags]), torch.from_numpy(targets[a - lags:end - lags])
            for _ in range(epochs):
                opt.zero_grad()
                nn.functional.mse_loss(model(xs).squeeze(1), ys).backward()
                opt.step()
        t = end
    scores = nab.anomaly_likelihood(errors, lags, short, long)
    return nab.one_alarm_per_event(scores, alarm_level, int(quiet_fraction * n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", nargs="*", default=None, help="NAB series names (default: all 58)")
    parser.add_argument("--data", default=None, help="NAB folder (default: $DDN_RAY_DATA_DIR/nab)")
    parser.add_argument("--out", default="benchmarks/results/nab_forecaster.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    corpus = nab.load_corpus(args.data, args.series)
    profiles = nab.load_profiles(args.data)
    published = json.loads((nab.data_dir(args.data) / "results" / "final_results.json").read_text())
    rows = {}
    for label, kw in (("dynamic (learns throughout)", {}), ("static (frozen after 15 %)", {"frozen": True})):
        t0 = time.monotonic()
        scores = {}
        for name, s in corpus.items():
            frozen = nab.probation_length(len(s.values)) if kw.get("frozen") else None
            scores[name] = forecast_scores(s.values, frozen_after=frozen)
        rows[label] = {p: nab.score_corpus(scores, corpus, prof) for p, prof in profiles.items()}
        rows[label]["wall_s"] = time.monotonic() - t0
    print(f"NAB ({len(corpus)} series), scores normalised: null 0, perfect 100")
    print("| detector | standard | reward_low_FP | reward_low_FN | wall s |")
    print("|---|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['standard']['score']:.1f} | {r['reward_low_FP_rate']['score']:.1f} | "
              f"{r['reward_low_FN_rate']['score']:.1f} | {r['wall_s']:.0f} |")
    if args.series is None:
        for d in ("ARTime", "numenta", "contextOSE", "random", "null"):
            p = published[d]
            print(f"| {d} (published) | {p['standard']:.1f} | {p['reward_low_FP_rate']:.1f} | {p['reward_low_FN_rate']:.1f} | |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
