"""Where tensors live: the GPU Ray gave a Train worker or a replica when torch can use it, else the CPU.

A job asks for GPUs with ``train.use_gpu`` (one per Train worker: ``ScalingConfig(use_gpu=True)``) and
``serve.num_gpus`` (per replica, fractional shares one). The driver first fits the request to the cluster it
joined (:func:`fit_to_cluster`): without the GPUs it needs, the job runs on CPU with one warning instead of
waiting forever for resources that do not exist. In a worker or a replica, :func:`assigned_device` turns the GPU
ids Ray assigned (``ray.get_gpu_ids()``, logical resources) into a ``torch.device``: ``cuda`` when torch can use
it, else the CPU with one warning (a logical GPU on a machine without CUDA, as in this project's tests).

Mixed precision (``train.amp``): :func:`autocast` runs the forward pass and the loss in bfloat16 where the
device supports it (CUDA since Ampere, and the CPU), with float32 weights and optimizer state (Micikevicius et
al., "Mixed Precision Training", ICLR 2018; bfloat16 needs no loss scaling).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ddn_ray.config import JobConfig

__all__ = ["assigned_device", "autocast", "fit_to_cluster", "torch_backend"]

log = logging.getLogger(__name__)
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def fit_to_cluster(cfg: JobConfig, cluster_gpus: float) -> tuple[JobConfig, list[str]]:
    """The job's GPU requests fitted to a cluster with ``cluster_gpus`` GPUs (``ray.cluster_resources()``).

    ``train.use_gpu`` needs one GPU per Train worker and ``serve.num_gpus`` that many per replica; a request the
    cluster cannot hold falls back to CPU (``use_gpu=False`` / ``num_gpus=0``). Replicas are placed first
    (serving is what users wait on), then the workers with what is left.

    Args:
        cfg: the job's config.
        cluster_gpus: the GPU resources of the cluster (logical; 0 without any).

    Returns:
        ``(config, warnings)``: the config to run, and one line per request that fell back (the caller logs
        them once).
    """
    notes: list[str] = []
    train, serve = cfg.train, cfg.serve
    serve_gpus = serve.num_gpus * serve.num_replicas
    if serve_gpus > cluster_gpus + 1e-9:
        notes.append(
            f"serve.num_gpus={serve.num_gpus} x {serve.num_replicas} replicas needs {serve_gpus:g} GPUs; the "
            f"cluster has {cluster_gpus:g}: replicas run on CPU"
        )
        serve, serve_gpus = serve.model_copy(update={"num_gpus": 0.0}), 0.0
    if train.use_gpu and train.num_workers > cluster_gpus - serve_gpus + 1e-9:
        notes.append(
            f"train.use_gpu needs {train.num_workers} GPU(s) for {train.num_workers} Train worker(s); the cluster "
            f"has {cluster_gpus - serve_gpus:g} left after the replicas: Train workers run on CPU"
        )
        train = train.model_copy(update={"use_gpu": False})
    return cfg.model_copy(update={"train": train, "serve": serve}), notes


def fit_to_this_cluster(cfg: JobConfig) -> JobConfig:
    """:func:`fit_to_cluster` on the Ray cluster this process is connected to (``ray.cluster_resources()``),
    logging one warning per request that falls back to CPU; returns the config to run."""
    import ray

    cfg, notes = fit_to_cluster(cfg, ray.cluster_resources().get("GPU", 0.0))
    for note in notes:
        log.warning(note)
    return cfg


def torch_backend(use_gpu: bool) -> str:
    """The ``torch.distributed`` backend of the Train workers: NCCL for GPUs where this torch has CUDA, else
    Gloo (which also reduces CUDA tensors, slower)."""
    return "nccl" if use_gpu and torch.cuda.is_available() else "gloo"


def assigned_device(*, train: bool = False) -> torch.device:
    """The device of this Ray worker process: the GPU Ray assigned it when torch can use CUDA, else the CPU.

    Args:
        train: in a Ray Train worker (``ray.train.torch.get_device()`` maps the assigned id).

    Returns:
        ``cuda:<n>`` or ``cpu``. A GPU assigned to a process whose torch cannot use it (a CPU build, no driver, a
        logical resource) gives ``cpu`` with one warning per process.
    """
    import ray

    if not ray.is_initialized():  # not a Ray worker (ray.get_gpu_ids would start Ray)
        return torch.device("cpu")
    gpu_ids = ray.get_gpu_ids()
    if not gpu_ids:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        _warn_once(
            "no-cuda",
            f"Ray assigned GPU {gpu_ids} to this process, but torch {torch.__version__} cannot use CUDA here: "
            "running on CPU",
        )
        return torch.device("cpu")
    if train:
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cuda", 0)  # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPU(s)


def autocast(device: torch.device, enabled: bool) -> Any:
    """A bfloat16 autocast context on ``device`` when ``enabled`` (``train.amp``), else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
