"""Served answers on durable storage, as the run goes: what a resumed run's report joins.

Each attempt of a run (one driver's life: ``<time>-<pid>``, :func:`ddn_ray.versions.attempt_name`) writes,
under ``<storage_path>/<run_name>/``:

- ``served/<attempt>/w00000042.parquet``: one file per served window, written once its labels are revealed:
  ``offset``, ``window``, ``label``, ``prediction``, ``version``, ``static_prediction`` (and ``id``), the
  report's columns (:func:`ddn_ray.report.window_rows`); the number of rows sent to training in its metadata;
- ``static/``: the static baseline's weights and preprocessing, frozen once per run (the first attempt's).

A resumed attempt reads the earlier attempts' rows before its resume offset (:meth:`ServedStore.earlier`),
each offset once (the latest attempt that answered it), with the offset each answering version was trained
up to (from that attempt's controller journal), so its report covers every row of the stream once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ddn_ray.versions import VersionStore, open_uri, read_npz, write_npz

__all__ = ["Prior", "ServedStore", "StaticBaseline"]

SERVED, STATIC, CONTROLLER = "served", "static", "controller"


def _column(a: np.ndarray) -> pa.Array:
    if a.ndim == 2:  # a regression's (n, k) targets or outputs
        return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])
    return pa.array(a)


def _array(col: pa.ChunkedArray) -> np.ndarray:
    col = col.combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
    values = col.to_numpy(zero_copy_only=False)
    return values.astype(str) if pa.types.is_string(col.type) else values


@dataclass
class Prior:
    """What earlier attempts of a run served before the current attempt's resume offset.

    Attributes:
        rows: the report's columns (``offset``, ``window``, ``label``, ...) plus ``trained_end``: ``(n,)`` int64,
            the offset the answering version was trained up to; sorted by offset, each offset once.
        rows_trained: rows of those windows that were sent to training.
        attempts: per earlier attempt, ``{"attempt", "rows", "first_offset", "end_offset"}`` of the rows kept.
    """

    rows: dict[str, np.ndarray]
    rows_trained: int
    attempts: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class StaticBaseline:
    """The static model a run froze: its ``state_dict`` (numpy), its featurizer state, the window it froze at."""

    weights: dict[str, np.ndarray]
    preprocessing: dict[str, Any] | None
    window: int


class ServedStore:
    """One attempt's durable served rows, and the earlier attempts' (see the module docstring).

    Args:
        run_uri: the run's directory: ``<storage_path>/<run_name>`` (a local path or a pyarrow URI).
        attempt: this attempt's name (:func:`ddn_ray.versions.attempt_name`); its controller journals under
            ``<run_uri>/controller/<attempt>``. ``None``: read the run's attempts only (``ddn-ray report``).
    """

    def __init__(self, *, run_uri: str, attempt: str | None) -> None:
        self.fs, self.root = open_uri(run_uri)
        self.run_uri, self.attempt = run_uri, attempt
        if attempt is not None:
            self.fs.create_dir(f"{self.root}/{SERVED}/{attempt}", recursive=True)

    def write(self, rows: dict[str, np.ndarray], *, window: int, rows_trained: int) -> None:
        """Append one served window's rows (a temporary file moved into place: whole or absent).

        Raises:
            ValueError: the store was opened without an attempt (read only).
        """
        if self.attempt is None:
            raise ValueError("this ServedStore reads a run's attempts; open it with attempt= to write")
        table = pa.table({k: _column(v) for k, v in rows.items()})
        table = table.replace_schema_metadata({"rows_trained": str(rows_trained)})
        name = f"{self.root}/{SERVED}/{self.attempt}/w{window:08d}.parquet"
        tmp = f"{self.root}/{SERVED}/{self.attempt}/.w{window:08d}.parquet.tmp"  # hidden from dataset readers
        pq.write_table(table, tmp, filesystem=self.fs)
        self.fs.move(tmp, name)

    def write_static(self, baseline: StaticBaseline) -> None:
        """Keep the run's static baseline (written by the attempt that froze it)."""
        self.fs.create_dir(f"{self.root}/{STATIC}", recursive=True)
        write_npz(self.fs, f"{self.root}/{STATIC}/weights.npz", baseline.weights)
        meta = json.dumps({"window": baseline.window, "preprocessing": baseline.preprocessing}).encode()
        with self.fs.open_output_stream(f"{self.root}/{STATIC}/meta.json.tmp") as f:
            f.write(meta)
        self.fs.move(f"{self.root}/{STATIC}/meta.json.tmp", f"{self.root}/{STATIC}/meta.json")

    def read_static(self) -> StaticBaseline | None:
        """The run's static baseline, or ``None`` if no attempt froze one yet."""
        try:
            with self.fs.open_input_stream(f"{self.root}/{STATIC}/meta.json") as f:
                meta = json.loads(f.read().decode())
        except FileNotFoundError:
            return None
        return StaticBaseline(
            weights=read_npz(self.fs, f"{self.root}/{STATIC}/weights.npz"),
            preprocessing=meta["preprocessing"],
            window=int(meta["window"]),
        )

    def _attempts(self) -> list[str]:
        sel = pafs.FileSelector(f"{self.root}/{SERVED}", allow_not_found=True)
        names = [i.base_name for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.Directory]
        return sorted(n for n in names if n != self.attempt)  # <time>-<pid>: in the order they ran

    def _trained_end(self, attempt: str) -> dict[int, int]:
        """Version -> the offset it was trained up to, from the attempt's controller journal."""
        store = VersionStore(uri=f"{self.root}/{CONTROLLER}/{attempt}", filesystem=self.fs, read_only=True)
        try:
            return {
                int(e["version"]): int(e["meta"].get("trained_end_offset", 0))
                for e in store.events()
                if e["op"] == "publish"
            }
        finally:
            store.close()

    def earlier(self, *, before_offset: int) -> Prior | None:
        """The earlier attempts' rows with offsets below ``before_offset`` (see :class:`Prior`), or ``None``
        when no earlier attempt served a row there."""
        tables, order, trained = [], [], {}
        names = self._attempts()  # listed once: the indices below are into this list
        for k, attempt in enumerate(names):
            sel = pafs.FileSelector(f"{self.root}/{SERVED}/{attempt}")
            files = sorted(i.path for i in self.fs.get_file_info(sel) if i.path.endswith(".parquet"))
            if not files:
                continue
            ends = self._trained_end(attempt)
            for path in files:
                t = pq.read_table(path, filesystem=self.fs)
                meta = t.schema.metadata or {}
                t = t.replace_schema_metadata(None)
                versions = t.column("version").to_numpy()
                end = np.array([ends.get(int(v), 0) if v >= 0 else 0 for v in versions], np.int64)
                tables.append(t.append_column("trained_end", pa.array(end)))
                order.append(np.full(len(t), k))
                trained[(k, int(t.column("window")[0].as_py()))] = int(meta.get(b"rows_trained", b"0"))
        if not tables:
            return None
        table = pa.concat_tables(tables)
        offsets, which = table.column("offset").to_numpy(), np.concatenate(order)
        # each offset once: the latest attempt that answered it; only those before the resume
        idx = np.lexsort((-which, offsets))
        first = np.ones(len(idx), bool)
        first[1:] = offsets[idx][1:] != offsets[idx][:-1]
        keep = idx[first & (offsets[idx] < before_offset)]
        if not len(keep):
            return None
        kept = table.take(pa.array(keep))
        rows = {name: _array(kept.column(name)) for name in kept.column_names}
        windows, attempts_kept = rows["window"], which[keep]
        attempts = [
            {
                "attempt": names[k],
                "rows": int((attempts_kept == k).sum()),
                "first_offset": int(rows["offset"][attempts_kept == k].min()),
                "end_offset": int(rows["offset"][attempts_kept == k].max()) + 1,
            }
            for k in sorted(set(attempts_kept.tolist()))
        ]
        rows_trained = sum(n for (k, w), n in trained.items() if w in set(windows[attempts_kept == k].tolist()))
        return Prior(rows=rows, rows_trained=rows_trained, attempts=attempts)
