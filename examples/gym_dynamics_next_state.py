"""Learn CartPole's dynamics while its actuator wears, then ask the served model for next states.

    python examples/gym_dynamics_next_state.py [--steps 3000]

Runs the use-case job (``jobs/gym_dynamics.py``, variant ``worn_actuator/cartpole``) on a local
Ray cluster, prints its fault alarm, deploys the run's last checkpoint, and posts raw states and
pushes to ``/predict_next_state``; the answers are compared with what the environment did.
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    import gym_dynamics  # jobs/gym_dynamics.py
    import ray
    from ray import serve

    from ddn_ray import checkpoint
    from ddn_ray.serve import app_builder
    from ddn_ray.usecases import control

    out = Path(tempfile.mkdtemp(prefix="ddn_ray_gym_"))
    variant = "worn_actuator/cartpole"
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        summary = gym_dynamics.cli(
            [
                "--variants",
                variant,
                "--set",
                f"data.options.stream_rows={args.steps}",
                "--set",
                f"data.options.standardize_rows={args.steps // 5}",
                "--set",
                "report.static_windows=3",
                "--set",
                "train.checkpoint_every_windows=3",
                "--set",
                f"storage_path={out / 'storage'}",
                "--set",
                f"report.output_dir={out}",
                "--set",
                f"serve.port={args.port}",
            ]
        )
        print("fault alarm:", summary["variants"][variant]["fault"])
        run = Path(summary["variants"][variant]["report"]).parent.name
        ckpt = checkpoint.latest(out / "storage" / run)
        serve.run(app_builder({"checkpoint": str(ckpt)}), name="gym", route_prefix="/gym")
        r = control.rollout("CartPole-v1", args.steps, control.worn_actuator(args.steps // 3, 2 * args.steps // 3))
        s, a = r.inputs[-5:, :4], r.inputs[-5:, 4:]
        answer = requests.post(
            f"http://127.0.0.1:{args.port}/gym/predict_next_state",
            json={"states": s.tolist(), "actions": a.tolist()},
            timeout=30,
        ).json()
        for got, want in zip(np.array(answer["next_states"]), s + r.targets[-5:]):
            print("predicted", np.round(got, 4), " true", np.round(want, 4))
        print(f"model version {answer['model_version']} from {ckpt}")
        return answer
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
