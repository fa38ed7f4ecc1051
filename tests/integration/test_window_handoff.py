"""The window hand-off to a Train worker: one Arrow block in the object store, also viewable as a Ray Dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("regression", [False, True])
def test_a_window_block_reaches_a_worker_as_the_same_tensors_and_reads_as_a_dataset(ray_cluster, regression) -> None:
    from ddn_ray import stream
    from ddn_ray.stream import WindowItem
    from ddn_ray.train import _window_tensors

    rng = np.random.default_rng(0)
    x = rng.random((50, 6), dtype=np.float32)
    y = rng.random((50, 2), dtype=np.float32) if regression else rng.integers(0, 3, 50)
    item = WindowItem.put(index=3, start=150, end=200, rows=stream.to_arrow(x, y), num_classes=3)

    @ray_cluster.remote(num_cpus=0)
    def on_a_worker(item: WindowItem) -> tuple[np.ndarray, np.ndarray, str]:  # another process, as a Train worker
        xt, yt = _window_tensors(item, torch.float32 if regression else torch.int64)
        return xt.numpy(), yt.numpy(), str(yt.dtype)

    xt, yt, dtype = ray_cluster.get(on_a_worker.remote(item))
    assert np.array_equal(xt, x) and np.array_equal(yt, y)
    assert dtype == ("torch.float32" if regression else "torch.int64")
    rows = item.dataset.take_all()  # the same block as a Ray Dataset
    assert len(rows) == 50 and np.allclose(rows[7]["features"], x[7])
