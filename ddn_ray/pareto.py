"""Architecture search's output: the Pareto front of prequential accuracy against compute.

A sweep over ``model.hidden_sizes``, ``model.exits`` and ``model.exit_threshold``
(:mod:`ddn_ray.sweep`, with ASHA) reports each trial's prequential accuracy and mean
multiply-accumulates per answer (``mean_macs``). A trial is on the front when no other finished
trial is at least as accurate with at most as many MACs and strictly better in one of them
(Deb et al. 2002, NSGA-II's non-dominated set, for two objectives). The chosen architecture is the
cheapest point of the front within ``tolerance`` of the front's best accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["choose", "format_front", "front", "plot_front"]


def front(trials: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The non-dominated trials (maximise ``score``, minimise ``mean_macs``), cheapest first.

    Args:
        trials: rows with ``score`` (accuracy in [0, 1]) and ``mean_macs`` (MACs per answer); rows missing
            either are left out.

    Returns:
        The front, by increasing ``mean_macs`` (so accuracy increases along it); of trials with the same
        score and MACs (e.g. a threshold that a model without exits ignores) only the first is kept.
    """
    points = [t for t in trials if t.get("score") is not None and t.get("mean_macs") is not None]
    out: list[dict[str, Any]] = []
    for t in points:
        dominated = any(
            o["score"] >= t["score"]
            and o["mean_macs"] <= t["mean_macs"]
            and (o["score"] > t["score"] or o["mean_macs"] < t["mean_macs"])
            for o in points
        )
        if not dominated and not any((o["score"], o["mean_macs"]) == (t["score"], t["mean_macs"]) for o in out):
            out.append(t)
    return sorted(out, key=lambda t: (t["mean_macs"], -t["score"]))


def choose(points: Sequence[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """The cheapest point of a front whose score is within ``tolerance`` (accuracy, e.g. 0.005) of its best.

    Raises:
        ValueError: the front is empty.
    """
    if not points:
        raise ValueError("the Pareto front is empty: no finished trial reported score and mean_macs")
    best = max(p["score"] for p in points)
    return min((p for p in points if p["score"] >= best - tolerance), key=lambda p: p["mean_macs"])


def format_front(points: Sequence[dict[str, Any]], chosen: dict[str, Any], reference: dict[str, Any] | None) -> str:
    """The front as a Markdown table (settings, accuracy, mean MACs, accuracy per kMAC), the chosen row marked,
    and the reference (e.g. the default model) marked, or added as the last row when it is not on the front."""
    keys = list(points[0]["settings"]) if points else []
    lines = [
        "| trial | " + " | ".join(k.split(".")[-1] for k in keys) + " | accuracy % | mean MACs | accuracy per kMAC | |",
        "|---" * (len(keys) + 5) + "|",
    ]
    same = lambda a, b: b is not None and (a["score"], a["mean_macs"]) == (b["score"], b["mean_macs"])
    on_front = any(same(p, reference) for p in points)
    rows = [*points, *([reference] if reference is not None and not on_front else [])]
    for p in rows:
        marks = [m for m, o in (("chosen", chosen), ("reference", reference)) if p is o or same(p, o)]
        mark = ", ".join(marks)
        per_kmac = 100 * p["score"] / max(p["mean_macs"] / 1000, 1e-9)
        lines.append(
            f"| {p['trial']} | "
            + " | ".join(str(p["settings"].get(k, "-")) for k in keys)
            + f" | {100 * p['score']:.2f} | {p['mean_macs']:,.0f} | {per_kmac:.2f} | {mark} |"
        )
    return "\n".join(lines)


def plot_front(trials: Sequence[dict[str, Any]], points: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Every trial's (mean MACs, accuracy), the front as a line, saved to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    scored = [t for t in trials if t.get("score") is not None and t.get("mean_macs") is not None]
    ax.scatter([t["mean_macs"] for t in scored], [100 * t["score"] for t in scored], s=14, alpha=0.5, label="trials")
    ax.plot(
        [p["mean_macs"] for p in points], [100 * p["score"] for p in points], "o-", color="C3", label="Pareto front"
    )
    ax.set_xscale("log")
    ax.set_xlabel("mean multiply-accumulates per answer (FlopCounterMode)")
    ax.set_ylabel("prequential accuracy %")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
