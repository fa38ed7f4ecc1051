"""Use case: image classification under drift on Fashion-MNIST (Xiao, Rasul & Vollgraf 2017).

A small CNN learns on the stream while Serve replicas answer PNG images over HTTP
(``/predict_images``). Two scenarios (``ddn_ray.usecases.scenarios``): covariate drift (rotation,
gradual then abrupt) and class-incremental (new classes appear). Each runs with plain
fine-tuning and with forgetting strategies; every run also scores the static CNN, frozen
after the first ``report.static_windows`` windows.

Run:  python jobs/fashion_mnist.py [--variants rotation/finetune,...] [--set data.options.stream_rows=3000 ...]
Writes runs/fashion_mnist/summary.{md,json} and accuracy.png, and each run's own report.
"""

from __future__ import annotations

from typing import Any

import usecase

VARIANTS: dict[str, list[str]] = {
    "rotation/finetune": ["data.scenario=rotation"],
    "rotation/replay": ["data.scenario=rotation", "strategy.name=replay"],
    "new_classes/finetune": ["data.scenario=new_classes"],
    "new_classes/replay+online_ewc": ["data.scenario=new_classes", "strategy.name=online_ewc+replay"],
}


def cli(argv: list[str] | None = None) -> dict[str, Any]:
    return usecase.cli("fashion_mnist", __doc__, VARIANTS, argv)


if __name__ == "__main__":
    cli()
