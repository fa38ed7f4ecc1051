"""Use case: streaming anomaly detection and predictive maintenance on NAB (Lavin & Ahmad 2015).

One series per run, in time order and without labels: Serve replicas forecast each point
before it is revealed, Train workers learn it, and the report turns the served forecast errors
into anomaly likelihoods and NAB scores (``ddn_ray.usecases.nab``), for the learning forecaster and the
static one frozen after NAB's probation. A deployed checkpoint scores recent values of its
series over HTTP (``POST /score_anomaly``).

Run:  python jobs/nab.py [--variants machine_temperature] [--set data.options.series=realTweets/Twitter_volume_AAPL.csv]
Writes runs/nab/summary.{md,json} and accuracy.png, and each run's own report.
"""

from __future__ import annotations

from typing import Any

import usecase

VARIANTS: dict[str, list[str]] = {
    "machine_temperature": ["data.options.series=realKnownCause/machine_temperature_system_failure.csv"],
    "ambient_temperature": ["data.options.series=realKnownCause/ambient_temperature_system_failure.csv"],
}


def cli(argv: list[str] | None = None) -> dict[str, Any]:
    return usecase.cli("nab", __doc__, VARIANTS, argv)


if __name__ == "__main__":
    cli()
