"""What the main job's stream loop reads: a *feed* of windows to serve, then reveal.

A feed hides where rows come from and how they become model inputs, so the loop in
``jobs/continuous.py`` is the same for every stream:

* :class:`TableFeed`: a user's table or landing directory described by ``data.source``
  (:mod:`ddn_ray.tables`); requests carry named records, and the preprocessing state
  (:class:`ddn_ray.features.Featurizer`) is fitted on each window only when its labels are revealed.
* :class:`ddn_ray.usecases.builtin.ScenarioFeed`: the built-in streams (:func:`ddn_ray.usecase.feed`);
  requests carry the stream's feature rows (or raw images / texts), which need no fitted state.

Per window the loop calls :meth:`Feed.request` (what the traffic client sends, before any label
exists in the system), then :meth:`Feed.reveal` (the labels arrive: the window as model inputs and
targets, with the preprocessing state and output width the trainer must use), then
:meth:`Feed.static_inputs` (the same rows as the frozen static baseline sees them). The report asks it
for :meth:`Feed.no_change` (a regression's no-change baseline) and :meth:`Feed.report_extras`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ddn_ray import config, sources, stream, tables
from ddn_ray.features import Featurizer

__all__ = ["Feed", "Reveal", "TableFeed", "source_stem"]


@dataclass(frozen=True)
class Reveal:
    """A window whose labels arrived.

    Attributes:
        window: ``(n, num_features)`` float32 inputs and ``(n,)`` int64 class ids (``(n, k)`` float32 targets).
        preprocessing: the featurizer state the inputs were made with (``None``: the stream needs none).
        num_classes: the output width the labels need (``None``: fixed).
    """

    window: stream.Window
    preprocessing: dict[str, Any] | None = None
    num_classes: int | None = None


class Feed(Protocol):
    """The stream as the main job sees it (see the module doc)."""

    feature_names: list[str]
    num_classes: int
    inputs: dict[str, Any]
    quarantine: stream.Quarantine
    route: str
    answer_key: str | None

    def start(self, *, next_offset: int, preprocessing: dict[str, Any] | None) -> None: ...
    def initial_preprocessing(self) -> dict[str, Any] | None: ...
    def total_windows(self) -> int | None: ...
    def windows(self) -> Iterator[Any]: ...
    def request(self, window: Any) -> tuple[np.ndarray, Any]: ...
    def body(self, offsets: np.ndarray, rows: Any) -> dict[str, Any]: ...
    def reveal(self, window: Any) -> Reveal: ...
    def snapshot_static(self, preprocessing: dict[str, Any] | None) -> None: ...
    def static_inputs(self, window: Any, revealed: Reveal) -> np.ndarray: ...
    def ids(self, window: Any) -> list[str | None] | None: ...
    def phase(self, offsets: np.ndarray) -> np.ndarray: ...
    def no_change(self, labels: np.ndarray, last_revealed: np.ndarray) -> np.ndarray: ...
    def report_extras(self, rows: dict[str, np.ndarray], static_windows: int) -> dict[str, Any]: ...
    def summary(self) -> dict[str, Any]: ...


def source_stem(source: config.TableSourceConfig | config.LandingDirConfig) -> str:
    """A short name for a user's table or landing dir (its file or directory stem), for run names."""
    where = source.uri if source.kind == "table" else source.path
    return Path(where.rstrip("/").split("://")[-1]).stem.replace("*", "") or "table"


class TableFeed:
    """A user's table or landing directory (``data.source``) as a feed of named records.

    Args:
        job: the job config; ``job.data.source`` must be set.

    Raises:
        ddn_ray.errors.DataError: the table cannot be read, a file lacks a column or holds the wrong type
            in a numeric one (the file and the column named); checked here, before anything starts.
    """

    route = "/predict"

    def __init__(self, *, job: config.JobConfig) -> None:
        self.job = job
        self._schema = tables.read_schema(job.data)  # read once (a CSV's is inferred from its first block)
        self.featurizer = tables.featurizer_for(job.data, job.model.task, schema=self._schema)
        self.feature_names = self.featurizer.input_names
        self.num_classes = self.featurizer.num_classes
        self.inputs = {"kind": "records"}
        self.answer_key = "outputs" if job.model.task == "regression" else "class_ids"
        self._stream: tables.TabularStream | None = None
        self._static: Featurizer | None = None
        self._first_offset = 0
        # Stop at start, before Ray Train or Serve start, on a file that does not parse or lacks a column.
        self._source = tables.source_for(
            job.data, self.featurizer, window_size=job.stream.window_size, schema=self._schema
        )

    @property
    def quarantine(self) -> stream.Quarantine:
        return self._stream.quarantine if self._stream is not None else stream.Quarantine()

    def run_stem(self) -> str:
        return source_stem(self._source_config())

    def _source_config(self) -> config.TableSourceConfig | config.LandingDirConfig:
        if self.job.data.source is None:
            raise ValueError("a table feed needs data.source")
        return self.job.data.source

    def _opened(self) -> tables.TabularStream:
        if self._stream is None:
            raise RuntimeError("call start() first")
        return self._stream

    def initial_preprocessing(self) -> dict[str, Any] | None:
        return self.featurizer.state_dict()

    def start(self, *, next_offset: int, preprocessing: dict[str, Any] | None) -> None:
        """Open the source at ``next_offset``; a resumed run continues the checkpoint's featurizer state."""
        if preprocessing is not None:
            self.featurizer.load_state_dict(preprocessing)
        self._first_offset = next_offset
        source = tables.source_for(
            self.job.data,
            self.featurizer,
            window_size=self.job.stream.window_size,
            start_offset=next_offset,
            schema=self._schema,
        )
        self._source = source
        self._stream = tables.TabularStream(source=source, featurizer=self.featurizer, id_column=self.job.data.id)

    def total_windows(self) -> int | None:
        if not isinstance(self._source, sources.FileSource):
            return None
        rows = self._source.count_rows()
        if self.job.data.max_rows is not None:
            rows = min(rows, self.job.data.max_rows)
        return max(0, -(-(rows - self._first_offset) // self.job.stream.window_size))

    def windows(self) -> Iterator[sources.RecordWindow]:
        return self._opened().windows()

    def request(self, window: sources.RecordWindow) -> tuple[np.ndarray, list[list[Any]]]:
        return window.offsets, self._opened().split(window)

    def body(self, offsets: np.ndarray, rows: list[list[Any]]) -> dict[str, Any]:
        """Named columns in pandas' split orientation: the names once, then the rows' values (a replica reads
        them as it reads ``records``; half the bytes, benchmarks/byo_table_cost.py)."""
        return {"columns": self._opened().record_columns, "data": rows}

    def reveal(self, window: sources.RecordWindow) -> Reveal:
        w = self._opened().reveal(window)
        return Reveal(w, self.featurizer.state_dict(), self.featurizer.num_classes)

    def snapshot_static(self, preprocessing: dict[str, Any] | None) -> None:
        """Freeze the static baseline's preprocessing: the state of the version it copies."""
        self._static = Featurizer.from_state(
            preprocessing if preprocessing is not None else self.featurizer.state_dict()
        )

    def static_inputs(self, window: sources.RecordWindow, revealed: Reveal) -> np.ndarray:
        assert self._static is not None, "call snapshot_static() first"
        return self._static.transform(window.rows if window.rows is not None else window.table)

    def ids(self, window: sources.RecordWindow) -> list[str | None] | None:
        return self._opened().ids(window)

    def phase(self, offsets: np.ndarray) -> np.ndarray:
        return np.zeros(len(offsets), np.int64)  # a user's table declares no phases

    def no_change(self, labels: np.ndarray, last_revealed: np.ndarray) -> np.ndarray:
        """A user's target: the last one revealed before the window was served."""
        return last_revealed.astype(np.float64)

    def report_extras(self, rows: dict[str, np.ndarray], static_windows: int) -> dict[str, Any]:
        return {}

    def summary(self) -> dict[str, Any]:
        f = self.featurizer
        files = getattr(self._source, "files_read", None)
        return {
            "source": self._source_config().model_dump(mode="json"),
            "task": f.task,
            "classes": f.classes if f.task == "classification" else None,
            "inputs": f.width,
            "numeric": f.numeric,
            "categorical": f.categorical,
            "vocabulary_sizes": {c: len(v) for c, v in f.vocabularies.items()},
            "unknown_values": f.unknown_values,
            "rows_fitted": f.rows_seen,
            **({"files_read": len(files)} if files is not None else {}),
        }
