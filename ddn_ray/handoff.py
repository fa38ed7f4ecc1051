"""The window hand-off from the driver to the Train workers: one :class:`WindowItem` per rank and window.

A window's labelled rows are split into equal shards (:func:`shard_tables`), one per rank, as Arrow tables
(:func:`ddn_ray.stream.to_arrow`), and each shard travels in a :class:`WindowItem` through that rank's queue
(:class:`ddn_ray.train.WindowSender`). This module imports no torch: the queue actors unpickle every item.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ddn_ray.stream import Window, to_arrow

__all__ = ["INLINE_BLOCK_BYTES", "WindowItem", "shard_tables"]

#: A shard up to this many bytes travels by value in its item (Ray's ``max_direct_call_object_size``, under which
#: it inlines an object in an RPC); a larger one is put in the object store once.
INLINE_BLOCK_BYTES = 100 * 1024


def shard_tables(window: Window, world_size: int) -> list[pa.Table]:
    """Split a window's rows into ``world_size`` equal Arrow shards (rank r gets rows r::world_size).

    Equal shards keep DDP's collectives matched; up to ``world_size - 1`` trailing
    rows are left out of training (they were still served and scored).
    """
    n = (len(window) // world_size) * world_size
    x, y = window.features[:n], window.labels[:n]
    return [to_arrow(x[r::world_size], y[r::world_size]) for r in range(world_size)]


@dataclass(frozen=True)
class WindowItem:
    """One window handed to one worker: its shard of rows, one Arrow block.

    A small block (up to :data:`INLINE_BLOCK_BYTES`: a 50-row window of Elec2 is 2 KB) travels by value, as
    the bytes of an Arrow IPC stream, which the queue actor passes on without importing pyarrow; a larger one
    is put in Ray's object store, and the item carries its reference. By value, a W=50 window reached the
    worker 2-3 ms sooner: no ``ray.put`` on the driver, no lookup of the object's owner on the worker
    (``benchmarks/job_vs_learner.py``).

    :meth:`rows` reads the block; :attr:`dataset` is the Ray Dataset of the same rows, for a train loop written
    against Ray Data (whose bookkeeping around a 50-row window, ``from_arrow`` and then ``iter_torch_batches`` or
    ``to_arrow_refs``, cost 11-25 ms a window against ~1 ms for :meth:`rows`).

    Attributes:
        index: window number in the stream, from 0.
        start: offset of the window's first row (inclusive).
        end: offset one past its last row (exclusive).
        block: this rank's rows, columns ``features`` (fixed-size list of float32) and ``label`` (int64, or a
            fixed-size list of float32 targets) (:func:`ddn_ray.stream.to_arrow`): Arrow IPC ``bytes``, or an
            ``ObjectRef[pyarrow.Table]`` the driver put and owns (either way, a restarted worker group can be
            sent the item again).
        preprocessing: the featurizer state these rows were featurized with (a user's table,
            :meth:`ddn_ray.features.Featurizer.state_dict`); it travels with the version trained on them.
            ``None`` for built-in tables.
        num_classes: the output width the rows' labels need (it grows with ``data.allow_new_classes``).
        generation: the trainer generation it was sent to (:class:`ddn_ray.train.WindowSender`): a restarted
            worker group skips what was queued for the one before it, and gets the windows since its checkpoint
            again.
    """

    index: int
    start: int
    end: int
    block: Any
    preprocessing: dict[str, Any] | None = None
    num_classes: int | None = None
    generation: int = 0

    @classmethod
    def put(
        cls,
        *,
        index: int,
        start: int,
        end: int,
        rows: pa.Table,
        preprocessing: dict[str, Any] | None = None,
        num_classes: int | None = None,
    ) -> WindowItem:
        """One rank's ``rows`` (:func:`ddn_ray.stream.to_arrow`): by value up to :data:`INLINE_BLOCK_BYTES`,
        else put in the object store."""
        if rows.nbytes <= INLINE_BLOCK_BYTES:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, rows.schema) as writer:
                writer.write_table(rows)
            block: Any = sink.getvalue().to_pybytes()
        else:
            import ray

            block = ray.put(rows)
        return cls(index, start, end, block, preprocessing, num_classes)

    def rows(self) -> pa.Table:
        """The block's rows (from the object store when it is a reference)."""
        if isinstance(self.block, bytes):
            return pa.ipc.open_stream(self.block).read_all()
        import ray

        table: pa.Table = ray.get(self.block)
        return table

    @property
    def dataset(self) -> Any:
        """The rows as a ``ray.data.Dataset``: over the same object-store block, or made from the rows."""
        import ray

        if isinstance(self.block, bytes):
            return ray.data.from_arrow(self.rows())
        return ray.data.from_arrow_refs([self.block])
