"""Every results table in the docs, generated from the files under ``benchmarks/results/``.

A benchmark prints its figures; its output is kept in ``benchmarks/results/<name>.txt`` (lines that
start with ``# `` say where a block came from: the command, the date, the commit). This script

* writes one page per results file, ``docs/results/<name>.md``, and their index;
* fills every region of the docs and the README marked

  ``<!-- results: NAME#K -->`` ... ``<!-- /results -->``

  with the K-th Markdown table of ``benchmarks/results/NAME`` (``NAME#text``: the whole file as text;
  ``elec2_main_job.json#summary`` / ``#scores``: the tables of the main job's recorded report).

``python docs/gen_results.py`` writes; ``--check`` writes nothing and exits 1 naming each file that is not
what the results files give (CI runs it); ``--record-run runs/<run>`` keeps a ``make run`` report's figures
as ``benchmarks/results/elec2_main_job.json``, the source of the main job's tables.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
PAGES = DOCS / "results"
MARKER = re.compile(r"(<!-- results: (?P<spec>[^ ]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)

# name -> (title, the command that writes it)
TITLES: dict[str, tuple[str, str]] = {
    "elec2_main_job": ("The main job on all of Elec2", "make run; python docs/gen_results.py --record-run runs/<run>"),
    "window_size": ("Choosing the window size", "python benchmarks/window_size.py"),
    "freshness": ("Freshness: publish to every replica serving", "make bench-freshness"),
    "elec2_strategies": ("Strategies and policies on Elec2", "python benchmarks/elec2_strategies.py"),
    "synthetic_drift": ("Detectors and policies on synthetic drift", "python benchmarks/synthetic_drift.py"),
    "fashion_mnist_tasks": ("Forgetting: Fashion-MNIST task sequences", "python benchmarks/fashion_mnist_tasks.py"),
    "byo_table_cost": ("The cost of a user's table", "python benchmarks/byo_table_cost.py"),
    "unseen_streams": ("Streams no test knows", "python benchmarks/unseen_streams.py"),
    "service_load": ("The service under load", "python benchmarks/service_load.py"),
    "sweep_elec2": ("ASHA sweep on Elec2", "ddn-ray tune --config jobs/configs/sweep_elec2.yaml"),
    "sweep_elec2_pbt": ("PBT sweep on Elec2", "ddn-ray tune --config jobs/configs/sweep_elec2_pbt.yaml"),
    "dynamic_networks": (
        "Dynamic networks: early exit, int8 and a distilled student against the plain model",
        "python benchmarks/dynamic_networks.py",
    ),
    "meta_init": ("Meta-init (Reptile) against fresh resets: recovery after drift", "python benchmarks/meta_init.py"),
    "sweep_nas_elec2": (
        "Architecture search on Elec2: the Pareto front",
        "ddn-ray tune --config jobs/configs/sweep_nas_elec2.yaml",
    ),
    "gym_dynamics": ("Forward dynamics in process, and the fault alarm", "python benchmarks/gym_dynamics.py"),
    "faults": ("Faults under load: a replica and a Train worker killed", "python benchmarks/faults.py"),
    "fuzz_serve": ("Fuzzing the Serve apps against their OpenAPI", "python benchmarks/fuzz_serve.py"),
    "swaps": ("1,000 weight swaps under load", "python benchmarks/swaps.py"),
    "job_vs_learner": (
        "The main job against its own learner, with 2 workers and under outside load",
        "python benchmarks/job_vs_learner.py --workers 2 --outside-rps 20",
    ),
    "serve_vs_plain": ("Serve against a plain FastAPI server", "python benchmarks/serve_vs_plain.py"),
    "two_nodes": ("The main job on two Ray nodes", "python benchmarks/two_nodes.py"),
    "nab_job_learner": ("NAB: the whole corpus", "python benchmarks/nab_job_learner.py"),
    "nab_machine_temperature": (
        "NAB: predictive maintenance on machine temperature",
        "python benchmarks/nab_machine_temperature.py",
    ),
    "usecase_fashion_mnist": ("Use case: Fashion-MNIST under drift", "make fashion-mnist"),
    "usecase_bbc_news": ("Use case: BBC News under topic drift", "make bbc-news"),
    "usecase_gym_dynamics": ("Use case: forward dynamics under drifting physics", "make gym-dynamics"),
    "usecase_nab": ("Use case: NAB series through the main job", "make nab"),
}


def _blocks(text: str) -> list[tuple[str, list[str]]]:
    """The file as ``(kind, lines)`` blocks: ``table`` (Markdown, with its separator row), ``note`` (``# ``
    lines) and ``text`` (anything else, blank lines included)."""
    out: list[tuple[str, list[str]]] = []
    for line in text.rstrip("\n").split("\n"):
        kind = "table" if line.startswith("|") else "note" if line.startswith("# ") else "text"
        if out and out[-1][0] == kind:
            out[-1][1].append(line)
        else:
            out.append((kind, [line]))
    # a run of | lines without a separator row is not a Markdown table (a row printed alone): text
    fixed: list[tuple[str, list[str]]] = []
    for kind, lines in out:
        if kind == "table" and not (len(lines) >= 2 and re.fullmatch(r"\|( *:?-+:? *\|)+", lines[1])):
            kind = "text"
        if fixed and fixed[-1][0] == kind == "text":
            fixed[-1][1].extend(lines)
        else:
            fixed.append((kind, lines))
    return fixed


def tables(name: str) -> list[str]:
    """The Markdown tables of ``benchmarks/results/<name>``, in file order (the newest run first where a
    file keeps several)."""
    return ["\n".join(lines) for kind, lines in _blocks((RESULTS / name).read_text()) if kind == "table"]


def _fence(lines: list[str]) -> str:
    body = "\n".join(lines).strip("\n")
    return f"```text\n{body}\n```" if body.strip() else ""


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _main_job_tables(report: dict[str, Any]) -> dict[str, str]:
    run, http, fresh, drift = report["run"], report["http"], report["freshness_s"], report["drift"]
    decisions = ", ".join(f"{n} `{k}`" for k, n in sorted(drift["decisions"].items(), key=lambda kv: -kv[1]))
    rec = drift["recovery_windows"]
    summary = "\n".join(
        [
            "| figure | value |",
            "|---|---|",
            (
                f"| rows served / trained | {run['rows_served']:,} / {run['rows_trained']:,} "
                f"({run['rows_quarantined']} quarantined) |"
            ),
            f"| windows of {run['window_size']} rows | {run['windows']:,} |",
            f"| Train workers / Serve replicas | {run['num_workers']} / {run['num_replicas']} |",
            f"| model versions published / rejected | {run['versions_published']:,} / {run['versions_rejected']} |",
            (
                f"| drift signals → decisions | {drift['signals']} → {decisions}; recovery p50 / p90: "
                f"{rec['p50']:.0f} / {rec['p90']:.0f} windows |"
            ),
            (
                f"| freshness, publish → every replica serving, p50 / p99 | {1e3 * fresh['p50']:.1f} ms / "
                f"{1e3 * fresh['p99']:.1f} ms |"
            ),
            (
                f"| HTTP latency p50 / p99 (less the hold in the replica), requests / failed | "
                f"{1e3 * http['latency_s']['p50']:.1f} ms / {1e3 * http['latency_s']['p99']:.1f} ms, "
                f"{http['requests']:,} / {http['failed']} |"
            ),
            *(
                [
                    (
                        f"| a request's hold in its replica until the window before was learned, p50 / p99 | "
                        f"{1e3 * held['p50']:.1f} ms / {1e3 * held['p99']:.1f} ms |"
                    )
                ]
                if (held := http.get("held_s"))
                else []
            ),
            (
                f"| rows since the serving model's newest label, p50 / max | {run['label_delay_rows']['p50']:.0f} / "
                f"{run['label_delay_rows']['max']:.0f} |"
            ),
            f"| start → first trained version served | {run['first_update_served_s']:.1f} s |",
            (
                f"| peak memory, driver + local Ray | RSS {run['peak_rss_bytes'] / 2**30:.2f} GiB, "
                f"PSS {run['peak_pss_bytes'] / 2**30:.2f} GiB |"
            ),
            f"| wall time of the job | {run['wall_s']:.1f} s |",
        ]
    )
    rows = ["| model | accuracy | kappa | kappa-temporal |", "|---|---|---|---|"]
    for name, s in report["scores"].items():
        acc = _pct(s["accuracy"])
        name, acc = (f"**{name}**", f"**{acc}**") if "served" in name else (name, acc)
        rows.append(f"| {name} | {acc} | {s['kappa']:.3f} | {s['kappa_temporal']:.3f} |")
    return {"summary": summary, "scores": "\n".join(rows)}


def region(spec: str) -> str:
    """What a ``<!-- results: spec -->`` region holds.

    Raises:
        ValueError: the file or the table does not exist.
    """
    name, _, part = spec.partition("#")
    path = RESULTS / name
    if not path.is_file():
        raise ValueError(f"{spec}: no benchmarks/results/{name}")
    if name.endswith(".json"):
        made = _main_job_tables(json.loads(path.read_text()))
        if part not in made:
            raise ValueError(f"{spec}: {name} gives {sorted(made)}")
        return made[part]
    if part == "text":
        return _fence(path.read_text().split("\n"))
    found = tables(name)
    k = int(part or "1")
    if not 1 <= k <= len(found):
        raise ValueError(f"{spec}: {name} holds {len(found)} tables")
    return found[k - 1]


def page(path: Path) -> str:
    """``docs/results/<name>.md``: the results file as a page (tables as tables, the rest as text)."""
    title, command = TITLES.get(path.stem, (path.stem.replace("_", " "), f"see benchmarks/results/{path.name}"))
    parts = [
        f"# {title}",
        f"Generated by `docs/gen_results.py` from `benchmarks/results/{path.name}`, written by `{command}`.",
    ]
    if path.suffix == ".json":
        made = _main_job_tables(json.loads(path.read_text()))
        parts += [made["summary"], made["scores"]]
    else:
        for kind, lines in _blocks(path.read_text()):
            if kind == "table":
                parts.append("\n".join(lines))
            elif kind == "note":
                parts.append("\n".join(f"> {line[2:]}  " for line in lines).rstrip())
            elif fenced := _fence(lines):
                parts.append(fenced)
    return "\n\n".join(parts) + "\n"


def index(sources: list[Path]) -> str:
    rows = ["| results | source | written by |", "|---|---|---|"]
    for p in sources:
        title, command = TITLES.get(p.stem, (p.stem, ""))
        rows.append(f"| [{title}]({p.stem}.md) | `benchmarks/results/{p.name}` | `{command}` |")
    return (
        "# Benchmark results\n\n"
        "Each page is generated from a file under `benchmarks/results/` by `docs/gen_results.py`; CI runs\n"
        "`python docs/gen_results.py --check`, which fails when a page or a table in the docs differs from\n"
        "its file. Rerun a benchmark, keep its output there, then run the script.\n\n" + "\n".join(rows) + "\n"
    )


def expected() -> dict[Path, str]:
    """Every generated file's text, by path: the results pages, their index, and every marked document."""
    files = [RESULTS / "elec2_main_job.json", *sorted(RESULTS.glob("*.txt"))]  # other .json: a script's raw data
    order = list(TITLES)
    sources = sorted(files, key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.name))
    out = {PAGES / f"{p.stem}.md": page(p) for p in sources}
    out[PAGES / "index.md"] = index(sources)
    for doc in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        if doc.parent == PAGES:
            continue
        text = doc.read_text()
        sub: Callable[[re.Match[str]], str] = lambda m: f"{m[1]}{region(m['spec'])}\n{m[4]}"
        new = MARKER.sub(sub, text)
        if MARKER.search(text):
            out[doc] = new
    return out


def record_run(run_dir: Path) -> Path:
    """Keep the figures of a main-job run's ``report.json`` (no per-window lists) as the main job's results."""
    report = json.loads((run_dir / "report.json").read_text())
    run = {
        k: v for k, v in report["run"].items() if k not in ("window_versions", "quarantined", "replica_versions_at_end")
    }
    drift = report["drift"]
    kept = {
        "run": run,
        "scores": report["scores"],
        "eval_rows": report["eval_rows"],
        "freshness_s": report["freshness_s"],
        "http": {k: v for k, v in report["http"].items() if k != "errors"},
        "drift": {
            "detector": drift["detector"],
            "policy": drift["policy"],
            "signals": len(drift["events"]),
            "decisions": drift["decisions"],
            "recovery_windows": drift["recovery_windows"],
        },
        "config": report["config"],
    }
    out = RESULTS / "elec2_main_job.json"
    out.write_text(json.dumps(kept, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file is out of date")
    p.add_argument(
        "--record-run", type=Path, metavar="RUN_DIR", help="keep a make-run report as the main job's results"
    )
    args = p.parse_args(argv)
    if args.record_run:
        print(f"wrote {record_run(args.record_run).relative_to(ROOT)}")
    stale = []
    for path, text in expected().items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    for path in stale:
        print(f"{'out of date' if args.check else 'wrote'}: {path.relative_to(ROOT)}")
    if args.check and stale:
        print("run: python docs/gen_results.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
