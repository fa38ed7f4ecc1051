"""Learn a NAB series on the fly, then score recent values of it over HTTP.

    python examples/nab_score_anomaly.py [--rows 3000]

Runs the use-case job (``jobs/nab.py``, variant ``machine_temperature``) on a slice, prints its
NAB scores, deploys the run's last checkpoint, and posts the machine's temperatures before and
at its catastrophic failure (2014-01-28) to ``/score_anomaly``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "jobs")]
SERIES = "realKnownCause/machine_temperature_system_failure.csv"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    import nab as nab_job  # jobs/nab.py
    import ray
    from ray import serve

    from ddn_ray import checkpoint
    from ddn_ray.serve import app_builder
    from ddn_ray.usecases import nab

    out = Path(tempfile.mkdtemp(prefix="ddn_ray_nab_"))
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        summary = nab_job.cli(
            [
                "--variants",
                "machine_temperature",
                "--set",
                f"data.max_rows={args.rows}",
                "--set",
                "train.checkpoint_every_windows=5",
                "--set",
                f"storage_path={out / 'storage'}",
                "--set",
                f"report.output_dir={out}",
                "--set",
                f"serve.port={args.port}",
            ]
        )
        print("NAB scores of the slice:", summary["variants"]["machine_temperature"]["anomaly"])
        run = Path(summary["variants"]["machine_temperature"]["report"]).parent.name
        ckpt = checkpoint.latest(out / "storage" / run)
        serve.run(app_builder({"checkpoint": str(ckpt)}), name="nab", route_prefix="/nab")
        s = nab.load_corpus(None, [SERIES])[SERIES]
        failure = int(np.searchsorted(s.timestamps, np.datetime64("2014-01-28T13:55")))
        answers = []
        for end in (failure - 2000, failure - 300, failure):
            body = {"series": SERIES, "values": s.values[end - 400 : end + 1].tolist()}
            a = requests.post(f"http://127.0.0.1:{args.port}/nab/score_anomaly", json=body, timeout=30).json()
            print(
                f"{str(s.timestamps[end])[:16]}  value {s.values[end]:7.2f}  forecast {a['forecast']:7.2f}  "
                f"anomaly score {a['anomaly_score']:.3f}{'  ALARM' if a['alarm'] else ''}"
            )
            answers.append(a)
        return answers
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
