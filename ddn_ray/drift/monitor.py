"""The drift monitor: a detector on the prequential error stream, and what it saw when it fired.

The train loop feeds it one window at a time: the rows the model got wrong before
learning them, and the window's inputs. When the detector fires, the monitor splits
its last ``2 * reference_windows`` windows into a reference half and a current half
and describes the change: the error rate on each side, the features whose
distribution moved (per-feature KS tests with a multiple-testing correction) and an
MMD test on the model's embeddings. That description is a :class:`DriftSignal`;
what to do about it is the policy's business (:mod:`ddn_ray.policy`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ddn_ray.drift.detectors import Detector
from ddn_ray.drift.features import ks_features, mmd_permutation_test

__all__ = ["DriftSignal", "Monitor"]


@dataclass(frozen=True)
class DriftSignal:
    """A detector fired: where, and what had changed.

    Attributes:
        window: index of the window whose errors made the detector fire.
        offset: stream offset of the row at which it fired (exact with one worker;
            with several, rows are taken in rank order within the window).
        detector: the detector's name.
        error_before: error rate over the reference half (older windows).
        error_recent: error rate over the current half (newest windows, this one included).
        features_moved: names of the features whose KS test rejected after correction.
        ks_statistic: KS statistic of every feature, by name.
        mean_shift: current mean minus reference mean of every moved feature, by name.
        mmd2: squared MMD between the halves' embeddings, or ``None`` when not run.
        mmd_p_value: its permutation p-value, or ``None``.
    """

    window: int
    offset: int
    detector: str
    error_before: float
    error_recent: float
    features_moved: tuple[str, ...] = ()
    ks_statistic: dict[str, float] = field(default_factory=dict)
    mean_shift: dict[str, float] = field(default_factory=dict)
    mmd2: float | None = None
    mmd_p_value: float | None = None

    @property
    def error_increase(self) -> float:
        """``error_recent - error_before`` (negative when the model got better)."""
        return self.error_recent - self.error_before

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "features_moved": list(self.features_moved)}


class Monitor:
    """Runs a detector over the error stream and builds a :class:`DriftSignal` when it fires.

    Args:
        detector: any :class:`~ddn_ray.drift.Detector` (``NoDrift`` never fires).
        reference_windows: windows in each half of the comparison (``k``).
        feature_alpha: KS level after correction.
        correction: ``"bonferroni"`` or ``"bh"``.
        mmd_permutations: permutations of the MMD test; 0 skips it.
        mmd_max_rows: rows per side given to the MMD test (a random subset beyond that).
        feature_names: names for the input columns (default ``x0, x1, ...``).
        seed: seeds the MMD permutations.
    """

    def __init__(
        self,
        detector: Detector,
        reference_windows: int = 4,
        feature_alpha: float = 0.01,
        correction: str = "bonferroni",
        mmd_permutations: int = 100,
        feature_names: Sequence[str] | None = None,
        seed: int = 0,
        mmd_max_rows: int = 200,
    ) -> None:
        self.detector = detector
        self.k = reference_windows
        self.feature_alpha, self.correction = feature_alpha, correction
        self.mmd_permutations, self.seed, self.mmd_max_rows = mmd_permutations, seed, mmd_max_rows
        self.feature_names = [str(n) for n in feature_names] if feature_names is not None else None
        self._errors: deque[np.ndarray] = deque(maxlen=2 * reference_windows)  # per window: (n,) float
        self._inputs: deque[np.ndarray] = deque(maxlen=2 * reference_windows)  # per window: (m, d) float32

    def update(
        self,
        window: int,
        start: int,
        wrong: np.ndarray,
        x: np.ndarray,
        embed: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> DriftSignal | None:
        """Feed one window; return a signal when the detector fired on it.

        Args:
            window: the window's index.
            start: offset of its first row.
            wrong: ``(n,)`` 1.0 where the model (before learning the window) was wrong,
                in row order; the detector sees every value.
            x: ``(m, num_features)`` float32 inputs of the window (this worker's rows).
            embed: maps ``(r, num_features)`` inputs to ``(r, dim)`` embeddings for the MMD test.

        Returns:
            The first firing in this window as a :class:`DriftSignal`, else ``None``.
        """
        self._errors.append(np.asarray(wrong, dtype=np.float64))
        self._inputs.append(np.asarray(x, dtype=np.float32))
        fired_at = None
        for i, e in enumerate(wrong):
            self.detector.update(float(e))
            if self.detector.drift_detected and fired_at is None:
                fired_at = i
        if fired_at is None:
            return None
        return self._describe(window, start + fired_at, embed)

    def _describe(self, window: int, offset: int, embed: Callable[[np.ndarray], np.ndarray] | None) -> DriftSignal:
        half = max(1, len(self._errors) - self.k)
        errors, inputs = list(self._errors), list(self._inputs)
        before, recent = np.concatenate(errors[:half]), np.concatenate(errors[half:] or errors[-1:])
        signal = DriftSignal(window, offset, self.detector.name, float(before.mean()), float(recent.mean()))
        ref, cur = np.concatenate(inputs[:half]), np.concatenate(inputs[half:] or inputs[-1:])
        if len(inputs) < 2 or len(ref) < 2 or len(cur) < 2:
            return signal
        names = self.feature_names or [f"x{j}" for j in range(ref.shape[1])]
        fd = ks_features(ref, cur, self.feature_alpha, self.correction)  # type: ignore[arg-type]
        moved = tuple(names[j] for j in fd.moved)
        ks = {n: round(float(s), 4) for n, s in zip(names, fd.statistic)}
        shift = {names[j]: round(float(fd.mean_shift[j]), 4) for j in fd.moved}
        mmd2 = p = None
        if embed is not None and self.mmd_permutations > 0:
            rng = np.random.default_rng(self.seed + window)  # the test is O(rows^2 x permutations): subsample
            r = ref[rng.permutation(len(ref))[: self.mmd_max_rows]]
            c = cur[rng.permutation(len(cur))[: self.mmd_max_rows]]
            mmd2, p = mmd_permutation_test(embed(r), embed(c), self.mmd_permutations, self.seed + window)
        return DriftSignal(
            window, offset, self.detector.name, signal.error_before, signal.error_recent, moved, ks, shift, mmd2, p
        )

    def state_dict(self) -> dict[str, Any]:
        return {"detector": self.detector.state_dict(), "errors": list(self._errors), "inputs": list(self._inputs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.detector.load_state_dict(state["detector"])
        self._errors.clear()
        self._errors.extend(state["errors"])
        self._inputs.clear()
        self._inputs.extend(state["inputs"])
