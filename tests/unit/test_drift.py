"""Every detector through one contract; golden detection offsets on seeded streams; feature tests."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from ddn_ray import drift

rng = np.random.default_rng(42)
ERRORS = np.concatenate([rng.random(1000) < 0.1, rng.random(1000) < 0.5]).astype(float)  # drift at 1000
GAUSS = np.concatenate([rng.normal(0, 1, 1000), rng.normal(1.5, 1, 1000)])

DETECTORS = {
    "ADWIN": (drift.ADWIN, ERRORS),
    "PageHinkley": (drift.PageHinkley, ERRORS),
    "DDM": (drift.DDM, ERRORS),
    "KSWIN": (drift.KSWIN, GAUSS),
    "NoDrift": (drift.NoDrift, ERRORS),
    "Trigger": (lambda: drift.Trigger([5, 1500]), ERRORS),
}


def _detections(det: drift.Detector, xs: np.ndarray) -> list[int]:
    out = []
    for i, v in enumerate(xs):
        assert det.update(float(v)) is None  # update mutates, never returns (river issue #1417)
        if det.drift_detected:
            out.append(i)
    return out


@pytest.mark.parametrize("name", DETECTORS)
def test_contract_reset_and_checkpoint(name: str) -> None:
    make, xs = DETECTORS[name]
    det = make()
    assert isinstance(det, drift.Detector) and det.name == name
    full = _detections(det, xs)
    det.reset()
    assert _detections(det, xs) == full  # reset gives a fresh detector
    # checkpoint half-way, restore into a new detector: the same detections follow
    a = make()
    first = _detections(a, xs[:1200])
    b = make()
    b.load_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    rest = [i + 1200 for i in _detections(b, xs[1200:])]
    assert first + rest == full or name == "Trigger"  # a trigger counts updates from its restored count
    if name == "Trigger":
        assert full == [5, 1500]


@pytest.mark.parametrize(
    "name,golden",
    [("ADWIN", [1055]), ("PageHinkley", [1137]), ("DDM", [1109]), ("KSWIN", [1016, 1489, 1728]), ("NoDrift", [])],
)
def test_golden_detection_offsets(name: str, golden: list[int]) -> None:
    make, xs = DETECTORS[name]
    assert _detections(make(), xs) == golden  # drift at 1000: no false alarm before it


def test_ks_features_finds_the_moved_feature_with_correction() -> None:
    g = np.random.default_rng(0)
    ref = g.normal(size=(500, 5))
    cur = g.normal(size=(500, 5))
    cur[:, 3] += 0.5
    for correction in ("bonferroni", "bh"):
        res = drift.ks_features(ref, cur, alpha=0.01, correction=correction)
        assert res.moved == (3,) and res.drift_detected
        assert res.mean_shift[3] == pytest.approx(0.5, abs=0.15)
        assert (res.p_adjusted >= res.p_value).all()
    same = drift.ks_features(ref, g.normal(size=(500, 5)))
    assert same.moved == () and not same.drift_detected


def test_bonferroni_is_p_times_features_capped_at_one() -> None:
    g = np.random.default_rng(1)
    res = drift.ks_features(g.normal(size=(50, 4)), g.normal(size=(50, 4)))
    np.testing.assert_allclose(res.p_adjusted, np.minimum(res.p_value * 4, 1.0))


def test_ks_features_rejects_mismatched_windows() -> None:
    with pytest.raises(ValueError, match=r"\(n, d\) and \(m, d\)"):
        drift.ks_features(np.zeros((5, 2)), np.zeros((5, 3)))


def test_mmd_separates_shifted_embeddings_and_not_identical_ones() -> None:
    g = np.random.default_rng(0)
    a, b = g.normal(size=(60, 8)), g.normal(size=(60, 8))
    mmd_same, p_same = drift.mmd_permutation_test(a, b, num_permutations=100)
    mmd_shift, p_shift = drift.mmd_permutation_test(a, b + 1.0, num_permutations=100)
    assert p_shift == pytest.approx(1 / 101) and mmd_shift > 5 * mmd_same
    assert p_same > 0.05
