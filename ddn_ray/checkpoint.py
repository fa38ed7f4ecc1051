"""The main job's checkpoint format, shared by the trainer (writes) and Serve (reads).

A checkpoint directory holds ``state.pt`` (``{"model": state_dict, "learner": [one state
per rank]}``) and ``meta.json``: ``next_offset``, ``next_window``, ``model_version`` and the
model spec (``model``: ``ModelConfig`` as a dict, ``num_features``, ``num_classes``,
``feature_names``, ``inputs``), so a checkpoint can be served without the job's config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["latest", "model_spec", "read", "read_meta", "write"]

STATE, META = "state.pt", "meta.json"


def model_spec(
    model_cfg: Any,
    num_features: int,
    num_classes: int,
    feature_names: list[str] | None,
    inputs: dict[str, Any] | None = None,
    student: Any = None,
) -> dict[str, Any]:
    """What Serve needs to build the model: the ``meta.json`` keys, also held by the controller.

    ``model_cfg`` is a :class:`~ddn_ray.config.ModelConfig`; ``inputs`` the raw-input spec of
    :class:`ddn_ray.usecase.Scenario` (default ``{"kind": "table"}``: rows of numbers only); ``student`` the
    ``distill.student`` :class:`~ddn_ray.config.ModelConfig` (a version whose meta says ``served_model: student``
    is built from it).
    """
    return {
        "model": model_cfg.model_dump(mode="json"),
        "num_features": num_features,
        "num_classes": num_classes,
        "feature_names": feature_names,
        "inputs": inputs or {"kind": "table"},
        **({"student_model": student.model_dump(mode="json")} if student is not None else {}),
    }


def write(
    directory: str | Path,
    model_state: dict[str, torch.Tensor],
    learner_states: list[dict[str, Any]],
    meta: dict[str, Any],
) -> None:
    """Write ``state.pt`` and ``meta.json`` into an existing ``directory``."""
    torch.save({"model": model_state, "learner": learner_states}, Path(directory) / STATE)
    (Path(directory) / META).write_text(json.dumps(meta))


def read_meta(directory: str | Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((Path(directory) / META).read_text())
    return meta


def read(path: str) -> tuple[int, dict[str, np.ndarray], dict[str, Any]]:
    """Load a checkpoint's weights for serving.

    Args:
        path: a checkpoint directory, or a URI Ray Train's ``Checkpoint`` understands
            (``s3://...``, ``gs://...``).

    Returns:
        ``(model_version, weights as float numpy arrays by state_dict key, meta)``.

    Raises:
        FileNotFoundError: no ``state.pt`` / ``meta.json`` there.
        ValueError: the meta does not describe the model (a checkpoint from before the spec was stored).
    """
    from ray.train import Checkpoint

    with Checkpoint(path).as_directory() as d:
        if not (Path(d) / STATE).is_file() or not (Path(d) / META).is_file():
            raise FileNotFoundError(f"{path} is not a ddn_ray checkpoint: expected {STATE} and {META}")
        meta = read_meta(d)
        state = torch.load(Path(d) / STATE, map_location="cpu", weights_only=False)
    missing = [k for k in ("model_version", "model", "num_features", "num_classes") if k not in meta]
    if missing:
        raise ValueError(f"{path}/{META} lacks {missing}")
    weights = {k: v.detach().numpy().copy() for k, v in state["model"].items()}
    return int(meta["model_version"]), weights, meta


def latest(run_dir: str | Path) -> Path:
    """The checkpoint directory of a run (``<storage_path>/<run name>``) that reaches furthest into the stream.

    Raises:
        FileNotFoundError: the run wrote no checkpoint.
    """
    metas = list(Path(run_dir).glob(f"checkpoint_*/{META}"))
    if not metas:
        raise FileNotFoundError(f"no checkpoint under {run_dir}")
    return max(metas, key=lambda p: json.loads(p.read_text())["next_offset"]).parent
