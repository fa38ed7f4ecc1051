"""How a use case plugs into the engine: the :class:`UseCase` protocol and the built-in ones by name.

The use cases live in :mod:`ddn_ray.usecases`; the engine modules (stream, features, tables, train,
serve, controller, evaluate, sweep, the main job) import nothing from that package, only this module,
which names its parts as ``"package.module:attribute"`` strings (:data:`BUILT_IN`, :data:`FEED`) and
loads them when asked for, as :data:`ddn_ray.models.BUILDERS` does for model builders. A use case plugs
in at three places:

* **the stream**: :meth:`UseCase.scenario` turns ``data`` (and its ``data.options``, the use case's own
  settings, validated by its :attr:`UseCase.options` model) into the rows the job replays and the input
  spec replicas featurize raw requests with (:class:`Scenario`); the spec
  names the use case's extra Serve routes (``inputs["routes"]``, :mod:`ddn_ray.usecases.routes`);
* **the traffic**: :meth:`UseCase.client_route`, the route and body a traffic client sends raw inputs with;
* **the report**: :meth:`UseCase.no_change` (the no-change baseline of a regression) and
  :meth:`UseCase.report_extras` (sections only this use case has: NAB scores, the fault alarm).

:func:`get` finds a use case by ``data.name``: a built-in one (:data:`BUILT_IN`, loaded only when asked
for), or any ``"package.module:attribute"`` that is a :class:`UseCase`. The config checks ``data.scenario``
and ``model.task`` against it (:func:`check`), so the engine keeps no list of use cases or scenarios.
:func:`feed` is the main job's feed of such a stream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from ddn_ray import registry
from ddn_ray.errors import ConfigError

if TYPE_CHECKING:
    from ddn_ray.config import DataConfig, JobConfig
    from ddn_ray.feeds import Feed
    from ddn_ray.stream import Table

__all__ = ["BUILT_IN", "FEED", "BodyFn", "Options", "Scenario", "UseCase", "check", "feed", "get", "stream_table"]

BodyFn = Callable[[np.ndarray, Any], dict[str, Any]]
"""``(offsets (n,) int64, rows) -> request body`` for a window's rows."""

FEED = "ddn_ray.usecases.builtin:ScenarioFeed"
"""The main job's feed of a built-in stream (:class:`ddn_ray.feeds.Feed`)."""

BUILT_IN: dict[str, str] = {
    "elec2": "ddn_ray.usecases.builtin:ELEC2",
    "fashion_mnist": "ddn_ray.usecases.builtin:FASHION_MNIST",
    "bbc_news": "ddn_ray.usecases.builtin:BBC_NEWS",
    "cartpole": "ddn_ray.usecases.builtin:CARTPOLE",
    "pendulum": "ddn_ray.usecases.builtin:PENDULUM",
    "nab": "ddn_ray.usecases.builtin:NAB",
}


class Options(BaseModel):
    """A use case's own settings, ``data.options`` in a job's YAML (e.g. NAB's ``series`` and ``lags``).

    A use case subclasses it with fields that have defaults; this base has none (a use case without
    settings). Frozen, and a key it does not declare is an error (``data.options.<key>``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")


class Scenario(NamedTuple):
    """A stream and how its raw inputs look.

    Attributes:
        table: the rows in stream order.
        inputs: the input spec Serve replicas featurize raw requests with, e.g.
            ``{"kind": "image", "shape": [1, 28, 28], "routes": ...}`` or ``{"kind": "text", "features":
            "hashing", "n_features": 4096, "routes": ...}``; ``{"kind": "table"}`` for plain rows. ``routes``
            names the :class:`ddn_ray.serve.InputRoutes` of :mod:`ddn_ray.usecases.routes` that serve them.
        phase: ``(num_rows,)`` int64, the scenario phase of each row (0 when there is none).
        class_names: the name of each class id.
        texts: ``text`` inputs: the raw text of each row (what a client sends to Serve).
    """

    table: Table
    inputs: dict[str, Any]
    phase: np.ndarray
    class_names: tuple[str, ...]
    texts: tuple[str, ...] | None = None


@runtime_checkable
class UseCase(Protocol):
    """What a use case adds to the engine (see the module doc).

    Attributes:
        task: ``classification`` or ``regression``: the ``model.task`` its stream needs.
        scenarios: the ``data.scenario`` values it has, ``"none"`` (the data set's own order) first.
        options: the :class:`Options` subclass that ``data.options`` must fit (:class:`Options` itself: none).
    """

    task: Literal["classification", "regression"]
    scenarios: tuple[str, ...]
    options: type[Options]

    def scenario(self, data: DataConfig) -> Scenario:
        """The stream ``data`` describes: its rows in stream order, phases and input spec; its own settings
        are ``self.options.model_validate(data.options)``.

        Raises:
            ddn_ray.errors.DataError: the data set is missing or malformed.
        """
        ...

    def client_route(self, scenario: Scenario, job: JobConfig) -> tuple[str, BodyFn] | None:
        """The route and request body for raw inputs (images, texts) when ``job.serve.raw_inputs`` is on;
        ``None``: the client sends the stream's feature rows to ``/predict``."""
        ...

    def no_change(self, scenario: Scenario, labels: np.ndarray) -> np.ndarray:
        """A regression's no-change forecast for ``labels`` (same shape, float64), in the targets' units."""
        ...

    def report_extras(
        self, *, job: JobConfig, scenario: Scenario, rows: dict[str, np.ndarray], static_windows: int
    ) -> dict[str, Any]:
        """Report sections only this use case has, from the served rows joined with their labels
        (``rows``: the columns of ``predictions.npz``)."""
        ...


def get(name: str) -> UseCase:
    """The use case ``data.name`` names: a built-in one (:data:`BUILT_IN`), or a ``"package.module:attribute"``
    that is a :class:`UseCase` (a user's; imported as :func:`ddn_ray.registry.load` says).

    Raises:
        ddn_ray.errors.ConfigError: no built-in use case has that name, or the named object cannot be
            imported or is not a :class:`UseCase`.
    """
    where = BUILT_IN.get(name) or (name if ":" in name else None)
    if where is None:
        raise ConfigError(
            f"data.name {name!r} is not a built-in use case; one of {sorted(BUILT_IN)}, a "
            "'package.module:attribute' UseCase, or describe your own table with data.source"
        )
    try:
        usecase = registry.load(where, what="data.name")
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(usecase, UseCase):
        raise ConfigError(
            f"data.name {name!r}: {where} is not a UseCase (task, scenarios, options, scenario, "
            "client_route, no_change, report_extras; ddn_ray.usecase)"
        )
    if not (isinstance(usecase.options, type) and issubclass(usecase.options, Options)):
        raise ConfigError(f"data.name {name!r}: {where}.options must be a subclass of ddn_ray.usecase.Options")
    return usecase


def check(name: str, scenario: str, task: str, options: Mapping[str, Any] | None = None) -> None:
    """Check that the use case ``name`` has ``scenario``, learns with ``task`` and that ``options`` (``data.options``)
    fit its :attr:`UseCase.options` (what a job config asks).

    Raises:
        ddn_ray.errors.ConfigError: it has not, or :func:`get` fails; the message names the field.
    """
    usecase = get(name)
    if scenario not in usecase.scenarios:
        raise ConfigError(f"data.scenario {scenario!r} does not apply to {name}; use one of {usecase.scenarios}")
    if task != usecase.task:
        raise ConfigError(f"data.name {name!r} needs model.task {usecase.task}")
    try:
        usecase.options.model_validate(dict(options or {}))
    except ValidationError as exc:
        errors = "; ".join(f"data.options.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        known = ", ".join(usecase.options.model_fields) or "none"
        raise ConfigError(f"{errors} (the settings of {name}: {known})") from None


def feed(job: JobConfig) -> Feed:
    """The main job's feed of the built-in stream ``job.data.name`` (:class:`ddn_ray.feeds.Feed`).

    Raises:
        ddn_ray.errors.ConfigError: ``job.data`` names no built-in use case.
    """
    feed_type = registry.load(FEED, what="use-case feed")
    return feed_type(job=job, usecase=get(job.data.name or ""))


def stream_table(job: JobConfig) -> Table:
    """The rows of ``job.data``'s stream in stream order: what a Tune trial replays
    (:class:`ddn_ray.sweep.SweepConfig` ``stream``). A built-in stream's rows, or a user's table
    featurized as served (:func:`ddn_ray.tables.replay_table`).

    Raises:
        ddn_ray.errors.ConfigError: ``job.data`` names no use case, or a landing dir.
    """
    if job.data.source is not None:
        from ddn_ray import tables

        try:
            return tables.replay_table(job.data, job.model.task, window_size=job.stream.window_size)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return get(job.data.name or "").scenario(job.data).table
