"""Retraining policies: from a drift signal to the level of retraining.

A policy is a plain object with one decision method; the train loop acts on the
:class:`Decision` it returns and the controller logs it with the signal that led to it.

The levels, from cheapest to most drastic:

* ``no-op``: keep learning window by window as before;
* ``head``: fine-tune the output layer alone on the recent windows (the features
  still fit; the mapping from them to the classes moved);
* ``all``: fine-tune every layer on the recent windows, with a fresh optimizer state
  and a restarted learning-rate schedule;
* ``reset``: start again from fresh weights and retrain on the replay memory plus the
  recent windows (the old solution is a worse start than none).

``rollback`` is not chosen on a drift signal: the train loop takes it when the
controller's gate rejects an update, and reloads the served version.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Protocol, runtime_checkable

from ddn_ray.drift.monitor import DriftSignal

__all__ = ["Decision", "LevelPolicy", "Policy", "build"]


class Decision(str, Enum):
    """What the train loop does about a signal."""

    NOOP = "no-op"
    HEAD = "head"
    ALL = "all"
    RESET = "reset"
    ROLLBACK = "rollback"


@runtime_checkable
class Policy(Protocol):
    """Maps a drift signal to a decision; :attr:`reason` explains the last one."""

    reason: str

    def decide(self, signal: DriftSignal) -> Decision: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class LevelPolicy:
    """Choose the level of retraining from how much the error rose and what moved.

    With ``mode="level"``, after the cooldown:

    * error increase ``< min_error_increase``: ``no-op`` (a false alarm, or the model got better);
    * error increase ``>= reset_error_increase``: ``reset``;
    * some input features moved (KS, corrected): ``all`` (the representation must follow);
    * otherwise: ``head`` (same inputs, new labelling: a real concept drift).

    ``mode`` ``"head"``, ``"all"`` or ``"reset"`` takes that level on every signal
    past the cooldown; ``"none"`` only logs.

    Args:
        mode: ``"level"``, ``"head"``, ``"all"``, ``"reset"`` or ``"none"``.
        cooldown_windows: a signal fewer than this many windows after the last
            retraining is a ``no-op`` (so one drift does not retrain twice).
        min_error_increase: see above (absolute, in error rate).
        reset_error_increase: see above.

    Raises:
        ValueError: an unknown mode, or ``reset_error_increase < min_error_increase``.

    Examples:
        >>> p = LevelPolicy(cooldown_windows=5, reset_error_increase=0.15)
        >>> s = DriftSignal(window=10, offset=510, detector="ADWIN", error_before=0.1, error_recent=0.3)
        >>> p.decide(s).value, p.reason
        ('reset', 'error 0.100 -> 0.300 (+0.200 >= 0.15)')
        >>> p.decide(DriftSignal(12, 620, "ADWIN", 0.1, 0.3)).value
        'no-op'
    """

    MODES = ("level", "head", "all", "reset", "none")

    def __init__(
        self,
        mode: str = "level",
        cooldown_windows: int = 10,
        min_error_increase: float = 0.02,
        reset_error_increase: float = 0.5,
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"unknown policy mode {mode!r}; use one of {self.MODES}")
        if reset_error_increase < min_error_increase:
            raise ValueError("reset_error_increase must be >= min_error_increase")
        self.mode, self.cooldown_windows = mode, cooldown_windows
        self.min_error_increase, self.reset_error_increase = min_error_increase, reset_error_increase
        self.last_action_window: int | None = None
        self.reason = ""

    def decide(self, signal: DriftSignal) -> Decision:
        """Return the decision for ``signal`` and set :attr:`reason`."""
        rise = signal.error_increase
        err = f"error {signal.error_before:.3f} -> {signal.error_recent:.3f} ({rise:+.3f}"
        if self.mode == "none":
            return self._noop("policy 'none' only logs")
        if self.last_action_window is not None and signal.window - self.last_action_window < self.cooldown_windows:
            return self._noop(f"cooldown: retrained at window {self.last_action_window}")
        if self.mode != "level":
            decision, self.reason = Decision(self.mode), f"policy '{self.mode}'; {err})"
        elif rise < self.min_error_increase:
            return self._noop(f"{err} < {self.min_error_increase})")
        elif rise >= self.reset_error_increase:
            decision, self.reason = Decision.RESET, f"{err} >= {self.reset_error_increase})"
        elif signal.features_moved:
            decision, self.reason = Decision.ALL, f"{err}); inputs moved: {', '.join(signal.features_moved)}"
        else:
            decision, self.reason = Decision.HEAD, f"{err}); no input feature moved"
        self.last_action_window = signal.window
        return decision

    def _noop(self, reason: str) -> Decision:
        self.reason = reason
        return Decision.NOOP

    def state_dict(self) -> dict[str, Any]:
        return {"last_action_window": self.last_action_window}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_action_window = state["last_action_window"]


def build(cfg: Any) -> LevelPolicy:
    """The policy a :class:`~ddn_ray.config.PolicyConfig` describes."""
    return LevelPolicy(cfg.name, cfg.cooldown_windows, cfg.min_error_increase, cfg.reset_error_increase)
