"""Drift analysis: error-rate detectors (River's, behind our protocol) and feature drift tests.

Import as a module: ``from ddn_ray import drift``; ``drift.ADWIN()``, ``drift.ks_features(ref, cur)``.
"""

from __future__ import annotations

from ddn_ray.drift.detectors import ADWIN, DDM, KSWIN, Detector, NoDrift, PageHinkley, RiverDetector, Trigger
from ddn_ray.drift.features import FeatureDrift, ks_features, mmd_permutation_test

__all__ = [
    "ADWIN", "DDM", "KSWIN", "Detector", "FeatureDrift", "NoDrift", "PageHinkley", "RiverDetector", "Trigger",
    "ks_features", "mmd_permutation_test",
]
