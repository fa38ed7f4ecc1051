"""The window hand-off to a Train worker: one Arrow block, by value when small and in the object store when
large, also viewable as a Ray Dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.parametrize(("regression", "rows"), [(False, 50), (True, 50), (False, 5000)])
def test_a_window_block_reaches_a_worker_as_the_same_tensors_and_reads_as_a_dataset(
    ray_cluster, regression, rows
) -> None:
    from ddn_ray import stream
    from ddn_ray.handoff import INLINE_BLOCK_BYTES, WindowItem
    from ddn_ray.train import _window_tensors

    rng = np.random.default_rng(0)
    x = rng.random((rows, 6), dtype=np.float32)
    y = rng.random((rows, 2), dtype=np.float32) if regression else rng.integers(0, 3, rows)
    table = stream.to_arrow(x, y)
    item = WindowItem.put(index=3, start=150, end=150 + rows, rows=table, num_classes=3)
    # 50 rows (2 KB) travel by value; 5,000 (160 KB) once in the object store
    assert isinstance(item.block, bytes) == (table.nbytes <= INLINE_BLOCK_BYTES) == (rows == 50)

    @ray_cluster.remote(num_cpus=0)
    def on_a_worker(item: WindowItem) -> tuple[np.ndarray, np.ndarray, str]:  # another process, as a Train worker
        xt, yt = _window_tensors(item, torch.float32 if regression else torch.int64)
        return xt.numpy(), yt.numpy(), str(yt.dtype)

    xt, yt, dtype = ray_cluster.get(on_a_worker.remote(item))
    assert np.array_equal(xt, x) and np.array_equal(yt, y)
    assert dtype == ("torch.float32" if regression else "torch.int64")
    taken = item.dataset.take_all()  # the same rows as a Ray Dataset
    assert len(taken) == rows and np.allclose(taken[7]["features"], x[7])
