"""A use case's experiment: the main job once per variant, on one Ray cluster, then one comparison.

Each variant is a list of ``section.field=value`` overrides of the use case's YAML. Every run
goes through the same machinery as the main job (stream -> Serve replicas over HTTP -> Train
workers -> controller) and writes its own report. This module gathers them into
``<output_dir>/<use case>/summary.{json,md}`` and ``accuracy.png`` (served vs static accuracy
per window, one panel per scenario).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import continuous
import matplotlib.pyplot as plt
import numpy as np
import ray
from ray import serve

from ddn_ray import config, evaluate

DYN, STATIC = "dynamic (served)", "static (frozen after training)"


def parse_args(
    description: str, default_config: Path, variants: dict[str, list[str]], argv: list[str] | None = None
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(default_config))
    parser.add_argument(
        "--variants", default=",".join(variants), help=f"comma-separated subset of: {', '.join(variants)}"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a field in every variant (after the variant's own overrides)",
    )
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in variants]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(variants)}")
    return args


def cli(name: str, description: str, variants: dict[str, list[str]], argv: list[str] | None = None) -> dict[str, Any]:
    """A use-case recipe's command line: ``--config`` (default ``jobs/configs/<name>.yaml``), ``--variants``, ``--set``."""
    args = parse_args(description, Path(__file__).parent / "configs" / f"{name}.yaml", variants, argv)
    return run(name, args.config, variants, args.variants.split(","), args.set)


def run(
    name: str, config_path: str, variants: dict[str, list[str]], selected: list[str], overrides: list[str]
) -> dict[str, Any]:
    """Run the selected variants one after the other and write the comparison.

    Returns:
        The summary: ``{"use_case", "variants": {name: {...scores...}}, "files": {...}}``.

    Raises:
        ConfigError: a variant's overrides make an invalid config (checked for all before any run).
    """
    cfgs = {
        v: config.load(
            config_path, config.merge(config.parse_overrides(variants[v]), config.parse_overrides(overrides))
        )
        for v in selected
    }
    first = next(iter(cfgs.values()))
    started = continuous.start_ray(first)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    reports: dict[str, dict[str, Any]] = {}
    try:
        for v, cfg in cfgs.items():
            print(f"\n=== {name}: variant {v} ({' '.join(variants[v]) or 'the YAML as is'})")
            run_name = cfg.run_name or f"{name}-{v.replace('/', '-')}-{stamp}"
            reports[v] = continuous.main(cfg.model_copy(update={"run_name": run_name}))
    finally:
        if started:
            serve.shutdown()
            ray.shutdown()
    out = Path(first.report.output_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "use_case": name,
        "config": config_path,
        "overrides": overrides,
        "variants": {v: summarize(r, variants[v]) for v, r in reports.items()},
    }
    summary["files"] = {
        "summary": str(out / "summary.json"),
        "table": str(out / "summary.md"),
        "plot": str(plot(name, reports, cfgs, out / "accuracy.png")),
    }
    (out / "summary.md").write_text(table(summary))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print("\n" + table(summary))
    print(f"files: {summary['files']}")
    return summary


def summarize(report: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """The figures of one run that the comparison table shows."""
    s = report.get("scores", {})
    regression = any("mse" in v for v in s.values())
    acc = {k: v["mse" if regression else "accuracy"] for k, v in s.items()}
    no_change = evaluate.REGRESSION_NO_CHANGE if regression else "no-change (same label delay)"
    return {
        "metric": "mse" if regression else "accuracy",
        "fault": report.get("fault"),
        "anomaly": report.get("anomaly"),
        "overrides": sets,
        "rows_scored": report["eval_rows"]["end"] - (report["eval_rows"]["start"] or 0)
        if report.get("eval_rows")
        else 0,
        "dynamic": acc.get(DYN),
        "static": acc.get(STATIC),
        "no_change": acc.get(no_change),
        "kappa_dynamic": s.get(DYN, {}).get("kappa"),
        "phases": report.get("phases", []),
        "versions": report["run"].get("versions_published"),
        "http_failed": report.get("http", {}).get("failed"),
        "latency_p50_s": report.get("http", {}).get("latency_s", {}).get("p50"),
        "drift": report.get("drift", {}).get("decisions"),
        "route": report["run"].get("traffic_route"),
        "wall_s": report["run"].get("wall_s"),
        "report": report.get("files", {}).get("report"),
    }


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _err(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def table(summary: dict[str, Any]) -> str:
    """Markdown: one row per variant; phase columns give served / static accuracy (or MSE) in each phase."""
    rows = summary["variants"]
    regression = any(r.get("metric") == "mse" for r in rows.values())
    fmt = _err if regression else _pct
    faults = any(r.get("fault") for r in rows.values())
    anomalies = any(r.get("anomaly") for r in rows.values())
    ids = sorted({p["phase"] for r in rows.values() for p in r["phases"]})
    head = [
        "variant",
        "dynamic (served)",
        "static",
        "no-change",
        *[f"phase {k}" for k in ids],
        *(["fault alarm delay (rows)", "false alarms"] if faults else []),
        *(["NAB std / low FP / low FN, served", "static"] if anomalies else []),
        "versions",
        "drift decisions",
        "wall",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v, r in rows.items():
        by_id = {p["phase"]: f"{fmt(p['dynamic'])} / {fmt(p['static'])}" for p in r["phases"]}
        phases = [by_id.get(k, "") for k in ids]
        fault = r.get("fault") or {}
        fault_cells = (
            [str(fault.get("delay_rows", "-")), str(fault.get("false_alarms_before_onset", "-"))] if faults else []
        )
        an = r.get("anomaly") or {}
        nab_cells = (
            [
                " / ".join(
                    f"{an.get(m, {}).get(p, float('nan')):.1f}"
                    for p in ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
                )
                for m in ("dynamic", "static")
            ]
            if anomalies
            else []
        )
        drift = ", ".join(f"{k} {n}" for k, n in (r["drift"] or {}).items()) or "-"
        lines.append(
            "| "
            + " | ".join(
                [
                    v,
                    fmt(r["dynamic"]),
                    fmt(r["static"]),
                    fmt(r["no_change"]),
                    *phases,
                    *fault_cells,
                    *nab_cells,
                    str(r["versions"]),
                    drift,
                    f"{r['wall_s']:.0f} s",
                ]
            )
            + " |"
        )
    lines.append("")
    what = "MSE of the standardised one-step change" if regression else "Accuracy"
    lines.append(f"{what} on the rows after the static model's training windows; phase cells: served / static.")
    return "\n".join(lines) + "\n"


def plot(name: str, reports: dict[str, dict[str, Any]], cfgs: dict[str, config.JobConfig], path: Path) -> Path:
    """Served accuracy per window for every variant, static dashed, one panel per scenario."""
    groups: dict[str, list[str]] = {}
    several = len({cfg.data.name for cfg in cfgs.values()}) > 1
    for v, cfg in cfgs.items():
        groups.setdefault(f"{cfg.data.name} {cfg.data.scenario}" if several else cfg.data.scenario, []).append(v)
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4), squeeze=False)
    for ax, (scenario, vs) in zip(axes[0], groups.items()):
        for i, v in enumerate(vs):
            rows = dict(np.load(Path(reports[v]["files"]["predictions"])))
            if "no_change" in rows:
                _, curves = evaluate.score_regression_rows(rows, reports[v]["eval_rows"]["static_windows"])
                regression = True
            else:
                _, curves = evaluate.score_rows(
                    rows, reports[v]["eval_rows"]["static_windows"], reports[v]["eval_rows"]["num_classes"]
                )
                regression = False
            w, a = curves[DYN]
            ax.plot(w, a, label=f"{v} (served)", lw=1.2)
            if i == 0 and "static" in curves:
                ax.plot(*curves["static"], "k--", lw=1, label="static (frozen)")
            change = np.flatnonzero(np.diff(rows["phase"])) + 1
            if i == 0:
                for c in change:
                    ax.axvline(rows["window"][c], color="grey", lw=0.6, ls=":")
        ax.set(title=f"{name}: {scenario}", xlabel="window")
        if regression:
            ax.set(ylabel="one-step MSE per window (standardised)", yscale="log")
        else:
            ax.set(ylabel="accuracy per window", ylim=(0, 1))
        ax.legend(fontsize=7, loc="upper left" if regression else "lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
