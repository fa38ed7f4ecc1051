"""Forward dynamics under drifting physics (gymnasium), in process: dynamic vs static, and a worn-actuator alarm.

Groundwork for the control use case (no Ray here yet). Rollouts come from
``ddn_ray.usecases.control.rollout`` with the physics changing on a schedule; a model learns
``[state, action] -> next_state - state`` window by window, test-then-train.

1. One-step prediction error (MSE on targets standardised by the first 2,000 steps, so 1.0 is
   "as bad as predicting the mean") per phase, for the model that keeps learning (dynamic) and
   the one frozen after the first 2,000 steps (static).
2. Fault detection on CartPole: ``force_mag`` weakens linearly 10 -> 5 N from step 10,000 to
   20,000. A model of the healthy machine (trained on steps 0-4,000, then frozen) predicts each
   step; River's Page-Hinkley test (Page 1954) watches, from step 5,000, the log of its squared
   residual, standardised by its mean and spread on steps 4,000-5,000. For each alarm threshold,
   over the seeds: how many runs raised an alarm after the onset, the first one's delay (and
   the force then), alarms before the onset, and alarms on runs of the same seeds without the fault.

Run:  python benchmarks/gym_dynamics.py [--steps 30000] [--seeds 5]
Output: a table on stdout and benchmarks/results/gym_dynamics.{txt,json}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddn_ray import drift as ddn_drift
from ddn_ray.usecases import control

WINDOW, EPOCHS, BATCH, LR, STATIC_STEPS = 200, 5, 32, 1e-3, 2000


def mlp(n_in: int, n_out: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, n_out))


def train(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> None:
    model.train()
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(x), generator=g).split(BATCH):
            opt.zero_grad()
            nn.functional.mse_loss(model(x[idx]), y[idx]).backward()
            opt.step()


def prequential(
    r: control.Rollouts,
    freeze_after: int | None,
    seed: int,
    mu: np.ndarray,
    sd: np.ndarray,
    xmu: np.ndarray,
    xsd: np.ndarray,
) -> np.ndarray:
    """Per-step squared error (mean over state dims, standardised) of the model before it learns each window."""
    x = torch.from_numpy((r.inputs - xmu) / xsd)
    y = torch.from_numpy((r.targets - mu) / sd)
    model = mlp(x.shape[1], y.shape[1], seed)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(seed)
    err = np.empty(len(r))
    for s in range(0, len(r), WINDOW):
        e = slice(s, s + WINDOW)
        model.eval()
        with torch.no_grad():
            err[e] = ((model(x[e]) - y[e]) ** 2).mean(1).numpy()
        if freeze_after is None or s < freeze_after:
            train(model, opt, x[e], y[e], g)
    return err


def dynamics_table(steps: int, seed: int) -> list[dict]:
    rows = []
    for env_id in ("CartPole-v1", "Pendulum-v1"):
        sched, phases = control.physics_drift(env_id, steps)
        r = control.rollout(env_id, steps, sched, seed=seed)
        mu, sd = r.targets[:STATIC_STEPS].mean(0), r.targets[:STATIC_STEPS].std(0) + 1e-8
        xmu, xsd = r.inputs[:STATIC_STEPS].mean(0), r.inputs[:STATIC_STEPS].std(0) + 1e-8
        dyn = prequential(r, None, seed, mu, sd, xmu, xsd)
        sta = prequential(r, STATIC_STEPS, seed, mu, sd, xmu, xsd)
        bounds = [p[1] for p in phases] + [steps]
        for (name, start), end in zip(phases, bounds[1:]):
            lo = max(start, STATIC_STEPS)
            rows.append(
                {
                    "env": env_id,
                    "phase": name,
                    "steps": f"{lo:,}-{end:,}",
                    "dynamic_mse": float(dyn[lo:end].mean()),
                    "static_mse": float(sta[lo:end].mean()),
                }
            )
    return rows


THRESHOLDS = (100.0, 200.0, 400.0, 800.0)


def fault_runs(steps: int, seeds: int) -> list[dict]:
    onset, end = steps // 3, 2 * steps // 3
    fit_end, watch = int(0.4 * onset), onset // 2
    out = []
    for seed in range(seeds):
        errs, runs = {}, {}
        for label, sched in (("fault", control.worn_actuator(onset, end)), ("healthy", control.Schedule())):
            r = control.rollout("CartPole-v1", steps, sched, seed=seed)
            mu, sd = r.targets[:fit_end].mean(0), r.targets[:fit_end].std(0) + 1e-8
            xmu, xsd = r.inputs[:fit_end].mean(0), r.inputs[:fit_end].std(0) + 1e-8
            # the healthy machine's model, then frozen; its residuals on steps fit_end-watch set the scale
            errs[label], runs[label] = prequential(r, fit_end, seed, mu, sd, xmu, xsd), r
        for threshold in THRESHOLDS:
            alarms = ddn_drift.residual_alarms(errs["fault"], slice(fit_end, watch), threshold)
            after = [t for t in alarms if t >= onset]
            first = after[0] if after else None
            out.append(
                {
                    "seed": seed,
                    "threshold": threshold,
                    "delay_steps": None if first is None else first - onset,
                    "force_at_alarm": None if first is None else float(runs["fault"].physics[first, 4]),
                    "false_alarms_before_onset": sum(t < onset for t in alarms),
                    "alarms_without_fault": len(
                        ddn_drift.residual_alarms(errs["healthy"], slice(fit_end, watch), threshold)
                    ),
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gym_dynamics"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.monotonic()
    table = dynamics_table(args.steps, 0)
    faults = fault_runs(args.steps, args.seeds)
    lines = [
        f"one-step prediction error (standardised MSE, windows of {WINDOW}, static frozen after {STATIC_STEPS:,} steps)",
        f"{'env':<13} {'phase':<44} {'steps':>14} {'dynamic':>8} {'static':>8} {'static/dyn':>10}",
    ]
    for row in table:
        lines.append(
            f"{row['env']:<13} {row['phase']:<44} {row['steps']:>14} {row['dynamic_mse']:>8.4f} "
            f"{row['static_mse']:>8.4f} {row['static_mse'] / row['dynamic_mse']:>9.1f}x"
        )
    watched = args.steps - args.steps // 6
    lines += [
        "",
        (
            f"worn actuator (CartPole force_mag 10 -> 5 N over steps {args.steps // 3:,}-{2 * args.steps // 3:,}): "
            f"Page-Hinkley on the healthy model's residuals, {args.seeds} seeds, {watched:,} steps watched per run"
        ),
        (
            f"{'threshold':>9} {'detected':>9} {'delay p50 (steps)':>18} {'force at alarm p50':>19} "
            f"{'false alarms before onset':>26} {'alarms without fault':>21}"
        ),
    ]
    for th in THRESHOLDS:
        rs = [f for f in faults if f["threshold"] == th]
        hit = [f for f in rs if f["delay_steps"] is not None]
        delay = f"{np.median([f['delay_steps'] for f in hit]):.0f}" if hit else "n/a"
        force = f"{np.median([f['force_at_alarm'] for f in hit]):.2f} N" if hit else "n/a"
        lines.append(
            f"{th:>9.0f} {len(hit):>5}/{len(rs):<3} {delay:>18} {force:>19} "
            f"{sum(f['false_alarms_before_onset'] for f in rs):>26} {sum(f['alarms_without_fault'] for f in rs):>21}"
        )
    lines.append(f"\nwall time {time.monotonic() - t0:.0f} s")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".txt").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({"dynamics": table, "faults": faults, "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
