"""Drifting control dynamics: gymnasium rollouts whose physics change on a schedule.

A behaviour policy acts in ``CartPole-v1`` or ``Pendulum-v1`` while the environment's
physical constants move along a piecewise-linear schedule (set through ``env.unwrapped``
between steps). Each step gives one transition ``(state, action) -> next state``; a forward
dynamics model learns to predict ``next_state - state`` from ``[state, action]``.

CartPole (Barto, Sutton & Anderson 1983) keeps two derived constants, ``total_mass =
masspole + masscart`` and ``polemass_length = masspole * length``, which are recomputed on
every change. Pendulum's constants are ``g``, ``m`` and ``l``. Needs ``gymnasium``
(``pip install 'ddn-ray[control]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ACTION_NAMES",
    "PARAMS",
    "STATE_NAMES",
    "Rollouts",
    "Schedule",
    "physics_drift",
    "rollout",
    "set_physics",
    "worn_actuator",
]

PARAMS: dict[str, tuple[str, ...]] = {
    "CartPole-v1": ("gravity", "masscart", "masspole", "length", "force_mag"),
    "Pendulum-v1": ("g", "m", "l"),
}


@dataclass(frozen=True)
class Schedule:
    """Piecewise-linear physics over steps.

    Attributes:
        points: ``(step, {param: value})`` knots in increasing step order; a param keeps the
            environment's default before its first knot and its last value after its last one,
            and moves linearly between two knots that set it.

    Examples:
        >>> s = Schedule(((0, {"length": 0.5}), (100, {"length": 1.0})))
        >>> s.at(50), s.at(500)
        ({'length': 0.75}, {'length': 1.0})
    """

    points: tuple[tuple[int, Mapping[str, float]], ...] = ()

    def at(self, step: int) -> dict[str, float]:
        out: dict[str, float] = {}
        names = {k for _, p in self.points for k in p}
        for name in sorted(names):
            knots = [(s, p[name]) for s, p in self.points if name in p]
            xs, ys = zip(*knots)
            if step >= xs[0]:
                out[name] = float(np.interp(step, xs, ys))
        return out


STATE_NAMES: dict[str, tuple[str, ...]] = {
    "CartPole-v1": ("x", "x_dot", "theta", "theta_dot"),
    "Pendulum-v1": ("cos_theta", "sin_theta", "theta_dot"),
}
ACTION_NAMES: dict[str, tuple[str, ...]] = {"CartPole-v1": ("push",), "Pendulum-v1": ("torque",)}


def physics_drift(env_id: str, steps: int) -> tuple[Schedule, list[tuple[str, int]]]:
    """The ``physics_drift`` scenario: default physics for the first third, a gradual change over
    the second, and an abrupt one at its end. Returns the schedule and ``(phase name, first step)``.

    * CartPole: ``length`` 0.5 -> 1.0 m and ``masspole`` 0.1 -> 0.3 kg, then ``gravity`` 9.8 -> 15.
    * Pendulum: ``m`` 1 -> 2 kg, then ``g`` 10 -> 15.
    """
    a, b = steps // 3, 2 * steps // 3
    if env_id == "CartPole-v1":
        return (
            Schedule(
                (
                    (a, {"length": 0.5, "masspole": 0.1}),
                    (b, {"length": 1.0, "masspole": 0.3, "gravity": 9.8}),
                    (b + 1, {"gravity": 15.0}),
                )
            ),
            [("default", 0), ("gradual: length 0.5->1, masspole 0.1->0.3", a), ("abrupt: gravity 9.8->15", b + 1)],
        )
    if env_id == "Pendulum-v1":
        return (
            Schedule(((a, {"m": 1.0, "g": 10.0}), (b, {"m": 2.0, "g": 10.0}), (b + 1, {"g": 15.0}))),
            [("default", 0), ("gradual: m 1->2", a), ("abrupt: g 10->15", b + 1)],
        )
    raise ValueError(f"env_id must be one of {list(PARAMS)}, got {env_id!r}")


def worn_actuator(onset_step: int, end_step: int, healthy: float = 10.0, worn: float = 5.0) -> Schedule:
    """CartPole's ``force_mag`` weakening linearly from ``healthy`` to ``worn`` newtons over
    ``[onset_step, end_step]``: the fault the residual alarm must find."""
    return Schedule(((onset_step, {"force_mag": healthy}), (end_step, {"force_mag": worn})))


def set_physics(env: Any, params: Mapping[str, float]) -> None:
    """Set physical constants on ``env.unwrapped`` (CartPole's derived constants follow).

    Raises:
        ValueError: a name that is not a constant of this environment.
    """
    u = env.unwrapped
    known = PARAMS.get(u.spec.id if u.spec else "", ())
    bad = [k for k in params if k not in known]
    if bad:
        raise ValueError(f"{bad} are not physics constants of {u.spec.id if u.spec else u}; use {known}")
    for k, v in params.items():
        setattr(u, k, float(v))
    if hasattr(u, "polemass_length"):
        u.total_mass = u.masspole + u.masscart
        u.polemass_length = u.masspole * u.length


@dataclass(frozen=True)
class Rollouts:
    """Transitions in time order.

    Attributes:
        inputs: ``(n, state_dim + action_dim)`` float32 ``[state, action]`` (CartPole's action
            as ``+1 / -1`` push direction, Pendulum's as torque in N m).
        targets: ``(n, state_dim)`` float32 ``next_state - state``.
        physics: ``(n, len(PARAMS[env_id]))`` float64, the constants in force at each step.
        episode: ``(n,)`` int64 episode number of each step.
        env_id: the environment.
    """

    inputs: np.ndarray
    targets: np.ndarray
    physics: np.ndarray
    episode: np.ndarray
    env_id: str

    def __len__(self) -> int:
        return int(self.targets.shape[0])


def _behaviour(env_id: str, rng: np.random.Generator, epsilon: float) -> Callable[[np.ndarray], Any]:
    if env_id == "CartPole-v1":
        # balance heuristically (push toward where the pole falls), random with probability epsilon:
        # episodes last long enough to cover the state space around upright.
        return lambda s: int(rng.integers(2)) if rng.random() < epsilon else int(s[2] + 0.5 * s[3] > 0)
    return lambda s: np.array([rng.uniform(-2.0, 2.0)], dtype=np.float32)


def rollout(
    env_id: str,
    steps: int,
    schedule: Schedule = Schedule(),
    seed: int = 0,
    epsilon: float = 0.3,
    max_episode_steps: int = 200,
) -> Rollouts:
    """Roll out a behaviour policy for ``steps`` transitions while the physics follow ``schedule``.

    CartPole: a balancing heuristic with ``epsilon``-random actions; Pendulum: uniform random torque.
    Episodes end on termination or after ``max_episode_steps``.

    Raises:
        ValueError: unknown ``env_id`` or schedule parameter.
        ImportError: gymnasium is not installed.
    """
    if env_id not in PARAMS:
        raise ValueError(f"env_id must be one of {list(PARAMS)}, got {env_id!r}")
    try:
        import gymnasium as gym
    except ImportError as exc:
        raise ImportError("control dynamics need gymnasium: pip install 'ddn-ray[control]'") from exc
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    act = _behaviour(env_id, rng, epsilon)
    names = PARAMS[env_id]
    defaults = {k: float(getattr(env.unwrapped, k)) for k in names}
    xs, ys, ph, ep = [], [], [], []
    state, _ = env.reset(seed=seed)
    episode, t = 0, 0
    for step in range(steps):
        params = {**defaults, **schedule.at(step)}
        set_physics(env, params)
        a = act(state)
        nxt, _, terminated, truncated, _ = env.step(a)
        a_vec = np.array([1.0 if a == 1 else -1.0]) if env_id == "CartPole-v1" else np.asarray(a, dtype=np.float64)
        xs.append(np.concatenate([state, a_vec]))
        ys.append(np.asarray(nxt, dtype=np.float64) - state)
        ph.append([params[k] for k in names])
        ep.append(episode)
        state, t = nxt, t + 1
        if terminated or truncated or t >= max_episode_steps:
            state, _ = env.reset(seed=int(rng.integers(2**31)))
            episode, t = episode + 1, 0
    env.close()
    return Rollouts(
        np.asarray(xs, np.float32), np.asarray(ys, np.float32), np.asarray(ph), np.asarray(ep, np.int64), env_id
    )
