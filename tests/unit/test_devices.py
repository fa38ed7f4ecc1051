"""GPU requests fitted to the cluster, the device a process without Ray gets, and mixed precision on the CPU."""

from __future__ import annotations

import pytest
import torch

from ddn_ray import config, devices, models
from ddn_ray.train import make_optimizer, prequential_step


def _job(**sections: dict) -> config.JobConfig:
    return config.load(overrides=sections)


def test_a_cluster_without_gpus_runs_the_job_on_cpu_with_one_warning_per_request() -> None:
    cfg = _job(train={"use_gpu": True}, serve={"num_gpus": 0.5, "num_replicas": 2})
    fitted, notes = devices.fit_to_cluster(cfg, 0.0)
    assert not fitted.train.use_gpu and fitted.serve.num_gpus == 0.0
    assert len(notes) == 2 and "replicas run on CPU" in notes[0] and "Train workers run on CPU" in notes[1]
    assert fitted.train.lr == cfg.train.lr and fitted.serve.num_replicas == 2  # nothing else changes


def test_gpus_go_to_the_replicas_first_then_to_the_workers() -> None:
    cfg = _job(train={"use_gpu": True, "num_workers": 1}, serve={"num_gpus": 0.25, "num_replicas": 2})
    fitted, notes = devices.fit_to_cluster(cfg, 2.0)  # 0.5 for the replicas, 1 for the worker: it fits
    assert fitted.train.use_gpu and fitted.serve.num_gpus == 0.25 and notes == []
    fitted, notes = devices.fit_to_cluster(cfg, 1.0)  # 0.5 left after the replicas: the worker falls back
    assert not fitted.train.use_gpu and fitted.serve.num_gpus == 0.25
    expected = (
        "train.use_gpu needs 1 GPU(s) for 1 Train worker(s); the cluster has 0.5 left after the replicas: "
        "Train workers run on CPU"
    )
    assert notes == [expected]


def test_a_job_that_asks_for_no_gpu_is_left_as_it_is() -> None:
    cfg = _job()
    fitted, notes = devices.fit_to_cluster(cfg, 0.0)
    assert fitted == cfg and notes == []


def test_the_backend_is_gloo_without_cuda() -> None:
    assert devices.torch_backend(False) == "gloo"
    assert devices.torch_backend(True) == ("nccl" if torch.cuda.is_available() else "gloo")


def test_a_process_outside_ray_learns_on_the_cpu() -> None:
    assert devices.assigned_device() == torch.device("cpu")


def test_mixed_precision_runs_the_forward_pass_in_bfloat16_and_keeps_float32_weights() -> None:
    cfg = _job(model={"hidden_sizes": [16]}, train={"lr": 0.01})
    model = models.build(cfg.model, 4, 2, seed=0)
    seen: list[torch.dtype] = []
    model.head.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 1.0).long()
    opt = make_optimizer(cfg.train, model.parameters())
    first = prequential_step(model, opt, x, y, 16, 20, torch.Generator().manual_seed(0), amp=True)
    assert torch.bfloat16 in seen  # the training passes ran under autocast
    assert seen[0] == torch.float32  # the prequential score before learning did not
    assert all(p.dtype == torch.float32 for p in model.parameters())
    after = prequential_step(model, opt, x, y, 16, 1, torch.Generator().manual_seed(1), amp=True)
    assert after.pre_loss < first.pre_loss and after.pre_accuracy > 0.9


@pytest.mark.parametrize("field,value", [("train", {"amp": "sometimes"}), ("serve", {"num_gpus": -1})])
def test_gpu_fields_are_checked(field: str, value: dict) -> None:
    with pytest.raises(config.ConfigError):
        _job(**{field: value})
