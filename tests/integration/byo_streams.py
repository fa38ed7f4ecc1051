"""Streams no built-in loader knows, written by the tests themselves (the "bring your own data" tests).

``loans`` is a binary classification table with numeric and string columns, missing values,
string labels and an abrupt concept drift; ``demand`` a regression table whose target's
dependence on its inputs drifts gradually. Both are reproducible from ``seed``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

REGIONS = ("north", "south", "east", "west")
CHANNELS = ("web", "branch", "phone")


def loans(n: int, *, seed: int = 0, drift_at: float = 0.5, missing: float = 0.03, start_id: int = 0) -> pa.Table:
    """``n`` loan applications; ``defaulted`` ("yes" / "no") flips its dependence on ``amount`` and
    ``region`` at row ``drift_at * n`` (abrupt drift). About ``missing`` of the ``amount`` values are
    null, and ``term_months`` is an integer column."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(8.0, 0.6, n)
    term = rng.choice([12, 24, 36, 60], n)
    region = rng.choice(REGIONS, n)
    channel = rng.choice(CHANNELS, n, p=[0.5, 0.3, 0.2])
    z = (np.log(amount) - 8.0) / 0.6 + (term - 33) / 18
    after = np.arange(n) >= int(drift_at * n)
    risk = np.where(after, -z + 1.5 * (region == "south") - 0.75,
                    z + 1.5 * (region == "north") - 0.75) + 0.8 * (channel == "web")
    defaulted = np.where(risk + rng.normal(0, 0.4, n) > 0, "yes", "no")
    amount_col = pa.array(amount, mask=rng.random(n) < missing)
    return pa.table({"loan_id": [f"L{start_id + i:06d}" for i in range(n)], "created_at": np.arange(n) * 60,
                     "amount": amount_col, "term_months": term.astype(np.int64), "region": region,
                     "channel": channel, "defaulted": defaulted})


def demand(n: int, *, seed: int = 1) -> pa.Table:
    """``n`` rows of a regression target ``units`` whose price elasticity drifts gradually over the rows."""
    rng = np.random.default_rng(seed)
    price = rng.uniform(1.0, 3.0, n)
    promo = rng.choice(["none", "flyer", "tv"], n)
    t = np.linspace(0.0, 1.0, n)
    slope = -1.5 + 3.0 * t  # the price effect turns from negative to positive
    units = 2.0 + slope * (price - 2.0) + 0.8 * (promo == "tv") + rng.normal(0, 0.1, n)
    return pa.table({"price": price, "promo": promo, "units": units})
