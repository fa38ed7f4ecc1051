"""Streams no built-in loader knows, written by the tests themselves (the "bring your own data" tests).

``loans`` is a binary classification table with numeric and string columns, missing values,
string labels and an abrupt concept drift; ``demand`` a regression table whose target's
dependence on its inputs drifts gradually. Both are reproducible from ``seed``. :data:`FLIP` is a
use case of a user's own (``data.name: tests.integration.byo_streams:FLIP``), with settings of its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from ddn_ray import config, usecase
from ddn_ray.stream import Table

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
    risk = np.where(after, -z + 1.5 * (region == "south") - 0.75, z + 1.5 * (region == "north") - 0.75) + 0.8 * (
        channel == "web"
    )
    defaulted = np.where(risk + rng.normal(0, 0.4, n) > 0, "yes", "no")
    amount_col = pa.array(amount, mask=rng.random(n) < missing)
    return pa.table(
        {
            "loan_id": [f"L{start_id + i:06d}" for i in range(n)],
            "created_at": np.arange(n) * 60,
            "amount": amount_col,
            "term_months": term.astype(np.int64),
            "region": region,
            "channel": channel,
            "defaulted": defaulted,
        }
    )


def demand(n: int, *, seed: int = 1) -> pa.Table:
    """``n`` rows of a regression target ``units`` whose price elasticity drifts gradually over the rows."""
    rng = np.random.default_rng(seed)
    price = rng.uniform(1.0, 3.0, n)
    promo = rng.choice(["none", "flyer", "tv"], n)
    t = np.linspace(0.0, 1.0, n)
    slope = -1.5 + 3.0 * t  # the price effect turns from negative to positive
    units = 2.0 + slope * (price - 2.0) + 0.8 * (promo == "tv") + rng.normal(0, 0.1, n)
    return pa.table({"price": price, "promo": promo, "units": units})


class FlipOptions(usecase.Options):
    """``data.options`` of :data:`FLIP`."""

    num_rows: int = Field(400, gt=0, description="rows in the stream")
    flip_at: int = Field(200, gt=0, description="the row where the label flips (scenario flip)")


class FlipUseCase:
    """A use case outside the package, as a user writes one (:class:`ddn_ray.usecase.UseCase`): three
    normal features, the label is whether the first is positive, and under the ``flip`` scenario the
    label flips at row ``flip_at`` (an abrupt concept drift; phase 1 from there)."""

    task = "classification"
    scenarios = ("none", "flip")
    options = FlipOptions

    def scenario(self, data: config.DataConfig) -> usecase.Scenario:
        opts = self.options.model_validate(data.options)
        x = np.random.default_rng(data.seed).normal(size=(opts.num_rows, 3)).astype(np.float32)
        y = (x[:, 0] > 0).astype(np.int64)
        phase = np.zeros(opts.num_rows, np.int64)
        if data.scenario == "flip":
            y[opts.flip_at :] = 1 - y[opts.flip_at :]
            phase[opts.flip_at :] = 1
        return usecase.Scenario(Table(x, y, ("a", "b", "c"), 2), {"kind": "table"}, phase, ("low", "high"))

    def client_route(self, scenario: usecase.Scenario, job: config.JobConfig) -> None:
        return None  # feature rows to /predict

    def no_change(self, scenario: usecase.Scenario, labels: np.ndarray) -> np.ndarray:
        return np.zeros(labels.shape)

    def report_extras(
        self, *, job: config.JobConfig, scenario: usecase.Scenario, rows: dict[str, np.ndarray], static_windows: int
    ) -> dict[str, Any]:
        return {
            "flip": {
                "rows_after_flip": int((rows["offset"] >= self.options.model_validate(job.data.options).flip_at).sum())
            }
        }


FLIP = FlipUseCase()
