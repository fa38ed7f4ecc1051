"""Tune sweeps on the session's cluster: ASHA and PBT on an Elec2 slice, best YAML back into the main job's loader."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from ddn_ray import config, sweep

ROOT = Path(__file__).resolve().parents[2]


def _sweep(tmp_path: Path, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    base = {
        "output_dir": str(tmp_path / "out"),
        "storage_path": str(tmp_path / "tune"),
        "max_rows": 3000,
        "report_every_rows": 500,
    }
    return sweep.run(sweep.load(ROOT / "jobs" / "configs" / name, config.merge(base, overrides)))


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the sweep YAML names its base job relative to the repo


def test_asha_sweep_writes_table_best_yaml_and_plot(ray_cluster: Any, tmp_path: Path) -> None:
    summary = _sweep(
        tmp_path,
        "sweep_elec2.yaml",
        {"num_samples": 4, "scheduler": {"params": {"grace_period": 1, "reduction_factor": 2}}},
    )
    trials = summary["trials"]
    assert len(trials) == 4 and {t["status"] for t in trials} <= {"complete", "stopped early"}
    full = [t for t in trials if t["status"] == "complete"]
    assert full and all(t["rows"] == 3000 and t["iterations"] == 6 for t in full)
    assert all(0.3 < t["score"] < 1.0 for t in trials)
    for t in trials:  # ASHA's rungs: a trial stopped early stopped at the end of an iteration
        assert t["status"] == "complete" or t["rows"] < 3000
    assert summary["best"]["score"] == max(t["score"] for t in full)
    best = config.load(summary["files"]["best"])  # the main job's loader, unchanged
    for key, value in summary["best"]["settings"].items():
        section, field = key.split(".")
        got = getattr(getattr(best, section), field)
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    assert best.drift.detector == "adwin" and best.data.max_rows is None
    with open(summary["files"]["results"]) as f:
        assert len(list(csv.DictReader(f))) == 4
    assert Path(summary["files"]["plot"]).stat().st_size > 10_000


def test_pbt_exploits_copy_weights_from_checkpoints(ray_cluster: Any, tmp_path: Path) -> None:
    # Two trials, every iteration a perturbation: the worse one continues from the better one's checkpoint.
    summary = _sweep(
        tmp_path,
        "sweep_elec2_pbt.yaml",
        {"num_samples": 2, "scheduler": {"params": {"perturbation_interval": 1, "quantile_fraction": 0.5}}},
    )
    trials = summary["trials"]
    assert [t["status"] for t in trials] == ["complete", "complete"]
    assert summary["pbt_exploits"] >= 1
    ids = {t["trial"] for t in trials}
    for t in trials:
        lineage = t["exploited"]  # every exploit behind this trial's weights, its own latest last
        assert not lineage or lineage[-1][1] == t["trial"]
        for source, into, offset in lineage:
            assert source in ids - {into} and into in ids and 0 < offset < 3000 and offset % 50 == 0
    # The copy resumed the stream where the source was: every trial still saw each row once.
    assert all(t["rows"] == 3000 for t in trials)
    # Every report of every trial is in its record, from the first to the stream's end (a trial's result.json
    # keeps only those since PBT last restarted it); one never exploited reported at each 500 rows.
    for t in trials:
        rows = [r for r, _ in t["reports"]]
        assert rows[0] == 500 and rows[-1] == 3000 and all(r % 500 == 0 for r in rows), t["reports"]
        if not any(into == t["trial"] for _, into, _ in t["exploited"]):
            assert rows == list(range(500, 3001, 500)), t["reports"]
    assert config.load(summary["files"]["best"]).strategy.name == "replay"


def test_architecture_search_reports_macs_and_writes_the_pareto_front(ray_cluster: Any, tmp_path: Path) -> None:
    from ddn_ray import exits, models

    archs = [
        {"hidden_sizes": [64, 64], "exits": []},
        {"hidden_sizes": [16], "exits": []},
        {"hidden_sizes": [32, 32], "exits": [0]},
    ]
    summary = _sweep(
        tmp_path,
        "sweep_nas_elec2.yaml",
        {
            "max_rows": 2000,
            "search": {"model": {"grid": archs}, "model.exit_threshold": {"grid": [0.8]}},
            "scheduler": {"params": {"grace_period": 4}},
        },
    )
    trials = summary["trials"]
    assert len(trials) == 3 and all(t["status"] == "complete" for t in trials)
    for t in trials:  # each trial's result carries its compute: mean MACs per answer, counted per exit
        arch = t["settings"]["model"]
        cfg = config.load(None, {"model": {**arch, "exit_threshold": 0.8}})
        costs = exits.exit_macs(models.build(cfg.model, 6, 2), 6)
        assert costs[0] <= t["mean_macs"] <= costs[-1]
        if len(costs) == 1:
            assert t["mean_macs"] == costs[0]
    front = summary["pareto"]
    assert front and summary["chosen"] in front
    for p in front:  # no trial is as accurate for fewer MACs, or more accurate for as few
        assert not any(
            o["score"] >= p["score"]
            and o["mean_macs"] <= p["mean_macs"]
            and (o["score"] > p["score"] or o["mean_macs"] < p["mean_macs"])
            for o in trials
        )
    assert summary["reference"] is not None and summary["reference"]["settings"]["model"] == archs[0]
    assert Path(summary["files"]["pareto_plot"]).read_bytes()[:4] == b"\x89PNG"
    assert "chosen" in Path(summary["files"]["pareto"]).read_text()
    chosen = config.load(summary["files"]["chosen"])  # a config the main job runs
    assert list(chosen.model.hidden_sizes) == summary["chosen"]["settings"]["model"]["hidden_sizes"]
