"""The gate: whether an update may become a model version (its tensors, then its scores on the window it
learned). Pure functions of the update and the current version, decided before anything is stored."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ddn_ray.config import ControllerConfig

__all__ = ["Gate", "QualityGate", "check_quality", "check_update"]


class Gate(enum.Enum):
    """The gate's decision on a published update."""

    ACCEPT = "accept"
    REJECT_NON_FINITE = "reject_non_finite"
    REJECT_SHAPE = "reject_shape"
    REJECT_LOSS_EXPLODED = "reject_loss_exploded"
    REJECT_ACCURACY_COLLAPSED = "reject_accuracy_collapsed"
    REJECT_SUPERSEDED = "reject_superseded"


@dataclass(frozen=True)
class QualityGate:
    """Bounds on what an update did to the latest revealed window (``controller.max_loss_ratio`` and
    ``controller.max_accuracy_drop``); ``None`` turns a check off.

    Attributes:
        max_loss_ratio: reject an update whose loss on the window it learned, after learning it, is not
            finite or exceeds this times the served version's loss on the same window before (the prequential
            ``pre_loss``; at least ``loss_floor``).
        max_accuracy_drop: reject an update whose accuracy on that window, after learning it, is this much
            below the served version's before (a fraction, 0.25 = 25 points).
        loss_floor: the smallest ``pre_loss`` the ratio is taken against (a near-perfect window would make any
            noise an "explosion").
    """

    max_loss_ratio: float | None = 10.0
    max_accuracy_drop: float | None = 0.25
    loss_floor: float = 0.01

    @classmethod
    def of(cls, cfg: ControllerConfig) -> QualityGate:
        """The bounds of a job's ``controller`` section."""
        return cls(max_loss_ratio=cfg.max_loss_ratio, max_accuracy_drop=cfg.max_accuracy_drop)


def check_quality(meta: Mapping[str, Any], gate: QualityGate) -> Gate:
    """Gate an update on its scores of the latest revealed window, from its ``meta``: ``pre_loss`` /
    ``pre_accuracy`` (the served version, before the window was learned) and ``post_loss`` / ``post_accuracy``
    (the update, after). An update without them (a resume, a rollback) passes."""
    pre_loss, post_loss = meta.get("pre_loss"), meta.get("post_loss")
    ratio, drop = gate.max_loss_ratio, gate.max_accuracy_drop
    if ratio is not None and pre_loss is not None and post_loss is not None:
        exploded = math.isfinite(pre_loss) and post_loss > ratio * max(pre_loss, gate.loss_floor)
        if exploded or not math.isfinite(post_loss):
            return Gate.REJECT_LOSS_EXPLODED
    pre_acc, post_acc = meta.get("pre_accuracy"), meta.get("post_accuracy")
    known = drop is not None and pre_acc is not None and post_acc is not None and math.isfinite(pre_acc)
    if known and not post_acc >= pre_acc - drop:  # type: ignore[operator]  # a NaN accuracy fails too
        return Gate.REJECT_ACCURACY_COLLAPSED
    return Gate.ACCEPT


def _same_or_grown(new: tuple[int, ...], old: tuple[int, ...], grow: bool) -> bool:
    return new == old or (grow and len(new) == len(old) >= 1 and new[1:] == old[1:] and new[0] > old[0])


def check_update(
    weights: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray] | None, grow: bool = False
) -> Gate:
    """Gate an update: every tensor finite, and keys/shapes equal to the reference version's.

    Args:
        weights: the candidate ``state_dict`` as numpy arrays.
        reference: the current version's arrays, or ``None`` for the first version.
        grow: the update declares more classes than the reference: a tensor may then have a larger
            first dimension (the head's new rows, :func:`ddn_ray.models.grow_head`), all else equal.
    """
    if reference is not None and (
        weights.keys() != reference.keys()
        or any(not _same_or_grown(weights[k].shape, reference[k].shape, grow) for k in weights)
    ):
        return Gate.REJECT_SHAPE
    for v in weights.values():
        # Measured at 40 MB: isfinite().all() 3.2 ms, a float64 sum 5.1 ms; exact and faster.
        if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            return Gate.REJECT_NON_FINITE
    return Gate.ACCEPT
