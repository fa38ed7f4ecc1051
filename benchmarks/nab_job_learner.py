"""The NAB job's learner over all 58 series, in process: forecast the next value, or its change?

Each series goes through ``jobs/configs/nab.yaml``'s stream (``ddn_ray.scenarios``, 16 lags,
windows of 64) and the same ``OnlineLearner`` as the Ray job's workers (``train.replay_in_process``:
row for row what the job serves with one worker). Errors become scores with the anomaly likelihood
and one alarm per event, then NAB scores with one corpus-wide threshold per profile. The job
forecasts the change; this compares it with forecasting the value itself.

Run:  python benchmarks/nab_job_learner.py   (about 90 s)
Output: a table on stdout and benchmarks/results/nab_job_learner.{txt,json}.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ddn_ray import config, nab, scenarios, train
from ddn_ray.datasets import Table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    t0 = time.monotonic()
    corpus, profiles = nab.load_corpus(), nab.load_profiles()
    scores: dict[str, dict[str, np.ndarray]] = {"change (the job)": {}, "value": {}}
    for name in corpus:
        cfg = config.load(ROOT / "jobs" / "configs" / "nab.yaml", {"data": {"series": name}})
        s = scenarios.load(cfg.data)
        t, lags = s.table, cfg.data.lags
        for mode, by_series in scores.items():
            y = t.labels if mode.startswith("change") else t.labels + t.features[:, -1:]
            run = train.replay_in_process(cfg, Table(t.features, y.astype(np.float32), t.feature_names, 1, "regression"))
            err = np.zeros(lags + len(t))
            err[lags:] = np.abs(run.predictions[:, 0] - y[:, 0])
            by_series[name] = nab.one_alarm_per_event(nab.anomaly_likelihood(err, lags), 0.99, int(0.05 * len(err)))
    rows = {mode: {p: nab.score_corpus(sc, corpus, prof)["score"] for p, prof in profiles.items()}
            for mode, sc in scores.items()}
    lines = [f"NAB ({len(corpus)} series), the job's learner in process; scores normalised: null 0, perfect 100",
             "| forecast | standard | reward_low_FP | reward_low_FN |", "|---|---|---|---|"]
    lines += [f"| {m} | {r['standard']:.1f} | {r['reward_low_FP_rate']:.1f} | {r['reward_low_FN_rate']:.1f} |"
              for m, r in rows.items()]
    lines.append(f"\nwall time {time.monotonic() - t0:.0f} s")
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).parent / "results" / "nab_job_learner"
    out.with_suffix(".txt").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
