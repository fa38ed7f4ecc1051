"""Fuzz every kind of Serve route against the OpenAPI it publishes (schemathesis + hypothesis).

    python benchmarks/fuzz_serve.py [--examples 100]

Five apps, one replica each, serve a fixed checkpoint (``ddn_ray.serve.Predictor``): rows of numbers
(``/predict`` ``instances``), a user's table (``/predict`` ``records`` / ``columns`` + ``data``, with its
preprocessing), images (``/predict_images``), a dynamics model (``/predict_next_state``) and a series
forecaster (``/score_anomaly``), each with ``/version`` and ``/schema``. For every operation of each app's
``/openapi.json``, schemathesis sends ``--examples`` requests valid by the schema and as many invalid ones, and
checks each answer: not a 5xx, a body matching the schema of its status, an answer within 10 s. Prints one
table per app and the totals; exits 1 when a check failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import pyarrow as pa

from ddn_ray import checkpoint as checkpoint_io
from ddn_ray import models
from ddn_ray.config import ModelConfig
from ddn_ray.features import Featurizer
from tests.integration.fuzz import FuzzTotals, fuzz

PORT = 18300
ROUTES = "ddn_ray.usecases.routes:"


def _checkpoint(directory: Path, model: ModelConfig, nf: int, nc: int, **meta: Any) -> str:
    directory.mkdir(parents=True)
    weights = models.build(model, nf, nc, seed=0).state_dict()
    spec = checkpoint_io.model_spec(model, nf, nc, None, meta.pop("inputs", None))
    checkpoint_io.write(directory, weights, [{}], {"model_version": 1, "next_offset": 0, **spec, **meta})
    return str(directory)


def _table_featurizer() -> Featurizer:
    rng = np.random.default_rng(0)
    f = Featurizer(numeric=["amount", "term_months"], categorical=["region"], label="y", classes=["no", "yes"])
    n = 200
    table = pa.table(
        {
            "amount": rng.normal(3000, 800, n),
            "term_months": rng.choice([12, 36, 60], n).astype(float),
            "region": rng.choice(["north", "south", "east"], n),
            "y": rng.choice(["no", "yes"], n),
        }
    )
    f.update(f.rows(table))
    return f


def apps(root: Path) -> dict[str, str]:
    """name -> checkpoint directory of each app."""
    mlp = ModelConfig(hidden_sizes=(16,))
    reg = ModelConfig(hidden_sizes=(16,), task="regression")
    feat = _table_featurizer()
    return {
        "instances": _checkpoint(root / "instances", mlp, 6, 2),
        "records": _checkpoint(
            root / "records", mlp, feat.width, 2, preprocessing=feat.state_dict(), inputs={"kind": "records"}
        ),
        "images": _checkpoint(
            root / "images", mlp, 784, 10, inputs={"kind": "images", "routes": ROUTES + "IMAGES", "shape": [1, 28, 28]}
        ),
        "dynamics": _checkpoint(
            root / "dynamics",
            reg,
            3,
            2,
            inputs={
                "kind": "dynamics",
                "routes": ROUTES + "DYNAMICS",
                "state_names": ["x", "v"],
                "action_names": ["force"],
                "x_mean": [0.0, 0.0, 0.0],
                "x_std": [1.0, 2.0, 1.0],
                "y_mean": [0.0, 0.0],
                "y_std": [0.1, 0.2],
            },
        ),
        "series": _checkpoint(
            root / "series",
            reg,
            4,
            1,
            inputs={
                "kind": "series",
                "routes": ROUTES + "SERIES",
                "series": "machine",
                "lags": 4,
                "lo": 0.0,
                "hi": 100.0,
            },
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=100, help="requests per operation and generation mode")
    args = parser.parse_args()
    import ray
    from ray import serve

    from ddn_ray.serve import app_builder

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    total, t0 = FuzzTotals(), time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, ckpt in apps(Path(tmp)).items():
                serve.run(app_builder({"checkpoint": ckpt}), name=name, route_prefix=f"/{name}")
                totals = fuzz(f"http://127.0.0.1:{PORT}/{name}", max_examples=args.examples)
                print(f"\n## {name}\n{totals.table()}")
                for f in totals.failures[:10]:
                    print("FAILED", f)
                total.requests += totals.requests
                total.statuses.update(totals.statuses)
                total.kinds.update({f"{name}: {k}": n for k, n in totals.kinds.items()})
                total.failures += totals.failures
                serve.delete(name)
    finally:
        serve.shutdown()
        ray.shutdown()
    print(f"\n## all apps ({time.monotonic() - t0:.0f} s, {args.examples} examples per operation and mode)")
    print(
        f"requests {total.requests}, operations x modes {len(total.kinds)}, 2xx {total.count(200, 300)}, "
        f"4xx {total.count(400, 500)}, 5xx {total.count(500, 600)}, failed checks {len(total.failures)}"
    )
    print("statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(total.statuses.items())))
    sys.exit(1 if total.failures else 0)


if __name__ == "__main__":
    main()
