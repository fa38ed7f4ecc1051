"""Train a CNN on a short rotating Fashion-MNIST stream, then serve its checkpoint and send it PNG files.

    python examples/fashion_mnist_png.py [--stream-rows 2000]

Runs the use-case job (``jobs/fashion_mnist.py``, variant ``rotation/finetune``) on a local Ray
cluster, deploys the run's last checkpoint as its own Serve app, and posts five test images as
base64 PNG to ``/predict_images``, the way any HTTP client would.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "jobs")]

NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream-rows", type=int, default=2000)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    import fashion_mnist  # jobs/fashion_mnist.py
    import ray
    from ray import serve

    from ddn_ray import checkpoint
    from ddn_ray.serve import app_builder
    from ddn_ray.usecases import datasets, images

    out = Path(tempfile.mkdtemp(prefix="ddn_ray_fashion_"))
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        summary = fashion_mnist.cli(
            [
                "--variants",
                "rotation/finetune",
                "--set",
                f"data.options.stream_rows={args.stream_rows}",
                "--set",
                "report.static_windows=8",
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
        run = Path(summary["variants"]["rotation/finetune"]["report"]).parent.name
        ckpt = checkpoint.latest(out / "storage" / run)
        serve.run(app_builder({"checkpoint": str(ckpt)}), name="fashion", route_prefix="/fashion")
        test = datasets.load_fashion_mnist(split="test")
        body = {"png": images.encode_png(test.features[:5], (1, 28, 28))}
        answer = requests.post(f"http://127.0.0.1:{args.port}/fashion/predict_images", json=body, timeout=30).json()
        for got, want in zip(answer["predictions"], test.labels[:5]):
            print(f"predicted {NAMES[got]:<12} true {NAMES[want]}")
        print(f"model version {answer['model_version']} from {ckpt}")
        return answer
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
