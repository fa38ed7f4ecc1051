"""A Ray Tune sweep of the adaptation hyperparameters (see ``ddn_ray.sweep``).

Run:  python jobs/sweep.py --config jobs/configs/sweep_elec2.yaml [--set num_samples=4]
  or: ddn-ray tune --config jobs/configs/sweep_elec2.yaml
  or: ray job submit --working-dir . -- python jobs/sweep.py --config jobs/configs/sweep_elec2.yaml

Writes results.csv, best.yaml (a job config for jobs/continuous.py), scores.png and
summary.json under the sweep's output_dir.
"""

from ddn_ray import localcluster

localcluster.prefer_loopback()  # a cluster this driver starts itself listens on 127.0.0.1 only

from ddn_ray.sweep import cli

if __name__ == "__main__":
    cli()
