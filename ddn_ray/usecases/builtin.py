"""The built-in use cases (:class:`ddn_ray.usecase.UseCase`) and the feed of their streams.

* :data:`ELEC2`: electricity prices, rows of numbers (``/predict``).
* :data:`FASHION_MNIST`: images; the traffic client may send PNG files (``/predict_images``).
* :data:`BBC_NEWS`: news articles; the client may send raw texts (``/predict_text``).
* :data:`CARTPOLE`, :data:`PENDULUM`: forward dynamics of the gymnasium environments; no change is "the next state is this one",
  and the ``worn_actuator`` scenario adds the fault alarm (:func:`fault_section`).
* :data:`NAB`: one NAB series; the report adds its NAB scores (:func:`anomaly_section`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import numpy as np

from ddn_ray import config, drift, stream
from ddn_ray.client import instances_body
from ddn_ray.feeds import Reveal
from ddn_ray.usecase import BodyFn, Options, Scenario, UseCase
from ddn_ray.usecases import anomaly, images, nab, scenarios

__all__ = [
    "BBC_NEWS",
    "CARTPOLE",
    "ELEC2",
    "FASHION_MNIST",
    "NAB",
    "PENDULUM",
    "BuiltinUseCase",
    "ScenarioFeed",
    "anomaly_section",
    "fault_section",
]


class BuiltinUseCase:
    """A use case whose stream is :func:`ddn_ray.usecases.scenarios.load`; no raw-input client, no change
    is a zero target (a change from the last value), no extra report section.

    Args:
        task: the ``model.task`` its stream needs.
        scenarios: the ``data.scenario`` values :func:`~ddn_ray.usecases.scenarios.load` has for it.
        options: the model of its ``data.options`` (:data:`ddn_ray.usecases.scenarios.OPTIONS`).
    """

    def __init__(
        self,
        *,
        task: Literal["classification", "regression"] = "classification",
        scenarios: tuple[str, ...] = ("none",),
        options: type[Options] = Options,
    ) -> None:
        self.task, self.scenarios, self.options = task, scenarios, options

    def scenario(self, data: config.DataConfig) -> Scenario:
        return scenarios.load(data, self.options.model_validate(data.options))

    def client_route(self, scenario: Scenario, job: config.JobConfig) -> tuple[str, BodyFn] | None:
        return None

    def no_change(self, scenario: Scenario, labels: np.ndarray) -> np.ndarray:
        return np.zeros(labels.shape)

    def report_extras(
        self, *, job: config.JobConfig, scenario: Scenario, rows: dict[str, np.ndarray], static_windows: int
    ) -> dict[str, Any]:
        return {}


class _Images(BuiltinUseCase):
    def client_route(self, scenario: Scenario, job: config.JobConfig) -> tuple[str, BodyFn] | None:
        shape = scenario.inputs["shape"]
        return "/predict_images", lambda offsets, rows: {"png": images.encode_png(rows, shape)}


class _Texts(BuiltinUseCase):
    def client_route(self, scenario: Scenario, job: config.JobConfig) -> tuple[str, BodyFn] | None:
        texts = scenario.texts
        assert texts is not None
        return "/predict_text", lambda offsets, rows: {"texts": [texts[i] for i in offsets]}


class _Dynamics(BuiltinUseCase):
    def no_change(self, scenario: Scenario, labels: np.ndarray) -> np.ndarray:
        spec = scenario.inputs  # next state = state: a standardised change of -mean / std
        return np.broadcast_to(-np.array(spec["y_mean"]) / np.array(spec["y_std"]), labels.shape).copy()

    def report_extras(
        self, *, job: config.JobConfig, scenario: Scenario, rows: dict[str, np.ndarray], static_windows: int
    ) -> dict[str, Any]:
        return {"fault": fault_section(rows, static_windows)} if job.data.scenario == "worn_actuator" else {}


class _Series(BuiltinUseCase):
    def report_extras(
        self, *, job: config.JobConfig, scenario: Scenario, rows: dict[str, np.ndarray], static_windows: int
    ) -> dict[str, Any]:
        return {"anomaly": anomaly_section(job.data, rows, scenario)}


ELEC2: UseCase = BuiltinUseCase(options=scenarios.OPTIONS["elec2"])
FASHION_MNIST: UseCase = _Images(
    scenarios=("none", "rotation", "new_classes"), options=scenarios.OPTIONS["fashion_mnist"]
)
BBC_NEWS: UseCase = _Texts(
    scenarios=("none", "topic_incremental", "topic_shift"), options=scenarios.OPTIONS["bbc_news"]
)
CARTPOLE: UseCase = _Dynamics(
    task="regression", scenarios=("none", "physics_drift", "worn_actuator"), options=scenarios.OPTIONS["cartpole"]
)
PENDULUM: UseCase = _Dynamics(
    task="regression", scenarios=("none", "physics_drift"), options=scenarios.OPTIONS["pendulum"]
)
NAB: UseCase = _Series(task="regression", options=scenarios.OPTIONS["nab"])


class ScenarioFeed:
    """A built-in stream (``data.name``) as a :class:`ddn_ray.feeds.Feed`: rows replayed from a shipped data
    set, or a landing directory of ``features`` / ``label`` parquet files (``stream.source: landing_dir``).

    Args:
        job: the job config.
        usecase: the use case of ``job.data.name`` (:func:`ddn_ray.usecase.get`).

    Raises:
        ddn_ray.errors.DataError: the data set is missing or malformed.
    """

    def __init__(self, *, job: config.JobConfig, usecase: UseCase) -> None:
        self.job = job
        self.usecase = usecase
        self.scenario = usecase.scenario(job.data)
        self.table = self.scenario.table
        self.lag = job.stream.last_label_feature  # one more input column: the last revealed label
        self.feature_names = stream.input_names(self.table.feature_names, self.lag)
        self.num_classes = self.table.num_classes
        self.inputs = self.scenario.inputs
        self.answer_key = None
        self.route, self._body = self._route()
        self._source: Any = None

    def _route(self) -> tuple[str, BodyFn]:
        """The use case's raw inputs (PNG images, texts) when it has them, ``serve.raw_inputs`` is on and no
        label is fed back as an input; else feature rows to ``/predict`` (also for dynamics and series models:
        the stream's rows are scaled, ``/predict`` answers in those units)."""
        route = (
            None if not self.job.serve.raw_inputs or self.lag else self.usecase.client_route(self.scenario, self.job)
        )
        return route or ("/predict", instances_body)

    @property
    def quarantine(self) -> stream.Quarantine:
        return self._source.quarantine if self._source is not None else stream.Quarantine()

    def run_stem(self) -> str:
        scenario = "" if self.job.data.scenario == "none" else f"-{self.job.data.scenario}"
        name = self.job.data.name or ""  # a user's "package.module:ATTRIBUTE": its attribute, as a file name
        return f"{name.rpartition(':')[2].lower()}{scenario}"

    def initial_preprocessing(self) -> dict[str, Any] | None:
        return None

    def start(self, *, next_offset: int, preprocessing: dict[str, Any] | None) -> None:
        s = self.job.stream
        if s.source == "replay":
            self._source = stream.ReplaySource(self.table, s.window_size, next_offset)
        else:
            assert s.landing_dir is not None, "the config requires stream.landing_dir for a landing source"
            self._source = stream.LandingDirSource(
                s.landing_dir, self.num_classes, s.window_size, next_offset, s.poll_interval_s, s.idle_timeout_s
            )
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

    def no_change(self, labels: np.ndarray, last_revealed: np.ndarray) -> np.ndarray:
        return self.usecase.no_change(self.scenario, labels)

    def report_extras(self, rows: dict[str, np.ndarray], static_windows: int) -> dict[str, Any]:
        return self.usecase.report_extras(
            job=self.job, scenario=self.scenario, rows=rows, static_windows=static_windows
        )

    def summary(self) -> dict[str, Any]:
        return {"name": self.job.data.name, "scenario": self.job.data.scenario}


def fault_section(rows: dict[str, np.ndarray], static_windows: int, threshold: float = 400.0) -> dict[str, Any]:
    """The worn-actuator alarm: Page-Hinkley on the static (healthy, frozen) model's residuals
    (:func:`ddn_ray.drift.residual_alarms`), its delay after the fault's onset and its false alarms.

    The reference scale is the first half of the healthy rows the static model did not train on.
    """
    ok = (rows["window"] >= static_windows) & np.isfinite(rows["static_prediction"]).all(axis=1)
    se = ((rows["static_prediction"][ok] - rows["label"][ok]) ** 2).mean(axis=1)
    offsets, phase = rows["offset"][ok], rows["phase"][ok]
    healthy = int((phase == 0).sum())
    if healthy < 4:
        return {"threshold": threshold, "error": "too few healthy rows after the static model's windows"}
    alarms = [int(offsets[i]) for i in drift.residual_alarms(se, slice(0, healthy // 2), threshold)]
    onset = int(offsets[healthy]) if healthy < len(offsets) else None
    after = [a for a in alarms if onset is not None and a >= onset]
    return {
        "detector": "page_hinkley on log squared residuals of the static model",
        "threshold": threshold,
        "onset_offset": onset,
        "first_alarm_offset": after[0] if after else None,
        "delay_rows": after[0] - onset if after and onset is not None else None,
        "false_alarms_before_onset": sum(a < (onset if onset is not None else 1 << 62) for a in alarms),
        "alarms": alarms[:50],
    }


def anomaly_section(data: config.DataConfig, rows: dict[str, np.ndarray], scn: Scenario) -> dict[str, Any]:
    """NAB scores of this series for the served and the static forecaster.

    Each point's error is the absolute difference between its served forecast (made before the
    point's window was learned) and the point. The job's detector (:class:`ddn_ray.usecases.anomaly.Detector`)
    turns the errors into anomaly scores, which are scored with the NAB rules, with the
    threshold swept on this file alone. Every point is scored, including the static model's
    training windows: NAB's probation covers them.
    """
    lags, points = scn.inputs["lags"], scn.inputs["lags"] + len(scn.table)
    name = scn.inputs["series"]
    series = nab.load_corpus(data.path, [name])[name]
    series = nab.Series(
        series.name,
        series.timestamps[:points],
        series.values[:points],
        tuple(w for w in series.windows if w[1] < points),
    )
    profiles = nab.load_profiles(data.path)
    detector, probation = anomaly.Detector(), nab.probation_length(points)
    out: dict[str, Any] = {
        "series": name,
        "points": points,
        "windows": len(series.windows),
        "period": scn.inputs["period"],
        "alarm_level": detector.alarm_level,
    }
    for name, pred in (("dynamic", rows["prediction"]), ("static", rows["static_prediction"])):
        err = np.zeros(points)
        at = rows["offset"] + lags
        err[at] = np.nan_to_num(np.abs(pred[:, 0] - rows["label"][:, 0]), nan=0.0)
        if name == "static":  # before it was frozen the static model is the served one
            early = ~np.isfinite(pred[:, 0])
            err[at[early]] = np.nan_to_num(np.abs(rows["prediction"][early, 0] - rows["label"][early, 0]), nan=0.0)
        scores = detector.scores(err, series.values, lags)
        out[name] = {
            p: round(float(nab.score_corpus({series.name: scores}, {series.name: series}, prof)["score"]), 2)
            for p, prof in profiles.items()
        }
        out[name]["alarms"] = int((scores[probation:] >= detector.alarm_level).sum())
    return out
