"""The job configuration: one frozen pydantic schema, loaded from YAML.

Defaults live here and nowhere else. :func:`load` reports every invalid field at once.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from ddn_ray import guard, usecase
from ddn_ray.errors import ConfigError

__all__ = [
    "ControllerConfig",
    "DataConfig",
    "DriftConfig",
    "JobConfig",
    "LandingDirConfig",
    "ModelConfig",
    "PolicyConfig",
    "RayConfig",
    "ReportConfig",
    "ServeConfig",
    "ServiceConfig",
    "StrategyConfig",
    "StreamConfig",
    "TableSourceConfig",
    "TrainConfig",
    "error_lines",
    "load",
    "merge",
    "nest",
    "parse_overrides",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TableSourceConfig(_Frozen):
    """A user's table: one file, a directory or a glob, local or any pyarrow filesystem URI (``${VAR}`` expanded)."""

    kind: Literal["table"] = "table"
    uri: str = Field(min_length=1, description="e.g. data/loans.parquet, data/*.csv, s3://bucket/loans/")


class LandingDirConfig(_Frozen):
    """A directory that a producer fills with files of the user's columns while the job runs."""

    kind: Literal["landing_dir"] = "landing_dir"
    path: str = Field(min_length=1, description="the directory, local or a pyarrow filesystem URI")
    poll_interval_s: float = Field(0.5, gt=0, description="how often to look for new files")
    idle_timeout_s: float = Field(30.0, gt=0, description="end of stream after this long with no new file")


class DataConfig(_Frozen):
    """Which data feeds the stream: a user's table (``source``), or a built-in use case (``name``)."""

    name: str | None = Field(
        "elec2",
        min_length=1,
        description="a built-in use case (ddn_ray.usecase.BUILT_IN: elec2, fashion_mnist, "
        "bbc_news, cartpole, pendulum, nab) or a 'package.module:attribute' UseCase; left out (None) with source",
    )
    source: TableSourceConfig | LandingDirConfig | None = Field(
        None,
        discriminator="kind",
        description="a user's table: {kind: table, uri: ...} or {kind: landing_dir, path: ...}",
    )
    format: Literal["parquet", "csv", "json"] | None = Field(
        None, description="source files' format (json: JSON lines); None: from each file's suffix"
    )
    features: tuple[str, ...] = Field((), description="source: the input columns")
    categorical: tuple[str, ...] | None = Field(
        None, description="source: which features are categorical; None: the string / dictionary columns"
    )
    label: str | None = Field(None, description="source: the label column (classes, or a float with task regression)")
    classes: tuple[str | int, ...] = Field(
        (), description="source: classes known at the start, in id order (quote YAML words like 'yes' / 'no')"
    )
    allow_new_classes: bool = Field(
        False, description="source: a label never seen grows the output layer; else its row is quarantined"
    )
    order_by: str | None = Field(
        None, description="source table: sort rows by this column (read whole); None: file order"
    )
    id: str | None = Field(None, description="source: an id column carried into every request, answer and the report")
    missing: Literal["impute", "quarantine"] = Field(
        "impute",
        description="source: a missing feature is imputed (running mean + indicator; unknown category) "
        "or its row quarantined",
    )
    scaling: Literal["standard", "none"] = Field(
        "standard",
        description="source: numeric features scaled by the running mean / std of revealed rows, or left as they are",
    )
    max_categories: int = Field(
        32, ge=2, le=4096, description="source: one-hot slots per categorical column, the unknown slot included"
    )
    path: str | None = Field(
        None, description="explicit file or data directory; else $DDN_RAY_DATA_DIR, cache, download"
    )
    max_rows: int | None = Field(None, gt=0, description="use only the first max_rows rows of the stream")
    seed: int = Field(0, description="the scenario's sampling seed")
    scenario: str = Field(
        "none",
        description="how the stream drifts (ddn_ray.usecases.scenarios): fashion_mnist rotation / new_classes, "
        "bbc_news topic_incremental / topic_shift, cartpole / pendulum physics_drift, cartpole worn_actuator; "
        "none keeps the data set's own order (elec2: time) or its default physics",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the use case's own settings (data.name), checked by its Options model "
        "(ddn_ray.usecase.Options; the built-ins' models: ddn_ray.usecases.scenarios.OPTIONS)",
    )

    @model_validator(mode="before")
    @classmethod
    def _source_or_name(cls, raw: Any) -> Any:
        unknown = sorted(set(raw) - set(cls.model_fields)) if isinstance(raw, dict) else []
        if unknown and raw.get("name") is not None:  # e.g. a use case's setting written where data's own fields go
            raise ValueError(f"data: {unknown} are not data fields; a use case's own settings go under data.options")
        if isinstance(raw, dict) and raw.get("source") is not None:
            if raw.get("name") is not None:
                raise ValueError("give data.source (a user's table) or data.name (a built-in use case), not both")
            return {**raw, "name": None}
        return raw

    @model_validator(mode="after")
    def _scenario_fits_data(self) -> DataConfig:
        if self.source is not None:
            return self._table_fits()
        if self.name is None:
            raise ValueError("data needs a source (a user's table) or a name (a built-in use case)")
        return self  # the use case's scenarios and task: JobConfig (ddn_ray.usecase.check)

    def _table_fits(self) -> DataConfig:
        if not self.features or not self.label:
            raise ValueError("data.source needs data.features (the input columns) and data.label")
        named = [
            *self.features,
            self.label,
            *([self.id] if self.id else []),
            *([self.order_by] if self.order_by else []),
        ]
        twice = sorted(
            {c for c in named if named.count(c) > 1} - ({self.order_by} if self.order_by == self.id else set())
        )
        if twice:
            raise ValueError(f"data: column(s) {twice} named in more than one role (features, label, id, order_by)")
        unknown = sorted(set(self.categorical or ()) - set(self.features))
        if unknown:
            raise ValueError(f"data.categorical {unknown} are not in data.features")
        if self.order_by and isinstance(self.source, LandingDirConfig):
            raise ValueError("data.order_by is for a table source; a landing dir is read in file-name order")
        if self.scenario != "none":
            raise ValueError("data.scenario is for built-in use cases; a user's table streams in its own order")
        if self.options:
            raise ValueError(
                f"data.options {sorted(self.options)} are a use case's settings (data.name); a table "
                "is described by data.features, data.label and the other data fields"
            )
        return self


class StreamConfig(_Frozen):
    """How rows become windows, and how far the stream may run ahead of training."""

    source: Literal["replay", "landing_dir"] = "replay"
    landing_dir: str | None = Field(None, description="directory of parquet files, required for source=landing_dir")
    window_size: int = Field(50, gt=0, description="rows per window; labels are revealed once per window")
    max_lag_windows: int = Field(
        0, ge=0, description="window w is served once training has finished window w-1-max_lag_windows"
    )
    last_label_feature: bool = Field(
        False, description="append the last revealed label as an input feature (stream.with_last_label)"
    )
    poll_interval_s: float = Field(0.5, gt=0, description="landing_dir: how often to look for new files")
    idle_timeout_s: float = Field(30.0, gt=0, description="landing_dir: end of stream after this long with no new file")

    @model_validator(mode="after")
    def _landing_dir_given(self) -> StreamConfig:
        if self.source == "landing_dir" and not self.landing_dir:
            raise ValueError("stream.landing_dir is required when stream.source is 'landing_dir'")
        return self


class ModelConfig(_Frozen):
    """The network's architecture."""

    kind: Literal["mlp", "cnn"] = Field(
        "mlp",
        description="a built-in builder (ddn_ray.models.BUILDERS); cnn: conv blocks on image rows, then the MLP layers",
    )
    builder: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="a user's model: 'package.module:function', "
        "called as function(num_features, num_classes, model_config) -> nn.Module with .body and .head "
        "(ddn_ray.models); None: the built-in kind",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="the user builder's own settings, read from model_config.options"
    )
    task: Literal["classification", "regression"] = Field(
        "classification", description="regression: real-valued outputs learned with MSE (e.g. forward dynamics)"
    )
    hidden_sizes: tuple[int, ...] = Field((64, 64), min_length=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    image_shape: tuple[int, int, int] = Field((1, 28, 28), description="cnn: (channels, height, width) of a row")
    channels: tuple[int, ...] = Field((16, 32), min_length=1, description="cnn: output channels of each conv block")
    exits: tuple[int, ...] = Field(
        (),
        description="early exits (BranchyNet): mlp: after these hidden layers (0-based, not the last); cnn: after "
        "these conv blocks; the head is always the last exit. () : one exit, the head",
    )
    exit_loss_weights: tuple[float, ...] | None = Field(
        None, description="weight of each exit's loss in the joint loss, the head's last; None: equal weights"
    )
    exit_threshold: float = Field(
        0.9,
        gt=0,
        le=1,
        description="a row is answered by the first exit whose confidence exceeds this (a request may set its own); "
        "1: always the last exit",
    )
    exit_criterion: Literal["max_prob", "entropy"] = Field(
        "max_prob",
        description="an exit's confidence: the largest softmax probability, or 1 - entropy / log(classes)",
    )

    @model_validator(mode="after")
    def _exits(self) -> ModelConfig:
        if not self.exits:
            if self.exit_loss_weights is not None and len(self.exit_loss_weights) != 1:
                raise ValueError("model.exit_loss_weights: one weight per exit; without model.exits there is one")
            return self
        if self.builder is not None:
            raise ValueError("model.exits places the built-in models' exits; a user's builder declares its own")
        if self.task != "classification":
            raise ValueError("model.exits: early exit answers by confidence, so it is for classification only")
        if list(self.exits) != sorted(set(self.exits)) or self.exits[0] < 0:
            raise ValueError(f"model.exits {self.exits}: distinct layer indices in increasing order")
        limit = len(self.hidden_sizes) - 1 if self.kind == "mlp" else len(self.channels)
        if self.exits[-1] >= limit:
            what = "hidden layers but the last" if self.kind == "mlp" else "conv blocks"
            raise ValueError(f"model.exits {self.exits}: a {self.kind} of this size has {limit} {what} to exit after")
        if self.exit_loss_weights is not None:
            if len(self.exit_loss_weights) != len(self.exits) + 1:
                raise ValueError(
                    f"model.exit_loss_weights: {len(self.exits) + 1} weights (each exit's, the head's last); "
                    f"got {len(self.exit_loss_weights)}"
                )
            if min(self.exit_loss_weights) < 0 or sum(self.exit_loss_weights) <= 0:
                raise ValueError("model.exit_loss_weights: non-negative, and not all zero")
        return self


class StrategyConfig(_Frozen):
    """How each update learns (``ddn_ray.strategy``); only the chosen strategy's fields are used."""

    name: str = Field("finetune", description="finetune, replay, ewc, online_ewc, lwf, or several joined by '+'")
    memory_size: int = Field(1000, ge=1, description="replay: rows kept per worker")
    replay_ratio: float = Field(1.0, ge=0, description="replay: memory rows per window row in a batch")
    class_balanced: bool = Field(False, description="replay: one reservoir per class")
    ewc_lambda: float = Field(100.0, ge=0, description="ewc / online_ewc: penalty weight")
    ewc_decay: float = Field(0.9, ge=0, le=1, description="online_ewc: Fisher decay gamma")
    ewc_max_anchors: int = Field(10, ge=1, description="ewc: most recent (Fisher, parameters) pairs kept")
    lwf_alpha: float = Field(1.0, ge=0, description="lwf: distillation weight")
    temperature: float = Field(2.0, gt=0, description="lwf: softmax temperature")

    @field_validator("name")
    @classmethod
    def _known_names(cls, v: str) -> str:
        known = ("finetune", "replay", "ewc", "online_ewc", "lwf")
        parts = v.split("+")
        bad = [p for p in parts if p not in known]
        if bad or len(set(parts)) != len(parts):
            raise ValueError(f"strategy {v!r}: use one or more of {known} joined by '+', each once")
        return v


class TrainConfig(_Frozen):
    """Ray Train workers and the per-window update."""

    num_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(0.5, gt=0)
    use_gpu: bool = Field(
        False,
        description="one GPU per Train worker (ScalingConfig.use_gpu), the model and every batch on it; a cluster "
        "without the GPUs falls back to CPU with one warning (ddn_ray.devices)",
    )
    amp: bool = Field(
        False, description="mixed precision: forward pass and loss in bfloat16 (torch.autocast), float32 weights"
    )
    batch_size: int = Field(16, gt=0, description="global batch size, split across workers")
    epochs_per_window: int = Field(10, ge=1)
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"] = "adam"
    lr: float = Field(3e-3, gt=0)
    momentum: float = Field(0.9, ge=0, description="sgd and rmsprop only")
    weight_decay: float = Field(0.0, ge=0)
    lr_schedule: Literal["constant", "step", "cosine"] = Field(
        "constant", description="per-window learning-rate schedule, restarted by a policy's 'all' or 'reset' decision"
    )
    lr_period_windows: int = Field(100, ge=1, description="step: windows between decays; cosine: windows to lr_min")
    lr_gamma: float = Field(0.5, gt=0, le=1, description="step: decay factor")
    lr_min_factor: float = Field(0.1, ge=0, le=1, description="cosine: final lr as a fraction of lr")
    publish_every_windows: int = Field(1, ge=1, description="publish weights to the controller every K windows")
    checkpoint_every_windows: int = Field(10, ge=1, description="report a Ray Train checkpoint every M windows")
    checkpoint_upload: Literal["async", "sync"] = Field(
        "async",
        description="async: Train uploads a reported checkpoint on its own thread while the next windows are "
        "learned (CheckpointUploadMode.ASYNC; a crash may lose the one in flight, and its windows are learned "
        "again); sync: the train loop waits for the upload (the service, which checkpoints every window so that "
        "a restart learns no joined row twice)",
    )
    health_check_interval_s: float = Field(
        0.2,
        gt=0,
        description="seconds between the Train controller's polls of its workers (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, "
        "Ray's default 2 s; an exported value wins): it takes at most one reported checkpoint a poll, so at 2 s a "
        "checkpoint every 20 windows capped the main job at 10 windows/s (benchmarks/job_vs_learner.py)",
    )
    max_failures: int = Field(
        3,
        ge=-1,
        description="Train restarts the worker group from its latest checkpoint this many times after a worker dies "
        "(FailureConfig.max_failures; -1: always); the windows since that checkpoint are sent again",
    )
    checkpoints_to_keep: int | None = Field(
        3,
        ge=1,
        description="Ray Train keeps the newest N checkpoints of a run (CheckpointConfig.num_to_keep); None: all",
    )
    seed: int = 0


class DriftConfig(_Frozen):
    """Drift analysis in the train loop (``ddn_ray.drift``).

    The detector reads the prequential error stream (1.0 for a row the model got
    wrong before learning it, else 0.0), gathered from every worker in rank order.
    On a signal, the last ``2 * reference_windows`` windows are split in two and
    compared: per-feature KS tests on the inputs and an MMD test on the model's embeddings.
    """

    detector: Literal["none", "adwin", "page_hinkley", "kswin", "ddm"] = "none"
    params: dict[str, float] = Field(
        default_factory=dict, description="keyword arguments of the River detector, e.g. {delta: 0.002} for adwin"
    )
    feature_alpha: float = Field(0.01, gt=0, lt=1, description="KS level after the multiple-testing correction")
    correction: Literal["bonferroni", "bh"] = "bonferroni"
    reference_windows: int = Field(4, ge=1, description="windows on each side of the feature tests")
    mmd_permutations: int = Field(100, ge=0, description="0 skips the MMD test on embeddings")

    @model_validator(mode="after")
    def _params_accepted(self) -> DriftConfig:
        if self.detector != "none":
            from ddn_ray import drift

            try:
                drift.make(self.detector, self.params)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"drift.params {self.params} rejected by {self.detector}: {exc}") from None
        return self


class PolicyConfig(_Frozen):
    """What a drift signal leads to (``ddn_ray.policy``): the level of retraining.

    ``level`` chooses per signal from the error increase and the feature tests; ``head``,
    ``all`` and ``reset`` always take that level; ``none`` logs signals and does nothing.
    """

    name: Literal["none", "level", "head", "all", "reset"] = "level"
    cooldown_windows: int = Field(10, ge=0, description="signals this soon after a retraining are logged as no-op")
    min_error_increase: float = Field(
        0.02, ge=0, description="level: error increase (recent vs before) below which a signal is a no-op"
    )
    reset_error_increase: float = Field(0.5, ge=0, description="level: error increase at or above which to reset")
    recent_windows: int = Field(4, ge=1, description="windows retrained on, and compared with those before them")
    retrain_epochs: int = Field(2, ge=1, description="passes over the recent windows (plus replay memory on reset)")
    rollback_on_reject: bool = Field(True, description="reload the served version when the gate rejects an update")


class MetaConfig(_Frozen):
    """Meta-learned initialisation (Reptile, Nichol et al. 2018): what a policy's ``reset`` starts from.

    With ``init: reptile`` every ``every_windows`` windows the learner takes ``inner_steps`` SGD steps on the
    window from the meta-initialisation (each window a task) and moves the meta-initialisation
    ``outer_lr`` of the way to the adapted weights; a ``reset`` then loads it instead of fresh weights.
    """

    init: Literal["fresh", "reptile"] = Field("fresh", description="a reset starts from fresh weights or the meta-init")
    outer_lr: float = Field(
        0.1, gt=0, le=1, description="Reptile's epsilon: step of the meta-init to the adapted weights"
    )
    inner_steps: int = Field(5, ge=1, description="SGD steps on a window from the meta-init")
    inner_lr: float = Field(0.01, gt=0, description="the inner SGD's learning rate")
    inner_batch_size: int = Field(32, ge=1, description="rows per inner step (sampled from the window)")
    every_windows: int = Field(1, ge=1, description="a meta-update every this many windows")


class DistillConfig(_Frozen):
    """A compact student distilled from the learner (the teacher) for serving (Hinton et al. 2015).

    Every ``every_windows`` windows the student learns the teacher's soft targets at ``temperature`` and the hard
    labels on the recent windows; the controller serves the student while its accuracy on the latest revealed
    window is within ``margin`` of the teacher's, and the teacher otherwise.
    """

    student: ModelConfig | None = Field(None, description="the student's architecture; None: no student")
    every_windows: int = Field(1, ge=1, description="distil every this many windows")
    epochs: int = Field(3, ge=1, description="passes over the recent windows per distillation")
    temperature: float = Field(2.0, gt=0, description="softmax temperature of the soft targets")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the soft-target loss (1 - alpha: the labels')")
    lr: float = Field(3e-3, gt=0, description="the student's Adam learning rate")
    margin: float = Field(0.02, ge=0, le=1, description="serve the student while teacher - student accuracy <= this")

    @field_validator("student")
    @classmethod
    def _classifier(cls, v: ModelConfig | None) -> ModelConfig | None:
        if v is not None and (v.task != "classification" or v.exits):
            raise ValueError("distill.student: a classifier without early exits (soft targets need classes)")
        return v


class ServeConfig(_Frozen):
    """The Serve application and the traffic client that replays features to it."""

    app_name: str = "ddn_ray"
    route_prefix: str = "/"
    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
    num_replicas: int = Field(2, ge=1)
    cpus_per_replica: float = Field(0.25, gt=0)
    num_gpus: float = Field(
        0.0,
        ge=0,
        description="GPUs per replica (fractional: replicas share one); a cluster without them falls back to CPU "
        "with one warning (ddn_ray.devices)",
    )
    max_batch_rows: int = Field(1024, gt=0, description="requests with more rows get 413")
    request_rows: int = Field(
        500,
        gt=0,
        description="rows per HTTP request sent by the job's traffic client at most: a window goes in as few "
        "requests as that allows, of equal size (benchmarks/job_vs_learner.py: 500 against 100 at W=1000)",
    )
    num_clients: int = Field(2, ge=1, description="concurrent HTTP clients")
    direct_ingress: bool = Field(
        True,
        description="the job's own requests go to the replicas' own HTTP servers (Ray Serve's direct ingress, "
        "on serve.host) instead of through Serve's proxy, which keeps serve.port for everyone else "
        "(ddn_ray.serve.ingress); set for a local cluster the job starts, else as the cluster has it",
    )
    direct_ingress_ports: tuple[int, int] = Field(
        (30000, 30999),
        description="the replicas' own HTTP ports with serve.direct_ingress, first and last (keep them out of "
        "Ray's worker ports, 10002-19999 by default)",
    )
    request_timeout_s: float = Field(30.0, gt=0)
    version_wait_s: float = Field(
        10.0,
        gt=0,
        description="a request's ?min_version=v holds it in its replica until the replica serves version v (or "
        "?min_window=w until it knows window w learned), this long at most (then it is answered by the version "
        "served, which the answer names)",
    )
    quantize: Literal["none", "dynamic_int8"] = Field(
        "none",
        description="dynamic_int8: replicas serve a dynamically quantised copy (int8 linear layers) of each "
        "version, built once when the version is loaded",
    )
    max_body_bytes: int | None = Field(
        None,
        gt=0,
        description="request bodies over this many bytes get a 413 before they are parsed; None: 32 bytes per "
        "number of the largest batch (max_batch_rows x input width), at least 8 MiB",
    )
    auth_token: SecretStr | None = Field(
        None,
        description="every request to the replicas must carry 'Authorization: Bearer <token>' (401 else); None: "
        "$DDN_RAY_AUTH_TOKEN, and no token when that is unset. Prefer the variable: a config file is copied",
    )
    raw_inputs: bool = Field(
        True,
        description="the traffic client sends raw inputs (PNG images, texts) to /predict_images or "
        "/predict_text when the data has them (not with stream.last_label_feature); else feature rows to /predict",
    )

    def token(self) -> str | None:
        """The bearer token the replicas require: ``auth_token``, else ``$DDN_RAY_AUTH_TOKEN``, else ``None``."""
        return self.auth_token.get_secret_value() if self.auth_token is not None else guard.auth_token_from_env()


class ControllerConfig(_Frozen):
    """The controller actor that versions, gates and syncs weights."""

    name: str = "ddn_ray_controller"
    poll_timeout_s: float = Field(5.0, gt=0, description="replica long-poll timeout")
    sync_timeout_s: float = Field(10.0, gt=0, description="wait at most this long for every replica to load a version")
    max_restarts: int = Field(
        3,
        ge=0,
        description="Ray restarts a killed controller this many times; it restores its versions and weights from "
        "the journal it writes under <storage_path>/<run_name>/controller/",
    )
    memory_versions: int = Field(
        4,
        ge=1,
        description="the newest N versions' weights stay in Ray's object store; older kept versions are read back "
        "from their journal files when asked for (a rollback): 64 versions of a 40 MB model in the object store "
        "slowed publishes 5x (benchmarks/freshness.py)",
    )
    max_loss_ratio: float | None = Field(
        10.0,
        gt=1,
        description="reject an update whose loss on the window it learned, after learning it, exceeds this times "
        "the served version's loss on it before (at least 0.01), or is not finite; None: no check",
    )
    max_accuracy_drop: float | None = Field(
        0.25,
        gt=0,
        le=1,
        description="reject an update whose accuracy on the window it learned, after learning it, is this much "
        "below the served version's before (0.25 = 25 points); None: no check",
    )


class ServiceConfig(_Frozen):
    """The long-running service (``ddn-ray serve-learn``, :mod:`ddn_ray.service`): outside clients, labels by
    feedback. Windows are ``stream.window_size`` joined rows, or what has joined after ``window_timeout_s``."""

    window_timeout_s: float = Field(
        30.0, gt=0, description="learn the rows joined so far after this long, even short of stream.window_size"
    )
    retention_s: float = Field(
        7 * 86400.0,
        gt=0,
        description="a label for a prediction older than this is late "
        "(refused); older predictions leave the in-memory index",
    )
    log_flush_interval_s: float = Field(
        1.0, gt=0, description="the prediction log is written this often, off the request path"
    )
    cpus: float = Field(
        0.1, gt=0, description="Ray CPUs of the learning service's replica (it waits, the Train workers learn)"
    )
    learn: bool = Field(
        True,
        description="false: answer, log and join labels, but start no Train workers (the "
        "joined rows wait in the joined log; benchmarks/service_load.py's training-off baseline)",
    )


class ReportConfig(_Frozen):
    """The end-of-run report."""

    output_dir: str = "runs"
    static_windows: int = Field(
        5, ge=1, description="the static baseline is the version trained on the first static_windows windows, frozen"
    )
    plot: bool = True


class RayConfig(_Frozen):
    """A local Ray cluster started in-process (ignored when RAY_ADDRESS joins an existing one)."""

    num_cpus: int | None = Field(4, gt=0, description="logical CPUs; 4 on 2 cores avoids Data/Train deadlocks")
    include_dashboard: bool = False
    namespace: str = "ddn_ray"
    metrics: bool = Field(
        False,
        description="Ray's Prometheus metrics (the job's ray.util.metrics and Ray's own) on a local cluster; their "
        "endpoint listens on every interface without a token, so they are off unless asked for",
    )


class JobConfig(_Frozen):
    """Everything the main job needs."""

    run_name: str | None = Field(
        None, description="None: a fresh run named <data.name>-<timestamp>; a name: resume that run if it exists"
    )
    storage_path: str = Field("runs/storage", description="Ray Train storage: a local path or an s3:// / gs:// URI")
    data: DataConfig = Field(default_factory=DataConfig)
    stream: StreamConfig = StreamConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    strategy: StrategyConfig = StrategyConfig()
    drift: DriftConfig = DriftConfig()
    policy: PolicyConfig = PolicyConfig()
    meta: MetaConfig = MetaConfig()
    distill: DistillConfig = DistillConfig()
    serve: ServeConfig = ServeConfig()
    controller: ControllerConfig = ControllerConfig()
    service: ServiceConfig = ServiceConfig()
    report: ReportConfig = ReportConfig()
    ray: RayConfig = RayConfig()

    @property
    def storage_uri(self) -> str:
        """``storage_path`` as Ray Train takes it: a URI as it is, a local path made absolute."""
        s = self.storage_path
        return s if "://" in s else str(Path(s).expanduser().resolve())

    @model_validator(mode="after")
    def _task_fits(self) -> JobConfig:
        if self.data.source is not None:
            self._table_fits()
        if self.data.name is not None:
            try:  # the use case says which scenarios it has and the task its stream needs
                usecase.check(self.data.name, self.data.scenario, self.model.task, self.data.options)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        if self.distill.student is not None and self.model.task != "classification":
            raise ValueError("distill.student learns a classifier's soft targets: model.task must be classification")
        if self.model.task == "regression":
            bad = [p for p in self.strategy.name.split("+") if p not in ("finetune", "replay")]
            if bad or self.strategy.class_balanced:
                raise ValueError(
                    "regression learns with strategy finetune or replay (not class_balanced); "
                    f"got {self.strategy.name!r}"
                )
            if self.drift.detector == "ddm":
                raise ValueError("drift.detector ddm needs 0/1 errors; a regression's errors are squared residuals")
            if self.stream.last_label_feature:
                raise ValueError("stream.last_label_feature is for classification")
        return self

    def _table_fits(self) -> None:
        d = self.data
        if self.model.task == "regression" and (d.classes or d.allow_new_classes):
            raise ValueError("data.classes / data.allow_new_classes are for classification; model.task is regression")
        if self.model.task == "classification" and not d.classes and not d.allow_new_classes:
            raise ValueError(
                "a classification table needs data.classes, or data.allow_new_classes: true "
                "(the classes then grow as labels are revealed)"
            )
        if d.allow_new_classes:
            if self.model.exits or self.meta.init != "fresh" or self.distill.student is not None:
                raise ValueError(
                    "data.allow_new_classes grows the head only: it does not go with model.exits, "
                    "meta.init reptile or distill.student"
                )
            bad = [p for p in self.strategy.name.split("+") if p not in ("finetune", "replay")]
            if self.train.num_workers != 1 or bad:
                raise ValueError(
                    "data.allow_new_classes grows the output layer: it needs train.num_workers 1 and "
                    f"strategy finetune or replay (got {self.train.num_workers} workers, "
                    f"{self.strategy.name!r})"
                )
        if self.stream.last_label_feature or self.stream.source != "replay":
            raise ValueError(
                "with data.source, the source is set there (not stream.source), and "
                "stream.last_label_feature is for built-in tables"
            )
        if self.model.kind == "cnn" and self.model.builder is None:
            raise ValueError(
                "model.kind cnn reads image rows; a table's rows are featurized columns (use mlp or a builder)"
            )


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Turn ``["train.lr=0.01", "data.max_rows=8000"]`` into a nested dict (values parsed as YAML).

    Raises:
        ConfigError: an item has no ``=``.
    """
    flat: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form section.field=value")
        flat[key.strip()] = yaml.safe_load(raw)
    return nest(flat)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` on top, mappings merged key by key (neither input is changed).

    Examples:
        >>> merge({"train": {"lr": 0.1, "seed": 0}}, {"train": {"lr": 0.01}})
        {'train': {'lr': 0.01, 'seed': 0}}
    """
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def nest(dotted: dict[str, Any]) -> dict[str, Any]:
    """Turn dotted keys into nested mappings. A mapping value and a deeper key under it are merged, whatever their
    order (a sweep may search ``model`` as whole architectures and ``model.exit_threshold`` beside it); the values
    are copied, never changed.

    Examples:
        >>> nest({"train.lr": 0.01, "model.hidden_sizes": [32]})
        {'train': {'lr': 0.01}, 'model': {'hidden_sizes': [32]}}
        >>> nest({"model.exit_threshold": 0.8, "model": {"hidden_sizes": [32], "exits": []}})
        {'model': {'hidden_sizes': [32], 'exits': [], 'exit_threshold': 0.8}}
    """
    out: dict[str, Any] = {}
    for key, value in sorted(dotted.items(), key=lambda kv: kv[0].count(".")):  # shallow keys first
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        value = copy.deepcopy(value)
        node[leaf] = merge(node[leaf], value) if isinstance(value, dict) and isinstance(node.get(leaf), dict) else value
    return out


def error_lines(exc: ValidationError) -> list[str]:
    """One line per invalid field: ``  section.field: message (got value)``."""
    return [
        f"  {'.'.join(str(x) for x in e['loc']) or '<root>'}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()
    ]


def load(path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None) -> JobConfig:
    """Load and validate a job config.

    Args:
        path: a YAML file; ``None`` gives the defaults.
        overrides: nested values applied on top (see :func:`parse_overrides`).

    Returns:
        The validated, frozen :class:`JobConfig`.

    Raises:
        ConfigError: the file is missing or not YAML, or fields are invalid; the
            message lists every invalid field with its location.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{p} must hold a mapping at the top level, got {type(raw).__name__}")
    try:
        return JobConfig.model_validate(merge(raw, overrides or {}))
    except ValidationError as exc:
        lines = error_lines(exc)
        where = f" in {path}" if path else ""
        raise ConfigError(f"{len(lines)} invalid config field(s){where}:\n" + "\n".join(lines)) from None
