"""What the main job's stream loop reads: a *feed* of windows to serve, then reveal.

A feed hides where rows come from and how they become model inputs, so the loop in
``jobs/continuous.py`` is the same for every stream:

* :class:`TableFeed`: a user's table or landing directory described by ``data.source``
  (:mod:`ddn_ray.tables`); requests carry named records, and the preprocessing state
  (:class:`ddn_ray.features.Featurizer`) is fitted on each window only when its labels are revealed.
* :class:`ScenarioFeed`: the built-in streams (:mod:`ddn_ray.scenarios`); requests carry the
  stream's feature rows (or raw images / texts), which need no fitted state.

Per window the loop calls :meth:`Feed.request` (what the traffic client sends, before any label
exists in the system), then :meth:`Feed.reveal` (the labels arrive: the window as model inputs and
targets, with the preprocessing state and output width the trainer must use), then
:meth:`Feed.static_inputs` (the same rows as the frozen static baseline sees them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ddn_ray import config, images, scenarios, stream, tables
from ddn_ray.client import instances_body
from ddn_ray.features import Featurizer

__all__ = ["Feed", "Reveal", "ScenarioFeed", "TableFeed", "feed_for"]


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
    def summary(self) -> dict[str, Any]: ...


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
        self.featurizer = tables.featurizer_for(job.data, job.model.task)
        self.feature_names = self.featurizer.input_names
        self.num_classes = self.featurizer.num_classes
        self.inputs = {"kind": "records"}
        self.answer_key = "outputs" if job.model.task == "regression" else "class_ids"
        self._stream: tables.TabularStream | None = None
        self._static: Featurizer | None = None
        self._first_offset = 0
        # Stop at start, before Ray Train or Serve start, on a file that does not parse or lacks a column.
        self._source = tables.source_for(job.data, self.featurizer, window_size=job.stream.window_size)

    @property
    def quarantine(self) -> stream.Quarantine:
        return self._stream.quarantine if self._stream is not None else stream.Quarantine()

    def run_stem(self) -> str:
        src = self.job.data.source
        where = src.uri if src.kind == "table" else src.path
        return Path(where.rstrip("/").split("://")[-1]).stem.replace("*", "") or "table"

    def initial_preprocessing(self) -> dict[str, Any] | None:
        return self.featurizer.state_dict()

    def start(self, *, next_offset: int, preprocessing: dict[str, Any] | None) -> None:
        """Open the source at ``next_offset``; a resumed run continues the checkpoint's featurizer state."""
        if preprocessing is not None:
            self.featurizer.load_state_dict(preprocessing)
        self._first_offset = next_offset
        source = tables.source_for(self.job.data, self.featurizer, window_size=self.job.stream.window_size,
                                   start_offset=next_offset)
        self._source = source
        self._stream = tables.TabularStream(source=source, featurizer=self.featurizer, id_column=self.job.data.id)

    def total_windows(self) -> int | None:
        if not isinstance(self._source, tables.FileSource):
            return None
        rows = self._source.count_rows()
        if self.job.data.max_rows is not None:
            rows = min(rows, self.job.data.max_rows)
        return max(0, -(-(rows - self._first_offset) // self.job.stream.window_size))

    def windows(self) -> Iterator[tables.RecordWindow]:
        assert self._stream is not None, "call start() first"
        return self._stream.windows()

    def request(self, window: tables.RecordWindow) -> tuple[np.ndarray, list[dict[str, Any]]]:
        return window.offsets, self._stream.records(window)

    def body(self, offsets: np.ndarray, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {"records": rows}

    def reveal(self, window: tables.RecordWindow) -> Reveal:
        w = self._stream.reveal(window)
        return Reveal(w, self.featurizer.state_dict(), self.featurizer.num_classes)

    def snapshot_static(self, preprocessing: dict[str, Any] | None) -> None:
        """Freeze the static baseline's preprocessing: the state of the version it copies."""
        self._static = Featurizer.from_state(preprocessing if preprocessing is not None else self.featurizer.state_dict())

    def static_inputs(self, window: tables.RecordWindow, revealed: Reveal) -> np.ndarray:
        assert self._static is not None, "call snapshot_static() first"
        return self._static.transform(window.table)

    def ids(self, window: tables.RecordWindow) -> list[str | None] | None:
        return self._stream.ids(window)

    def phase(self, offsets: np.ndarray) -> np.ndarray:
        return np.zeros(len(offsets), np.int64)  # a user's table declares no phases

    def summary(self) -> dict[str, Any]:
        f = self.featurizer
        files = getattr(self._source, "files_read", None)
        return {"source": self.job.data.source.model_dump(mode="json"), "task": f.task,
                "classes": f.classes if f.task == "classification" else None, "inputs": f.width,
                "numeric": f.numeric, "categorical": f.categorical,
                "vocabulary_sizes": {c: len(v) for c, v in f.vocabularies.items()},
                "unknown_values": f.unknown_values, "rows_fitted": f.rows_seen,
                **({"files_read": len(files)} if files is not None else {})}


class ScenarioFeed:
    """A built-in stream (``data.name``): rows replayed from a shipped data set, or a landing
    directory of ``features`` / ``label`` parquet files (``stream.source: landing_dir``)."""

    def __init__(self, *, job: config.JobConfig) -> None:
        self.job = job
        self.scenario = scenarios.load(job.data)
        self.table = self.scenario.table
        self.lag = job.stream.last_label_feature  # one more input column: the last revealed label
        self.feature_names = stream.input_names(self.table.feature_names, self.lag)
        self.num_classes = self.table.num_classes
        self.inputs = self.scenario.inputs
        self.answer_key = None
        self.route, self._body = self._route()
        self._source: Any = None

    def _route(self) -> tuple[str, Callable[[np.ndarray, Any], dict[str, Any]]]:
        """Raw inputs (PNG images, texts) when the data has them and ``serve.raw_inputs`` is on, else feature
        rows to ``/predict`` (also for dynamics and series models: the stream's rows are scaled, ``/predict``
        answers in those units)."""
        kind = self.inputs["kind"]
        if not self.job.serve.raw_inputs or self.lag or kind not in ("image", "text"):
            return "/predict", instances_body
        if kind == "image":
            shape = self.inputs["shape"]
            return "/predict_images", lambda offsets, rows: {"png": images.encode_png(rows, shape)}
        texts = self.scenario.texts
        return "/predict_text", lambda offsets, rows: {"texts": [texts[i] for i in offsets]}

    @property
    def quarantine(self) -> stream.Quarantine:
        return self._source.quarantine if self._source is not None else stream.Quarantine()

    def run_stem(self) -> str:
        scenario = "" if self.job.data.scenario == "none" else f"-{self.job.data.scenario}"
        return f"{self.job.data.name}{scenario}"

    def initial_preprocessing(self) -> dict[str, Any] | None:
        return None

    def start(self, *, next_offset: int, preprocessing: dict[str, Any] | None) -> None:
        s = self.job.stream
        if s.source == "replay":
            self._source = stream.ReplaySource(self.table, s.window_size, next_offset)
        else:
            self._source = stream.LandingDirSource(s.landing_dir, self.num_classes, s.window_size, next_offset,
                                                   s.poll_interval_s, s.idle_timeout_s)
        self._first_offset = next_offset

    def total_windows(self) -> int | None:
        if self.job.stream.source != "replay":
            return None
        return -(-(len(self.table) - self._first_offset) // self.job.stream.window_size)

    def windows(self) -> Iterator[stream.Window]:
        return stream.iter_windows(self._source, self.lag)

    def request(self, window: stream.Window) -> tuple[np.ndarray, np.ndarray]:
        return window.offsets, window.features

    def body(self, offsets: np.ndarray, rows: Any) -> dict[str, Any]:
        return self._body(offsets, rows)

    def reveal(self, window: stream.Window) -> Reveal:
        return Reveal(window)

    def snapshot_static(self, preprocessing: dict[str, Any] | None) -> None:
        pass

    def static_inputs(self, window: stream.Window, revealed: Reveal) -> np.ndarray:
        return window.features

    def ids(self, window: stream.Window) -> list[str | None] | None:
        return None

    def phase(self, offsets: np.ndarray) -> np.ndarray:
        return self.scenario.phase[offsets]

    def summary(self) -> dict[str, Any]:
        return {"name": self.job.data.name, "scenario": self.job.data.scenario}


def feed_for(job: config.JobConfig) -> TableFeed | ScenarioFeed:
    """The feed ``job.data`` describes: a user's table when ``data.source`` is set, else a built-in stream."""
    return TableFeed(job=job) if job.data.source is not None else ScenarioFeed(job=job)
