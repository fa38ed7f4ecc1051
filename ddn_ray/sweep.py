"""Ray Tune sweeps of the adaptation hyperparameters, scored prequentially on a replayed stream.

Each trial is a plain function trainable (no Train workers inside Tune: see
``../shared/RAY_NOTES.md``) that replays the recorded stream *in time order* through the
same :class:`~ddn_ray.learner.OnlineLearner` as the main job's workers: every window is
predicted first, then learned (test-then-train). The objective, ``prequential_accuracy``,
is the accuracy of those predictions over every row so far; there is no shuffled holdout.
A trial reports every ``report_every_rows`` rows, so one Tune iteration is the same stretch
of the stream for every trial whatever its window size, and ASHA compares trials at equal
stream positions. With PBT every report carries a ``tune.Checkpoint`` (weights, learner
state, stream position, running counts), so exploit copies a better trial's weights and the
copy resumes the stream where that trial was.

The sweep YAML (``jobs/configs/sweep_elec2.yaml``) names the base job config, the search
space by dotted job-config keys, and the scheduler. The best settings are written as a job
YAML that ``jobs/continuous.py`` accepts unchanged.

Sources: Li et al. (2020), "A System for Massively Parallel Hyperparameter Tuning" (ASHA);
Jaderberg et al. (2017), "Population Based Training of Neural Networks" (PBT); Gama,
Sebastião & Rodrigues (2013), "On evaluating stream learning algorithms" (prequential).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ddn_ray import config, pareto
from ddn_ray.errors import ConfigError

__all__ = ["SchedulerConfig", "SweepConfig", "domain", "load", "run", "run_trial", "trial_job_config"]

METRIC = "prequential_accuracy"
DOMAINS = ("choice", "grid", "uniform", "loguniform", "randint", "qloguniform")


class SchedulerConfig(BaseModel):
    """The Tune trial scheduler.

    ``params`` go to ``ASHAScheduler`` (e.g. ``grace_period``, ``reduction_factor``) or
    ``PopulationBasedTraining`` (e.g. ``perturbation_interval``, ``quantile_fraction``);
    ``time_attr`` is always ``training_iteration`` (one iteration: ``report_every_rows`` rows).
    ``mutations`` (PBT only) are ``hyperparam_mutations`` in the search-space syntax.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: Literal["fifo", "asha", "pbt"] = "asha"
    params: dict[str, Any] = Field(default_factory=dict)
    mutations: dict[str, dict[str, Any]] = Field(default_factory=dict)


class SweepConfig(BaseModel):
    """A sweep: base job config, search space, scheduler and budget.

    Search-space values are one-key mappings: ``{choice: [...]}``, ``{grid: [...]}``,
    ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{randint: [lo, hi]}`` (hi
    exclusive) or ``{qloguniform: [lo, hi, q]}``; keys are dotted job-config fields
    (``train.lr``, ``strategy.memory_size``, ``model.hidden_sizes``, ...).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = "sweep"
    job: str = Field(description="the base job YAML; every trial starts from it")
    stream: str = Field(
        "ddn_ray.usecase:stream_table",
        description="the 'package.module:function' "
        "(JobConfig) -> ddn_ray.stream.Table that loads the stream every trial replays",
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="dotted keys fixed for every trial and the best YAML"
    )
    max_rows: int | None = Field(
        None, gt=0, description="trials replay only the first max_rows rows (not written to the best YAML)"
    )
    search: dict[str, dict[str, Any]] = Field(default_factory=dict)
    scheduler: SchedulerConfig = SchedulerConfig()
    num_samples: int = Field(8, ge=1, description="trials (times every grid point)")
    max_concurrent_trials: int = Field(2, ge=1)
    cpus_per_trial: float = Field(0.5, gt=0)
    report_every_rows: int = Field(1000, gt=0, description="one Tune iteration")
    seed: int = 0
    pareto_tolerance: float = Field(
        0.005,
        ge=0,
        description="architecture search: the chosen trial is the cheapest (mean MACs) of the Pareto front "
        "within this much accuracy of its best",
    )
    reference: dict[str, Any] = Field(
        default_factory=dict,
        description="architecture search: the settings of the trial the Pareto table compares with (e.g. the "
        "default model); the first finished trial with these settings",
    )
    output_dir: str = "runs/sweeps"
    storage_path: str = "runs/tune"
    num_cpus: int | None = Field(4, gt=0, description="logical CPUs of a local Ray cluster started by the sweep")

    @field_validator("search")
    @classmethod
    def _domains(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for key, spec in v.items():
            domain(spec, key)
        return v

    @model_validator(mode="after")
    def _pbt_mutations(self) -> SweepConfig:
        for key, spec in self.scheduler.mutations.items():
            domain(spec, key)
            if key not in self.search:
                raise ValueError(f"scheduler.mutations.{key}: PBT can only mutate a key of search")
        if self.scheduler.mutations and self.scheduler.name != "pbt":
            raise ValueError("scheduler.mutations is only for scheduler.name 'pbt'")
        return self


def domain(spec: dict[str, Any], key: str = "<key>") -> Any:
    """A Tune search domain from its YAML form.

    Raises:
        ValueError: not a one-key mapping of a known kind, or bad bounds.

    Examples:
        >>> domain({"choice": [1, 2]}).categories
        [1, 2]
        >>> domain({"loguniform": [1e-4, 1e-2]}).lower
        0.0001
    """
    from ray import tune

    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DOMAINS:
        raise ValueError(f"search.{key}: expected one of {DOMAINS} as a one-key mapping, got {spec!r}")
    kind, args = next(iter(spec.items()))
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise ValueError(f"search.{key}.{kind}: expected a non-empty list, got {args!r}")
        return tune.choice(args) if kind == "choice" else tune.grid_search(args)
    n = 3 if kind == "qloguniform" else 2
    if not isinstance(args, list) or len(args) != n or not args[0] < args[1]:
        raise ValueError(
            f"search.{key}.{kind}: expected [low, high{', q' if n == 3 else ''}] with low < high, got {args!r}"
        )
    return getattr(tune, kind)(*args)


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """Load and check a sweep YAML; also check that a sample of the space makes a valid job config.

    Raises:
        ConfigError: the file is missing, not YAML, or a field (or a sampled job config) is invalid.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sweep config {p} does not exist")
    raw = yaml.safe_load(p.read_text()) or {}
    try:
        cfg = SweepConfig.model_validate(config.merge(raw, overrides or {}))
    except ValidationError as exc:
        lines = config.error_lines(exc)
        raise ConfigError(f"{len(lines)} invalid sweep field(s) in {p}:\n" + "\n".join(lines)) from None
    base = _base_raw(cfg)
    sample = {k: _values(spec)[0] for k, spec in cfg.search.items()}
    trial_job_config(base, {**cfg.overrides, **sample}, cfg.max_rows)  # raises ConfigError naming the field
    for key, spec in cfg.search.items():  # every listed choice and both bounds make a valid job config
        for value in _values(spec)[1:]:
            trial_job_config(base, {**cfg.overrides, **sample, key: value}, cfg.max_rows)
    try:
        _scheduler(cfg, 10)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"scheduler.params {cfg.scheduler.params} rejected by {cfg.scheduler.name}: {exc}") from None
    return cfg


def _values(spec: dict[str, Any]) -> list[Any]:
    kind, args = next(iter(spec.items()))
    if kind in ("choice", "grid"):
        return list(args)
    return [int(args[0]), int(args[1]) - 1] if kind == "randint" else [float(args[0]), float(args[1])]


def _base_raw(cfg: SweepConfig) -> dict[str, Any]:
    p = Path(cfg.job)
    if not p.is_file():
        raise ConfigError(f"sweep job config {p} does not exist")
    return yaml.safe_load(p.read_text()) or {}


def trial_job_config(base: dict[str, Any], settings: dict[str, Any], max_rows: int | None = None) -> config.JobConfig:
    """The job config of one trial: ``base`` (a raw job YAML mapping) with dotted ``settings`` on top.

    Raises:
        ConfigError: a setting names no job-config field or has an invalid value.
    """
    extra = config.nest(settings)
    if max_rows is not None:
        extra = config.merge(extra, {"data": {"max_rows": max_rows}})
    return config.load(None, config.merge(base, extra))


def run_trial(params: dict[str, Any]) -> None:
    """The Tune function trainable: replay the stream test-then-train, report every ``report_every_rows`` rows.

    ``params``: the trial's dotted job-config settings plus ``_base`` (raw base job mapping),
    ``_max_rows``, ``_every`` (rows per report) and ``_checkpoint`` (report checkpoints, for PBT).

    Reports ``prequential_accuracy`` (every row so far, predicted before it was learned, each by its early
    exit at ``model.exit_threshold``: :func:`ddn_ray.exits.early_exit`), ``recent_accuracy`` (rows since the
    previous report), ``rows``, ``mean_macs`` (multiply-accumulates per answer so far, counted per exit by
    :func:`ddn_ray.exits.exit_macs`), ``windows``,
    ``drift_signals``, ``decisions`` (by kind, as JSON), ``offset`` (next row), ``exploited`` (PBT, as JSON: ``[[source, into, offset], ...]``, every exploit
    in the lineage of this trial's weights, oldest first: trial ``into`` took over ``source``'s weights at
    row ``offset``; a checkpoint carries the list, so the last entry is this trial's own latest exploit and
    earlier ones may name this trial as a source) and ``stream_end``.
    """
    import torch
    from ray import tune

    from ddn_ray import exits, registry, stream
    from ddn_ray.train import in_process_learner

    torch.set_num_threads(1)
    settings = {k: v for k, v in params.items() if not k.startswith("_")}
    cfg = trial_job_config(params["_base"], settings, params["_max_rows"])
    every, with_ckpt = int(params["_every"]), bool(params["_checkpoint"])
    table = registry.load(params["_stream"], what="sweep.stream")(cfg)
    lag = cfg.stream.last_label_feature
    names = stream.input_names(table.feature_names, lag)
    learner = in_process_learner(cfg, names, table.num_classes)
    model = learner.model
    costs = exits.exit_macs(learner.raw, len(names))  # per exit; a reset keeps the architecture
    me = tune.get_context().get_trial_id()
    pos = {
        "offset": 0,
        "correct": 0,
        "rows": 0,
        "windows": 0,
        "recent": [0, 0],
        "decisions": {},
        "owner": me,
        "exploited": [],
        "macs": 0,
    }
    ckpt = tune.get_checkpoint()
    if ckpt is not None:  # PBT exploit or a restored trial: continue the stream where the checkpoint was
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", weights_only=False)
        model.load_state_dict(state["model"])
        learner.load_state_dict(state["learner"])
        pos = state["position"]
        if pos["owner"] != me:  # PBT exploit: these weights and counts are another trial's, from this row on
            pos["exploited"] = [*pos["exploited"], [pos["owner"], me, pos["offset"]]]
            pos["owner"] = me
        for group in learner.optimizer.param_groups:  # this trial's (possibly mutated) learning rate
            group["lr"] = group["initial_lr"] = cfg.train.lr
        if hasattr(learner.scheduler, "base_lrs"):
            learner.scheduler.base_lrs = [cfg.train.lr] * len(learner.scheduler.base_lrs)
    if pos["offset"] % cfg.stream.window_size:
        raise ValueError(f"checkpoint offset {pos['offset']} is not a multiple of window_size {cfg.stream.window_size}")
    windows = stream.iter_windows(stream.ReplaySource(table, cfg.stream.window_size, pos["offset"]), lag)

    def report(final: bool) -> None:
        metrics = {
            METRIC: pos["correct"] / max(pos["rows"], 1),
            "recent_accuracy": pos["recent"][0] / max(pos["recent"][1], 1),
            "rows": pos["rows"],
            "mean_macs": pos.get("macs", 0) / max(pos["rows"], 1),
            "windows": pos["windows"],
            "drift_signals": sum(pos["decisions"].values()),
            "decisions": json.dumps(pos["decisions"], sort_keys=True),
            "offset": pos["offset"],
            "exploited": json.dumps(pos["exploited"]),
            "stream_end": final,
        }
        pos["recent"] = [0, 0]
        if not with_ckpt:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(
                {"model": learner.raw.state_dict(), "learner": learner.state_dict(), "position": pos},
                Path(d) / "state.pt",
            )
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    for w in windows:
        x, y = torch.from_numpy(w.features), torch.from_numpy(w.labels)
        if len(w):
            model.eval()
            out, exit_of = exits.early_exit(model, x, cfg.model.exit_threshold, cfg.model.exit_criterion)
            hits = int((out.argmax(1) == y).sum())
            pos["macs"] = pos.get("macs", 0) + sum(costs[i] for i in exit_of.tolist())
            pos["correct"] += hits
            pos["rows"] += len(w)
            pos["recent"][0] += hits
            pos["recent"][1] += len(w)
            _, event = learner.step(w.index, w.start, w.end, x, y)
            if event is not None:
                pos["decisions"][event["decision"]] = pos["decisions"].get(event["decision"], 0) + 1
        pos["offset"], pos["windows"] = w.end, pos["windows"] + 1
        if w.end >= len(table):
            break
        if pos["rows"] // every > (pos["rows"] - len(w)) // every:  # this window crossed a report boundary
            report(final=False)
    report(final=True)


def _report_log() -> Any:
    """A Tune callback that keeps, in the driver, every trial's reports as ``[rows, score]`` pairs, in order.

    The record the plot and the summary read. A trial's own ``result.json`` (what
    ``Result.metrics_dataframe`` reads) is not: after PBT stopped a trial and started it again (to exploit
    it, or to free its CPUs for another's exploit), that file held only the reports since the restart,
    while the trial's ``progress.csv`` held them all (Ray 2.60, seen on the PBT sweep of Elec2).
    """
    from ray import tune

    class ReportLog(tune.Callback):
        def __init__(self) -> None:
            self.reports: dict[str, list[list[float]]] = {}

        def on_trial_result(
            self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
        ) -> None:
            self.reports.setdefault(trial.trial_id, []).append([int(result["rows"]), float(result[METRIC])])

    return ReportLog()


def _scheduler(cfg: SweepConfig, max_t: int) -> Any:
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    s = cfg.scheduler
    if s.name == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=max_t, **s.params)
    if s.name == "pbt":
        mutations = {k: domain(v, k) for k, v in s.mutations.items()}
        params = {"perturbation_interval": 2, **s.params}
        return PopulationBasedTraining(time_attr="training_iteration", hyperparam_mutations=mutations, **params)
    return None


def run(cfg: SweepConfig, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the sweep on the current Ray cluster (or a local one it starts) and write its outputs.

    Writes, under ``<output_dir>/<name>/``: ``results.csv`` (trial, settings, score, rows,
    iterations, wall time, status), ``best.yaml`` (the base job YAML with the best settings:
    a config the main job accepts unchanged), ``scores.png`` (score over the stream per
    trial), ``pareto.md`` / ``pareto.png`` (the front of accuracy against mean MACs per answer,
    :mod:`ddn_ray.pareto`), ``chosen.yaml`` (the front's chosen trade-off as a job YAML) and ``summary.json``.

    Returns:
        The summary: ``best`` (trial, settings, score), ``trials`` (rows of the table, each with its
        ``reports``: every report's ``[rows, score]`` in order), ``files``.

    Raises:
        RuntimeError: no trial replayed the whole stream (e.g. every trial failed).
    """
    import ray
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from ddn_ray import localcluster, registry

    t0 = time.monotonic()
    started = False
    if not ray.is_initialized():
        localcluster.before_init(metrics=False)
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, log_to_driver=False)
        localcluster.after_init()
        started = True
    base = _base_raw(cfg)
    probe = trial_job_config(base, cfg.overrides, cfg.max_rows)
    total_rows = len(registry.load(cfg.stream, what="sweep.stream")(probe))
    max_t = math.ceil(total_rows / cfg.report_every_rows)
    space: dict[str, Any] = {k: domain(v, k) for k, v in cfg.search.items()}
    space |= dict(cfg.overrides)
    if probe.data.path is not None and "://" not in probe.data.path:  # trials run in their own directories
        space["data.path"] = str(Path(probe.data.path).expanduser().resolve())
    source = probe.data.source
    if source is not None and source.kind == "table" and "://" not in source.uri:  # ${VAR}s as the driver has them
        space["data.source.uri"] = str(Path(os.path.expandvars(source.uri)).expanduser().absolute())
    space |= {
        "train.seed": probe.train.seed,
        "_base": base,
        "_max_rows": cfg.max_rows,
        "_stream": cfg.stream,
        "_every": cfg.report_every_rows,
        "_checkpoint": cfg.scheduler.name == "pbt",
    }
    storage = str(Path(cfg.storage_path).expanduser().resolve()) if "://" not in cfg.storage_path else cfg.storage_path
    name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    log = _report_log()
    tuner = tune.Tuner(
        tune.with_resources(run_trial, {"cpu": cfg.cpus_per_trial}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            scheduler=_scheduler(cfg, max_t),
            # Tune ignores TuneConfig.max_concurrent_trials with a search-generator instance: the generator limits
            search_alg=BasicVariantGenerator(random_state=cfg.seed, max_concurrent=cfg.max_concurrent_trials),
            num_samples=cfg.num_samples,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            verbose=0,
            # A trial's last report ends it before the scheduler sees it: PBT could otherwise exploit a trial
            # whose stream is over, and the copy would replay nothing and report the source's score as its own.
            stop={"stream_end": True},
            callbacks=[log],
            # Keep every checkpoint: PBT may exploit one a trial has already moved past.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        ),
    )
    grid = tuner.fit()
    results = [grid[i] for i in range(len(grid))]
    trials = []
    for r in results:
        settings = {k: (r.config or {})[k] for k in cfg.search}
        row = {
            "trial": (r.metrics or {}).get("trial_id", "?"),
            "settings": settings,
            "score": r.metrics.get(METRIC) if r.metrics else None,
            "rows": (r.metrics or {}).get("rows", 0),
            "mean_macs": (r.metrics or {}).get("mean_macs"),
            "iterations": (r.metrics or {}).get("training_iteration", 0),
            "wall_s": (r.metrics or {}).get("time_total_s"),
            "decisions": (r.metrics or {}).get("decisions", "{}"),
            "exploited": json.loads((r.metrics or {}).get("exploited", "[]")),
            "reports": log.reports.get((r.metrics or {}).get("trial_id", "?"), []),
            "status": "error" if r.error else ("complete" if (r.metrics or {}).get("stream_end") else "stopped early"),
        }
        trials.append(row)
    finished = [t for t in trials if t["status"] == "complete" and t["score"] is not None]
    if not finished:
        errors = [str(r.error)[:500] for r in results if r.error]
        raise RuntimeError(f"no trial replayed the whole stream; errors: {errors}")
    best = max(finished, key=lambda t: t["score"])
    out = Path(out_dir or cfg.output_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "results": str(out / "results.csv"),
        "best": str(out / "best.yaml"),
        "plot": str(out / "scores.png"),
        "summary": str(out / "summary.json"),
    }
    _write_csv(trials, cfg, out / "results.csv")
    best_yaml = write_best_yaml(cfg, base, best, out / "best.yaml", name)
    plot_scores(trials, cfg, out / "scores.png", f"{name}: prequential accuracy ({cfg.scheduler.name})")
    front = pareto.front(finished)
    chosen = pareto.choose(front, cfg.pareto_tolerance)
    reference = next(
        (t for t in finished if cfg.reference and all(t["settings"].get(k) == v for k, v in cfg.reference.items())),
        None,
    )
    files |= {
        "pareto": str(out / "pareto.md"),
        "pareto_plot": str(out / "pareto.png"),
        "chosen": str(out / "chosen.yaml"),
    }
    Path(files["pareto"]).write_text(pareto.format_front(front, chosen, reference) + "\n")
    pareto.plot_front(finished, front, out / "pareto.png", f"{name}: accuracy against compute")
    write_best_yaml(
        cfg,
        base,
        chosen,
        out / "chosen.yaml",
        name,
        what=f"Chosen (cheapest of the Pareto front within {cfg.pareto_tolerance:g} of its best accuracy)",
    )
    summary = {
        "name": name,
        "scheduler": cfg.scheduler.name,
        "metric": METRIC,
        "rows": total_rows,
        # each exploit once (a trial that took over weights also took over their lineage)
        "pbt_exploits": len({tuple(e) for t in trials for e in t["exploited"]}),
        "wall_s": time.monotonic() - t0,
        "best": best,
        "best_yaml": best_yaml,
        "pareto": front,
        "chosen": chosen,
        "reference": reference,
        "trials": trials,
        "files": files,
        "tune_path": str(Path(storage) / name) if "://" not in storage else f"{storage}/{name}",
    }
    Path(files["summary"]).write_text(json.dumps(summary, indent=2, default=str))
    print(format_table(summary))
    if started:
        ray.shutdown()
    return summary


def _write_csv(trials: list[dict[str, Any]], cfg: SweepConfig, path: Path) -> None:
    import csv

    keys = list(cfg.search)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", *keys, "score", "rows", "iterations", "wall_s", "status", "decisions"])
        for t in trials:
            w.writerow(
                [
                    t["trial"],
                    *[json.dumps(t["settings"][k]) for k in keys],
                    t["score"],
                    t["rows"],
                    t["iterations"],
                    t["wall_s"],
                    t["status"],
                    t["decisions"],
                ]
            )


def write_best_yaml(
    cfg: SweepConfig, base: dict[str, Any], best: dict[str, Any], path: Path, name: str, what: str = "Best"
) -> str:
    """Write the base job YAML with ``overrides`` and a trial's (the best's) settings applied; return its text.

    The slice (``max_rows``) is not carried over: the best settings are for the whole stream.
    """
    merged = config.merge(base, config.nest({**cfg.overrides, **best["settings"]}))
    config.JobConfig.model_validate(merged)  # what the main job will do with it
    header = (
        f"# {what} trial {best['trial']} of sweep {name} ({cfg.scheduler.name}, {len(cfg.search)} searched keys):\n"
        f"#   prequential accuracy {best['score']:.4f} on the first {best['rows']:,} rows of the replayed stream.\n"
        f"# Base: {cfg.job}; searched: {', '.join(f'{k}={v!r}' for k, v in best['settings'].items())}\n"
        f"#   python jobs/continuous.py --config {path}\n"
        f"#   ddn-ray run --config {path}\n"
        f"# To submit it, copy it under jobs/configs/ first (runs/ is .gitignored, so not uploaded):\n"
        f"#   ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/continuous.py --config jobs/configs/<it>.yaml\n"
    )
    text = header + yaml.safe_dump(merged, sort_keys=False, default_flow_style=None)
    path.write_text(text)
    return text


def plot_scores(trials: list[dict[str, Any]], cfg: SweepConfig, path: Path, title: str) -> Path:
    """Prequential accuracy against rows replayed, one line per trial, from each trial's ``reports``.

    ASHA's stops show as short lines; a PBT exploit as a jump, where a trial went on from another's
    checkpoint (its counts and stream position), and as a new segment where that checkpoint was behind.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for t in trials:
        if not t["reports"]:
            continue
        label = ", ".join(f"{k.split('.')[-1]}={_short(t['settings'][k])}" for k in cfg.search)
        # an exploit from a checkpoint behind this trial goes back in the stream: a new segment, same colour
        segments: list[list[list[float]]] = []
        for report in t["reports"]:
            if not segments or report[0] <= segments[-1][-1][0]:
                segments.append([])
            segments[-1].append(report)
        color = None
        for i, seg in enumerate(segments):
            rows, scores = zip(*seg, strict=True)
            (line,) = ax.plot(rows, scores, marker=".", lw=1, color=color, label=None if i else label[:60])
            color = line.get_color()
    ax.set_xlabel("rows replayed (test-then-train)")
    ax.set_ylabel("prequential accuracy so far")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    # PBT mutates a trial's settings as it goes: the legend gives those it ended with
    ax.legend(fontsize=6, loc="lower right", title="settings at the end" if cfg.scheduler.name == "pbt" else None)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def format_table(summary: dict[str, Any]) -> str:
    """The results as a Markdown table, best first."""
    trials = sorted(summary["trials"], key=lambda t: -(t["score"] or -1))
    keys = list(trials[0]["settings"]) if trials else []
    lines = [
        (
            f"sweep {summary['name']} ({summary['scheduler']}), metric {summary['metric']}, "
            f"{summary['rows']:,} rows, {summary['wall_s']:.0f} s"
        ),
        "| trial | " + " | ".join(k for k in keys) + " | score | mean MACs | rows | wall s | status |",
        "|---" * (len(keys) + 6) + "|",
    ]
    for t in trials:
        score = f"{t['score']:.4f}" if t["score"] is not None else "-"
        wall = f"{t['wall_s']:.1f}" if t["wall_s"] is not None else "-"
        macs = f"{t['mean_macs']:,.0f}" if t.get("mean_macs") is not None else "-"
        lines.append(
            f"| {t['trial']} | "
            + " | ".join(_short(t["settings"][k]) for k in keys)
            + f" | {score} | {macs} | {t['rows']:,} | {wall} | {t['status']} |"
        )
    if summary["scheduler"] == "pbt":
        lines.append(f"PBT exploits (a trial continued from a better trial's checkpoint): {summary['pbt_exploits']}")
    lines.append(
        f"best: trial {summary['best']['trial']} {summary['best']['settings']} -> {summary['best']['score']:.4f}"
    )
    if summary.get("chosen"):
        c = summary["chosen"]
        lines.append(
            f"chosen (Pareto front, {len(summary['pareto'])} points): trial {c['trial']} {c['settings']} -> "
            f"{c['score']:.4f} at {c['mean_macs']:,.0f} MACs per answer"
        )
        lines += ["", "Pareto front of prequential accuracy against mean MACs per answer:", ""]
        lines.append(pareto.format_front(summary["pareto"], c, summary.get("reference")))
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> dict[str, Any]:
    """``jobs/sweep.py`` and ``ddn-ray tune``: ``--config SWEEP.yaml [--set key=value ...]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="ddn-ray tune",
        description="Ray Tune sweep of adaptation hyperparameters (prequential score).",
        epilog="example: ddn-ray tune --config jobs/configs/sweep_elec2.yaml --set num_samples=4 --set scheduler.name=pbt",
    )
    parser.add_argument("--config", default="jobs/configs/sweep_elec2.yaml")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a sweep field (e.g. num_samples=4, max_rows=4000)",
    )
    args = parser.parse_args(argv)
    return run(load(args.config, config.parse_overrides(args.set)))
