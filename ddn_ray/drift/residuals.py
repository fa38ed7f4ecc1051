"""Fault alarms from a reference model's residuals (predictive maintenance).

A model of the healthy system, frozen, predicts each step; a fault shows as residuals that
grow. Squared residuals are heavy-tailed, so their log is standardised by its mean and spread
on a healthy reference stretch, and River's Page-Hinkley test (Page 1954, "Continuous
inspection schemes"), in ``mode="up"``, watches for a rise of its mean. A model that keeps
adapting would learn a slow fault as normal: watch a frozen one.
"""

from __future__ import annotations

import numpy as np

__all__ = ["residual_alarms"]


def residual_alarms(
    squared_residuals: np.ndarray,
    reference: slice,
    threshold: float = 400.0,
    delta: float = 0.5,
    min_instances: int = 200,
) -> list[int]:
    """Indices where Page-Hinkley fires on the standardised log residuals after ``reference``.

    Args:
        squared_residuals: ``(n,)`` float, one per step in time order.
        reference: the healthy stretch that sets the scale (watched from its end on).
        threshold: Page-Hinkley's ``threshold`` (lambda): higher, fewer false alarms, later alarms.
        delta: Page-Hinkley's tolerance.
        min_instances: Page-Hinkley's warm-up, in steps.

    Returns:
        Step indices of the alarms (the detector restarts after each one).

    Raises:
        ValueError: an empty reference.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> r = np.concatenate([rng.exponential(1.0, 3000), rng.exponential(4.0, 1000)])
        >>> alarms = residual_alarms(r, slice(0, 1000))
        >>> all(a >= 3000 for a in alarms), len(alarms) > 0
        (True, True)
    """
    from river import drift as river_drift

    log_r = np.log10(np.asarray(squared_residuals, dtype=np.float64) + 1e-6)
    ref = log_r[reference]
    if ref.size == 0:
        raise ValueError("the reference stretch is empty")
    z = (log_r - ref.mean()) / (ref.std() + 1e-12)
    ph = river_drift.PageHinkley(min_instances=min_instances, delta=delta, threshold=threshold, mode="up")
    alarms = []
    start = reference.stop if reference.stop is not None else len(z)
    for t in range(start, len(z)):
        ph.update(float(z[t]))
        if ph.drift_detected:
            alarms.append(t)
    return alarms
