"""Use case: forward dynamics of control systems whose physics drift (gymnasium CartPole-v1, Pendulum-v1).

A behaviour policy's transitions stream in as windows; Train workers fit an MLP to
``[state, action] -> next_state - state`` (MSE, standardised), test-then-train; Serve replicas
answer ``/predict`` (standardised rows) and ``/predict_next_state`` (raw states and actions).
Scenarios (``ddn_ray.usecases.control``): ``physics_drift`` (default, gradual, then abrupt change of the
constants) and ``worn_actuator`` (CartPole's force weakening 10 -> 5 N), where the static model,
frozen on the healthy machine, also raises a fault alarm from its residuals
(``ddn_ray.drift.residual_alarms``).

Run:  python jobs/gym_dynamics.py [--variants cartpole/worn_actuator,...] [--set data.options.stream_rows=3000 ...]
Writes runs/gym_dynamics/summary.{md,json} and accuracy.png, and each run's own report.
"""

from __future__ import annotations

from typing import Any

import usecase

VARIANTS: dict[str, list[str]] = {
    "physics_drift/cartpole": ["data.name=cartpole", "data.scenario=physics_drift"],
    "physics_drift/pendulum": ["data.name=pendulum", "data.scenario=physics_drift"],
    "worn_actuator/cartpole": ["data.name=cartpole", "data.scenario=worn_actuator"],
}


def cli(argv: list[str] | None = None) -> dict[str, Any]:
    return usecase.cli("gym_dynamics", __doc__, VARIANTS, argv)


if __name__ == "__main__":
    cli()
