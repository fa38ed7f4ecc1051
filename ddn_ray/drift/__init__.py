"""Drift analysis: error-rate detectors (River's, behind our protocol) and feature drift tests.

Import as a module: ``from ddn_ray import drift``; ``drift.ADWIN()``, ``drift.ks_features(ref, cur)``.
"""

from __future__ import annotations

from ddn_ray.drift.detectors import ADWIN, DDM, KSWIN, Detector, NoDrift, PageHinkley, RiverDetector, Trigger, make
from ddn_ray.drift.features import FeatureDrift, ks_features, mmd_permutation_test
from ddn_ray.drift.monitor import DriftSignal, Monitor
from ddn_ray.drift.residuals import residual_alarms

__all__ = [
    "ADWIN",
    "DDM",
    "KSWIN",
    "Detector",
    "DriftSignal",
    "FeatureDrift",
    "Monitor",
    "NoDrift",
    "PageHinkley",
    "RiverDetector",
    "Trigger",
    "ks_features",
    "make",
    "mmd_permutation_test",
    "residual_alarms",
]
