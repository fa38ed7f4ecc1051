"""Learn BBC News topics on a short stream, then serve the checkpoint and send it raw text.

    python examples/bbc_news_text.py [--rows 400] [--features hashing|minilm]

Runs the use-case job (``jobs/bbc_news.py``, variant ``topic_shift/<features>``) on a local Ray
cluster, deploys the run's last checkpoint as its own Serve app, and posts two sentences to
``/predict_text``; the replica featurizes them exactly as the stream did.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "jobs")]

TOPICS = ("business", "entertainment", "politics", "sport", "tech")
DOCS = (
    "The central bank raised interest rates as shares fell on the stock market.",
    "The new phone runs faster software and its chip makers expect strong sales of broadband devices.",
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--features", choices=("hashing", "minilm"), default="hashing")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    import bbc_news  # jobs/bbc_news.py
    import ray
    from ray import serve

    from ddn_ray import checkpoint
    from ddn_ray.serve import app_builder

    out = Path(tempfile.mkdtemp(prefix="ddn_ray_bbc_"))
    variant = f"topic_shift/{args.features}"
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        summary = bbc_news.cli(
            [
                "--variants",
                variant,
                "--set",
                f"data.max_rows={args.rows}",
                "--set",
                "report.static_windows=4",
                "--set",
                "train.checkpoint_every_windows=4",
                "--set",
                f"storage_path={out / 'storage'}",
                "--set",
                f"report.output_dir={out}",
                "--set",
                f"serve.port={args.port}",
            ]
        )
        run = Path(summary["variants"][variant]["report"]).parent.name
        ckpt = checkpoint.latest(out / "storage" / run)
        serve.run(app_builder({"checkpoint": str(ckpt)}), name="bbc", route_prefix="/bbc")
        answer = requests.post(
            f"http://127.0.0.1:{args.port}/bbc/predict_text", json={"texts": list(DOCS)}, timeout=60
        ).json()
        for doc, got in zip(DOCS, answer["predictions"]):
            print(f"{TOPICS[got]:<14} {doc}")
        print(f"model version {answer['model_version']} from {ckpt}")
        return answer
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
