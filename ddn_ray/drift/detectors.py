"""Error-rate drift detectors: River's, behind one small protocol, plus a null and a trigger.

River's detectors are used as they are (ADWIN: Bifet & Gavaldà 2007; Page-Hinkley:
Page 1954; KSWIN: Raab et al. 2020; DDM: Gama et al. 2004); this module only gives
them our protocol, a name, and a checkpointable state.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

__all__ = ["ADWIN", "DDM", "KSWIN", "Detector", "NoDrift", "PageHinkley", "RiverDetector", "Trigger", "make"]


@runtime_checkable
class Detector(Protocol):
    """A streaming drift detector (River's ``base.DriftDetector`` contract).

    ``update(x)`` consumes one value (an error indicator or a loss) and returns nothing;
    ``drift_detected`` tells whether that update signalled drift.
    """

    name: str

    def update(self, x: float) -> None: ...

    @property
    def drift_detected(self) -> bool: ...

    def reset(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class RiverDetector:
    """Wraps a ``river.drift`` detector.

    Args:
        make: builds a fresh detector, e.g. ``lambda: river.drift.ADWIN(delta=0.002)``.
            ``reset`` calls it again (River's ``clone()`` would carry KSWIN's filled
            window into the copy through its ``window`` argument).
        name: how reports name it.
    """

    def __init__(self, make: Callable[[], Any], name: str) -> None:
        self._make, self.name = make, name
        self._d = make()

    def update(self, x: float) -> None:
        self._d.update(x)

    @property
    def drift_detected(self) -> bool:
        return bool(self._d.drift_detected)

    def reset(self) -> None:
        self._d = self._make()

    def state_dict(self) -> dict[str, Any]:
        return {"pickle": pickle.dumps(self._d)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._d = pickle.loads(state["pickle"])


def ADWIN(delta: float = 0.002, **kwargs: Any) -> RiverDetector:
    """River's ADWIN on a real-valued stream (e.g. 0/1 errors or losses)."""
    from river import drift

    return RiverDetector(lambda: drift.ADWIN(delta=delta, **kwargs), "ADWIN")


def PageHinkley(threshold: float = 50.0, delta: float = 0.005, **kwargs: Any) -> RiverDetector:
    """River's Page-Hinkley test (detects increases and decreases by default)."""
    from river import drift

    return RiverDetector(lambda: drift.PageHinkley(threshold=threshold, delta=delta, **kwargs), "PageHinkley")


def KSWIN(
    alpha: float = 0.005, window_size: int = 100, stat_size: int = 30, seed: int = 0, **kwargs: Any
) -> RiverDetector:
    """River's KSWIN (a Kolmogorov-Smirnov test over a sliding window)."""
    from river import drift

    return RiverDetector(
        lambda: drift.KSWIN(alpha=alpha, window_size=window_size, stat_size=stat_size, seed=seed, **kwargs), "KSWIN"
    )


def DDM(warm_start: int = 30, drift_threshold: float = 3.0, **kwargs: Any) -> RiverDetector:
    """River's DDM on a binary error stream (``update(1.0)`` for a mistake, ``0.0`` otherwise)."""
    from river.drift import binary

    return _BinaryRiverDetector(
        lambda: binary.DDM(warm_start=warm_start, drift_threshold=drift_threshold, **kwargs), "DDM"
    )


class _BinaryRiverDetector(RiverDetector):
    """River's binary detectors take ``bool``: 1.0 (a mistake) becomes ``True``."""

    def update(self, x: float) -> None:
        self._d.update(bool(x))


class NoDrift:
    """The null detector: never signals (river ``drift.NoDrift``)."""

    name = "NoDrift"

    def update(self, x: float) -> None:
        return None

    @property
    def drift_detected(self) -> bool:
        return False

    def reset(self) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class Trigger:
    """A deterministic detector for tests: signals on the given update numbers (0-based).

    Examples:
        >>> t = Trigger([2])
        >>> hits = []
        >>> for i in range(4):
        ...     t.update(0.0)
        ...     hits.append(t.drift_detected)
        >>> hits
        [False, False, True, False]
    """

    name = "Trigger"

    def __init__(self, at: Iterable[int]) -> None:
        self.at = frozenset(at)
        self.count = 0
        self._detected = False

    def update(self, x: float) -> None:
        self._detected = self.count in self.at
        self.count += 1

    @property
    def drift_detected(self) -> bool:
        return self._detected

    def reset(self) -> None:
        self.count, self._detected = 0, False

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count, self._detected = state["count"], False


def make(name: str, params: dict[str, float] | None = None) -> Detector:
    """The detector a config names: ``none``, ``adwin``, ``page_hinkley``, ``kswin`` or ``ddm``.

    Args:
        name: as in ``DriftConfig.detector``.
        params: keyword arguments for the River detector (``{"delta": 0.002}`` for ADWIN);
            ignored for ``none``.

    Raises:
        ValueError: unknown name.
        TypeError: (from River) a parameter the detector does not take.

    Examples:
        >>> make("adwin", {"delta": 0.01}).name
        'ADWIN'
    """
    builders: dict[str, Callable[..., Any]] = {
        "none": NoDrift,
        "adwin": ADWIN,
        "page_hinkley": PageHinkley,
        "kswin": KSWIN,
        "ddm": DDM,
    }
    if name not in builders:
        raise ValueError(f"unknown detector {name!r}; use one of {sorted(builders)}")
    if name == "none":
        return NoDrift()  # no detector: its parameters (e.g. left in a YAML) are ignored
    params = dict(params or {})
    for key in ("window_size", "stat_size", "seed", "warm_start", "min_instances", "clock", "grace_period"):
        if key in params:
            params[key] = int(params[key])
    det: Detector = builders[name](**params)
    if isinstance(det, RiverDetector):
        det._make()  # River validates its arguments here, so a bad config fails at load
    return det
