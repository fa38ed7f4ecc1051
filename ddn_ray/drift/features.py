"""Feature drift between a reference window and the current one.

* Per-feature two-sample Kolmogorov-Smirnov tests (``scipy.stats.ks_2samp``) with a
  multiple-testing correction: Bonferroni (family-wise) or Benjamini-Hochberg (FDR,
  ``scipy.stats.false_discovery_control``).
* A kernel two-sample test on embeddings: the (biased) squared MMD with an RBF kernel
  of median-heuristic bandwidth (Gretton et al. 2012, JMLR, eq. 5), p-value by permutation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

__all__ = ["FeatureDrift", "ks_features", "mmd_permutation_test"]


@dataclass(frozen=True)
class FeatureDrift:
    """Result of :func:`ks_features`.

    Attributes:
        statistic: ``(num_features,)`` KS statistic per feature.
        p_value: ``(num_features,)`` raw p-values.
        p_adjusted: ``(num_features,)`` corrected p-values.
        moved: indices of features with ``p_adjusted < alpha``.
        mean_shift: ``(num_features,)`` current mean minus reference mean.
    """

    statistic: np.ndarray
    p_value: np.ndarray
    p_adjusted: np.ndarray
    moved: tuple[int, ...]
    mean_shift: np.ndarray

    @property
    def drift_detected(self) -> bool:
        return bool(self.moved)


def ks_features(
    reference: np.ndarray,
    current: np.ndarray,
    alpha: float = 0.01,
    correction: Literal["bonferroni", "bh"] = "bonferroni",
) -> FeatureDrift:
    """Test every feature for a change of distribution.

    Args:
        reference: ``(n, num_features)`` rows from before.
        current: ``(m, num_features)`` rows from now.
        alpha: level after correction.
        correction: ``"bonferroni"`` or ``"bh"`` (Benjamini-Hochberg).

    Raises:
        ValueError: the two windows have different feature counts or fewer than 2 rows.
    """
    if reference.ndim != 2 or current.ndim != 2 or reference.shape[1] != current.shape[1]:
        raise ValueError(f"need (n, d) and (m, d) arrays, got {reference.shape} and {current.shape}")
    if len(reference) < 2 or len(current) < 2:
        raise ValueError("each window needs at least 2 rows")
    with warnings.catch_warnings():  # scipy falls back to the asymptotic p-value itself; say nothing
        warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful")
        res = [stats.ks_2samp(reference[:, j], current[:, j]) for j in range(reference.shape[1])]
    stat = np.array([r.statistic for r in res])
    p = np.array([r.pvalue for r in res])
    adj = np.minimum(p * len(p), 1.0) if correction == "bonferroni" else stats.false_discovery_control(p)
    moved = tuple(int(j) for j in np.flatnonzero(adj < alpha))
    return FeatureDrift(stat, p, adj, moved, current.mean(axis=0) - reference.mean(axis=0))


def _mmd2(k: np.ndarray, n: int) -> float:
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())


def mmd_permutation_test(
    reference: np.ndarray, current: np.ndarray, num_permutations: int = 200, seed: int = 0
) -> tuple[float, float]:
    """Squared MMD between two samples of embeddings and its permutation p-value.

    Args:
        reference: ``(n, dim)`` embeddings (e.g. the model's penultimate layer) from before.
        current: ``(m, dim)`` embeddings from now.
        num_permutations: shuffles of the pooled sample.
        seed: for the permutations.

    Returns:
        ``(mmd2, p_value)``; ``p_value = (1 + #{perm mmd2 >= observed}) / (1 + num_permutations)``.
    """
    z = np.concatenate([reference, current]).astype(np.float64)
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    bandwidth = np.median(d2[np.triu_indices(len(z), 1)]) or 1.0
    k = np.exp(-d2 / bandwidth)
    n = len(reference)
    observed = _mmd2(k, n)
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(num_permutations):
        idx = rng.permutation(len(z))
        hits += _mmd2(k[np.ix_(idx, idx)], n) >= observed
    return observed, (1 + hits) / (1 + num_permutations)
