"""Drifting streams built from static data sets: the use cases' scenarios.

:func:`load` turns a :class:`~ddn_ray.config.DataConfig` into the stream :class:`Table` the
main job replays, plus the *input spec* that tells Serve replicas what a raw request
looks like (``table``: rows of numbers; ``image``: PNG or pixel rows; ``text``: raw text).

Scenarios (positions are fractions ``f`` of the stream):

* ``fashion_mnist`` / ``rotation`` (covariate drift): every image is rotated by an angle
  that is 0 deg for ``f < 0.2``, grows linearly to 60 deg by ``f = 0.5`` (gradual drift),
  stays at 60 deg, then jumps to 180 deg at ``f = 0.75`` (abrupt drift).
* ``fashion_mnist`` / ``new_classes`` (class-incremental): ``phases`` equal phases; phase
  ``k`` draws images from the first ``(k + 1) * 10 / phases`` classes, so new classes
  appear while the old ones keep coming.
* ``bbc_news`` / ``topic_incremental``: topics join one per phase (in a seeded order);
  each topic's articles are spread evenly over the phases from the one it joins in.
* ``bbc_news`` / ``topic_shift``: every topic throughout, but in phase ``k`` one topic
  (seeded order) is 60 % of the articles and the others share the rest.

* ``cartpole`` / ``pendulum`` (regression, :mod:`ddn_ray.usecases.control`): rows are transitions
  ``[state, action] -> next_state - state`` rolled out while the physics drift.
  ``physics_drift``: default, then gradual, then abrupt change (:func:`ddn_ray.usecases.control.physics_drift`);
  ``worn_actuator`` (CartPole): ``force_mag`` weakens 10 -> 5 N over the middle third. Inputs and
  targets are standardised by the first ``data.options.standardize_rows`` rows; the input spec keeps the
  means and spreads, so a replica answers raw states and actions with raw next states.

* ``nab`` (regression, :mod:`ddn_ray.usecases.nab`, :mod:`ddn_ray.usecases.anomaly`): one NAB series in time order,
  unlabelled; row ``r`` holds the ``lags`` values before point ``lags + r``, scaled by the
  file's min / max (NAB gives detectors both), then ``2 * seasonal_width`` values around the
  same phase one period earlier (the period is found on the values of NAB's probation, which
  are never scored; :func:`ddn_ray.usecases.anomaly.series_rows`). Its target is that point's change
  from the one before. Phase 1 starts after NAB's probation.

Every scenario uses every row at most once, and is reproducible from ``data.seed``. Each data set's
own settings are ``data.options``, one :class:`~ddn_ray.usecase.Options` model per data set (:data:`OPTIONS`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ddn_ray.config import DataConfig
from ddn_ray.stream import Table
from ddn_ray.usecase import Options, Scenario
from ddn_ray.usecases import datasets, text

__all__ = [
    "OPTIONS",
    "BbcNewsOptions",
    "ControlOptions",
    "FashionMnistOptions",
    "NabOptions",
    "load",
    "new_class_order",
    "rotate",
    "rotation_angles",
    "topic_order",
]

IMAGE_SHAPE = (1, 28, 28)


class FashionMnistOptions(Options):
    """``data.options`` of ``fashion_mnist``."""

    stream_rows: int | None = Field(None, gt=0, description="images drawn from the train split (None: all 60,000)")
    phases: int = Field(5, ge=2, le=10, description="new_classes: drift phases, one per class group")


class BbcNewsOptions(Options):
    """``data.options`` of ``bbc_news``."""

    phases: int = Field(5, ge=2, le=10, description="topic_incremental / topic_shift: drift phases")
    text_features: Literal["hashing", "minilm"] = Field(
        "hashing", description="hashed word 1-2-grams, or frozen all-MiniLM-L6-v2 embeddings (extra [text])"
    )
    hash_features: int = Field(4096, ge=16, le=2**20, description="hashing: feature columns")


class ControlOptions(Options):
    """``data.options`` of ``cartpole`` and ``pendulum``."""

    stream_rows: int = Field(30000, gt=0, description="transitions rolled out")
    standardize_rows: int = Field(2000, gt=1, description="inputs and targets are standardised by their first rows")


class NabOptions(Options):
    """``data.options`` of ``nab`` (``data.path`` is the NAB folder)."""

    series: str = Field(
        "realKnownCause/machine_temperature_system_failure.csv", description="the series, <category>/<file>.csv"
    )
    lags: int = Field(16, ge=1, le=1024, description="past values (scaled by the file's min / max) per row")
    seasonal_width: int = Field(
        8,
        ge=0,
        le=256,
        description="inputs on each side of the same phase one period "
        "earlier (period found on the probation's values; 0: none)",
    )


OPTIONS: dict[str, type[Options]] = {
    "elec2": Options,
    "fashion_mnist": FashionMnistOptions,
    "bbc_news": BbcNewsOptions,
    "cartpole": ControlOptions,
    "pendulum": ControlOptions,
    "nab": NabOptions,
}
"""Each built-in data set's ``data.options`` model (Elec2 has no settings)."""


def rotation_angles(n: int) -> np.ndarray:
    """The ``rotation`` schedule: ``(n,)`` float64 angles in degrees (see the module doc).

    Examples:
        >>> rotation_angles(8).tolist()
        [0.0, 0.0, 10.0, 35.0, 60.0, 60.0, 180.0, 180.0]
    """
    f = np.arange(n) / max(n, 1)
    gradual = np.clip((f - 0.2) / 0.3, 0.0, 1.0) * 60.0
    return np.round(np.where(f >= 0.75, 180.0, gradual), 6)


def rotate(images: np.ndarray, angles_deg: np.ndarray, shape: tuple[int, int, int] = IMAGE_SHAPE) -> np.ndarray:
    """Rotate flattened images counter-clockwise about their centre (bilinear, zero fill).

    Args:
        images: ``(n, C*H*W)`` float32.
        angles_deg: ``(n,)`` angles in degrees.

    Returns:
        ``(n, C*H*W)`` float32 in ``[0, 1]``, rounded to multiples of 1/255 (8-bit pixels, so a
        PNG carries them exactly, see :mod:`ddn_ray.usecases.images`).
    """
    from scipy import ndimage

    c, h, w = shape
    out = np.empty_like(images, dtype=np.float32)
    for i, (img, a) in enumerate(zip(images.reshape(-1, c, h, w), angles_deg)):
        r = img if a == 0 else ndimage.rotate(img, float(a), axes=(1, 2), reshape=False, order=1, mode="constant")
        out[i] = np.rint(np.clip(r, 0.0, 1.0) * 255.0).ravel() / 255.0
    return out


def new_class_order(
    labels: np.ndarray, num_classes: int, phases: int, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices for the ``new_classes`` scenario and the phase of each.

    Phase ``k`` (of ``phases`` equal phases of ``n // phases`` rows) samples, without
    replacement, uniformly from the rows whose class is below ``ceil((k + 1) * num_classes / phases)``.

    Returns:
        ``(indices (m,) int64, phase (m,) int64)`` with ``m = phases * (n // phases)``.

    Raises:
        ValueError: the data holds too few rows of some class for the schedule.
    """
    per_phase = n // phases
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in range(num_classes)}
    idx, ph = [], []
    for k in range(phases):
        allowed = np.arange(int(np.ceil((k + 1) * num_classes / phases)))
        draws = rng.choice(allowed, size=per_phase)
        for c in draws:
            if not pools[int(c)]:
                raise ValueError(f"new_classes: class {int(c)} ran out of rows; ask for fewer stream rows")
            idx.append(pools[int(c)].pop())
        ph += [k] * per_phase
    return np.array(idx, dtype=np.int64), np.array(ph, dtype=np.int64)


def topic_order(
    labels: np.ndarray, num_classes: int, phases: int, scenario: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (every row once) and phases for the ``topic_incremental`` / ``topic_shift`` scenarios.

    Topics are taken in a seeded random order ``t_0, t_1, ...``; phase ``k`` features ``t_(k mod C)``.

    Returns:
        ``(indices (len(labels),) int64, phase (len(labels),) int64)``.

    Raises:
        ValueError: unknown scenario.
    """
    order = rng.permutation(num_classes)
    pools = {int(c): list(rng.permutation(np.flatnonzero(labels == c))) for c in range(num_classes)}
    if scenario == "topic_incremental":
        # topic t_j joins in phase min(j, phases - 1); its rows are split evenly over that phase and the later ones
        chunks: list[list[int]] = [[] for _ in range(phases)]
        for j, c in enumerate(order):
            first = min(j, phases - 1)
            for k, part in enumerate(np.array_split(np.array(pools[int(c)], dtype=np.int64), phases - first)):
                chunks[first + k] += part.tolist()
        idx, ph = [], []
        for k, chunk in enumerate(chunks):
            idx += [int(i) for i in rng.permutation(np.array(chunk, dtype=np.int64))]
            ph += [k] * len(chunk)
        return np.array(idx, dtype=np.int64), np.array(ph, dtype=np.int64)
    if scenario != "topic_shift":
        raise ValueError(f"unknown topic scenario {scenario!r}")
    n = len(labels)
    bounds = np.linspace(0, n, phases + 1).astype(int)
    idx, ph = [], []
    for k in range(phases):
        main = int(order[k % num_classes])
        for _ in range(bounds[k], bounds[k + 1]):
            left = [c for c in range(num_classes) if pools[c]]
            w = np.array([0.6 if c == main else 0.4 / (num_classes - 1) for c in left])
            c = left[int(rng.choice(len(left), p=w / w.sum()))]
            idx.append(pools[c].pop())
            ph.append(k)
    return np.array(idx, dtype=np.int64), np.array(ph, dtype=np.int64)


def load(cfg: DataConfig, opts: Options | None = None) -> Scenario:
    """Build the stream a data config describes (then cut to ``cfg.max_rows``).

    Args:
        cfg: the data config; ``cfg.name`` is a key of :data:`OPTIONS`.
        opts: the data set's settings; ``None`` reads ``cfg.options`` with its :data:`OPTIONS` model.

    Raises:
        DataError: the data set's files are missing or malformed.
        pydantic.ValidationError: ``cfg.options`` do not fit the data set's model.
        ImportError: ``text_features: minilm`` without the ``[text]`` extra.
    """
    rng = np.random.default_rng(cfg.seed)
    opts = OPTIONS[cfg.name or ""].model_validate(cfg.options) if opts is None else opts
    if cfg.name == "elec2":
        table = datasets.load_elec2(cfg.path, cfg.max_rows)
        return Scenario(table, {"kind": "table"}, np.zeros(len(table), np.int64), ("down", "up"))
    if isinstance(opts, ControlOptions):
        return _control(cfg, opts)
    if isinstance(opts, NabOptions):
        return _nab(cfg, opts)
    if isinstance(opts, FashionMnistOptions):
        full = datasets.load_fashion_mnist(cfg.path, "train")
        n = min(opts.stream_rows or len(full), len(full))
        if cfg.scenario == "new_classes":
            idx, phase = new_class_order(full.labels, full.num_classes, opts.phases, n, rng)
            x = full.features[idx]
        else:
            idx = rng.permutation(len(full))[:n]
            x = full.features[idx]
            phase = np.zeros(n, np.int64)
            if cfg.scenario == "rotation":
                angles = rotation_angles(n)
                x = rotate(x, angles)
                phase = np.searchsorted([0.2, 0.5, 0.75], np.arange(n) / n, side="right").astype(np.int64)
        table = Table(x, full.labels[idx], full.feature_names, full.num_classes)
        inputs = {"kind": "image", "shape": list(IMAGE_SHAPE), "routes": "ddn_ray.usecases.routes:IMAGES"}
        names: tuple[str, ...] = (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        )
    else:
        assert isinstance(opts, BbcNewsOptions), cfg.name
        corpus = datasets.load_bbc_news(cfg.path)
        if cfg.scenario == "none":
            idx, phase = np.arange(len(corpus)), np.zeros(len(corpus), np.int64)
        else:
            idx, phase = topic_order(corpus.labels, len(corpus.class_names), opts.phases, cfg.scenario, rng)
        inputs = text.spec_for(opts.text_features, opts.hash_features)
        idx = idx[: cfg.max_rows]  # featurize only what the stream uses
        # in file order, so every scenario of the same rows shares the encoder's cached embeddings
        used = np.sort(idx)
        x = text.featurize([corpus.texts[i] for i in used], inputs, str(datasets.cache_dir() / "bbc"))
        x = x[np.searchsorted(used, idx)]
        table = Table(x, corpus.labels[idx], text.feature_names(inputs), len(corpus.class_names))
        names = corpus.class_names
        raw = tuple(corpus.texts[i] for i in idx)
        inputs = {**inputs, "routes": "ddn_ray.usecases.routes:TEXTS"}
    if cfg.max_rows is not None:
        m = min(cfg.max_rows, len(table))
        table = Table(table.features[:m], table.labels[:m], table.feature_names, table.num_classes)
        phase = phase[:m]
    return Scenario(table, inputs, phase, names, raw[: len(table)] if inputs["kind"] == "text" else None)


def _control(cfg: DataConfig, opts: ControlOptions) -> Scenario:
    from ddn_ray.usecases import control

    assert cfg.name is not None, "a built-in use case has a name"
    env_id = {"cartpole": "CartPole-v1", "pendulum": "Pendulum-v1"}[cfg.name]
    n = opts.stream_rows
    if cfg.scenario == "physics_drift":
        schedule, named = control.physics_drift(env_id, n)
    elif cfg.scenario == "worn_actuator":
        schedule = control.worn_actuator(n // 3, 2 * n // 3)
        named = [("healthy", 0), ("wearing: force_mag 10->5 N", n // 3), ("worn: force_mag 5 N", 2 * n // 3)]
    else:
        schedule, named = control.Schedule(), [("default", 0)]
    r = control.rollout(env_id, n, schedule, seed=cfg.seed)
    k = min(opts.standardize_rows, n)
    xm, xs = r.inputs[:k].mean(0), r.inputs[:k].std(0) + 1e-6
    ym, ys = r.targets[:k].mean(0), r.targets[:k].std(0) + 1e-6
    x = ((r.inputs - xm) / xs).astype(np.float32)
    y = ((r.targets - ym) / ys).astype(np.float32)
    phase = (np.searchsorted([start for _, start in named[1:]], np.arange(n), side="right")).astype(np.int64)
    states, actions = control.STATE_NAMES[env_id], control.ACTION_NAMES[env_id]
    inputs = {
        "kind": "dynamics",
        "env": env_id,
        "state_names": list(states),
        "action_names": list(actions),
        "x_mean": xm.tolist(),
        "x_std": xs.tolist(),
        "y_mean": ym.tolist(),
        "y_std": ys.tolist(),
        "phases": [name for name, _ in named],
        "routes": "ddn_ray.usecases.routes:DYNAMICS",
    }
    table = Table(x, y, (*states, *actions), len(states), task="regression")
    if cfg.max_rows is not None:
        m = min(cfg.max_rows, n)
        table = Table(table.features[:m], table.labels[:m], table.feature_names, table.num_classes, "regression")
        phase = phase[:m]
    return Scenario(table, inputs, phase, tuple(f"d_{s}" for s in states))


def _nab(cfg: DataConfig, opts: NabOptions) -> Scenario:
    from ddn_ray.usecases import anomaly, nab

    series = nab.load_corpus(cfg.path, [opts.series])[opts.series]
    v = series.values
    lo, hi = float(v.min()), float(v.max())
    x = ((v - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)
    lags, width, probation = opts.lags, opts.seasonal_width, nab.probation_length(len(x))
    period = anomaly.seasonal_period(x[:probation], probation // 2) if width else 0
    period = period if period >= lags + width else 0
    feats, target = anomaly.series_rows(x, lags, period, width)
    points = np.arange(lags, len(x))
    phase = (points >= probation).astype(np.int64)
    if cfg.max_rows is not None:
        feats, target, phase = feats[: cfg.max_rows], target[: cfg.max_rows], phase[: cfg.max_rows]
    inputs = {
        "kind": "series",
        "series": opts.series,
        "lags": lags,
        "lo": lo,
        "hi": hi,
        "points": len(x),
        "period": period,
        "seasonal_width": width,
        "probation": probation,
        "routes": "ddn_ray.usecases.routes:SERIES",
    }
    names = tuple(f"lag{lags - j}" for j in range(lags)) + tuple(f"season{j - width + 1:+d}" for j in range(2 * width))
    return Scenario(Table(feats, target, names, 1, task="regression"), inputs, phase, ("value",))
