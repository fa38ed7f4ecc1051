"""The sweep's YAML, search domains and best-YAML output, without Ray clusters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ddn_ray import config, sweep
from ddn_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "jobs" / "configs").glob("sweep_*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_sweeps_load(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    cfg = sweep.load(path)
    assert cfg.search and cfg.num_samples >= 1
    for key in cfg.search:  # every searched key is a job-config field, or a whole section (an architecture)
        section, _, field = key.partition(".")
        assert section in config.JobConfig.model_fields, key
        assert not field or field in type(getattr(config.JobConfig(), section)).model_fields, key


def _write(tmp_path: Path, **fields: object) -> Path:
    raw = {"job": str(ROOT / "jobs" / "configs" / "elec2.yaml"), "search": {"train.lr": {"loguniform": [1e-4, 1e-2]}}}
    raw.update(fields)
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"search": {"train.lr": {"lognormal": [1, 2]}}}, "search.train.lr"),
        ({"search": {"train.lr": {"uniform": [0.1, 0.01]}}}, "low < high"),
        ({"search": {"train.no_such_field": {"choice": [1, 2]}}}, "train.no_such_field"),
        ({"search": {"train.optimizer": {"choice": ["sgd", "lbfgs"]}}}, "train.optimizer"),
        (
            {"scheduler": {"name": "asha", "mutations": {"train.lr": {"uniform": [0.1, 0.2]}}}},
            "only for scheduler.name 'pbt'",
        ),
        ({"scheduler": {"name": "pbt", "mutations": {"train.seed": {"choice": [1, 2]}}}}, "mutate a key of search"),
        ({"scheduler": {"name": "asha", "params": {"grace_periods": 1}}}, "rejected by asha"),
        ({"num_samples": 0}, "num_samples"),
        ({"job": "no/such.yaml"}, "does not exist"),
    ],
)
def test_bad_sweeps_name_the_field(tmp_path: Path, fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sweep.load(_write(tmp_path, **fields))


def test_domains() -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    assert isinstance(sweep.domain({"choice": [[32], [64, 64]]}), Categorical)
    assert isinstance(sweep.domain({"randint": [1, 5]}), Integer)
    assert sweep.domain({"grid": [1, 2]}) == {"grid_search": [1, 2]}
    lo = sweep.domain({"qloguniform": [1.0, 100.0, 1.0]})
    assert isinstance(lo, Float) and lo.lower == 1.0
    with pytest.raises(ValueError, match="non-empty list"):
        sweep.domain({"choice": []})


def test_trial_config_applies_dotted_settings_and_slice() -> None:
    base = yaml.safe_load((ROOT / "jobs" / "configs" / "elec2.yaml").read_text())
    cfg = sweep.trial_job_config(
        base, {"train.lr": 0.01, "model.hidden_sizes": [32], "drift.params": {"delta": 0.02}}, 3000
    )
    assert cfg.train.lr == 0.01 and cfg.model.hidden_sizes == (32,) and cfg.data.max_rows == 3000
    assert cfg.drift.params == {"delta": 0.02} and cfg.drift.detector == base["drift"]["detector"]
    with pytest.raises(ConfigError, match=re.escape("train.lr")):
        sweep.trial_job_config(base, {"train.lr": -1.0})


def test_best_yaml_is_a_job_config_the_main_job_accepts(tmp_path: Path) -> None:
    cfg = sweep.load(
        _write(
            tmp_path,
            overrides={"strategy.name": "replay"},
            max_rows=2000,
            search={"train.lr": {"loguniform": [1e-4, 1e-2]}, "model.hidden_sizes": {"choice": [[32]]}},
        )
    )
    base = yaml.safe_load(Path(cfg.job).read_text())
    best = {
        "trial": "t_00001",
        "score": 0.81,
        "rows": 2000,
        "settings": {"train.lr": 0.004, "model.hidden_sizes": [32]},
    }
    text = sweep.write_best_yaml(cfg, base, best, tmp_path / "best.yaml", "s")
    assert text.startswith("# Best trial t_00001")
    job = config.load(tmp_path / "best.yaml")  # exactly what jobs/continuous.py does with --config
    assert job.train.lr == 0.004 and job.model.hidden_sizes == (32,) and job.strategy.name == "replay"
    assert job.data.max_rows is None  # the slice is not carried over
    assert job.serve == config.load(cfg.job).serve  # untouched sections stay as the base has them


@pytest.mark.parametrize("path", sorted((ROOT / "jobs" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_starts_with_its_submit_line_and_runtime_env(path: Path) -> None:
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert (
        "ray job submit --address" in text
        and "--working-dir ." in text
        and f"--config jobs/configs/{path.name}" in text
    )
    assert "runtime_env" in text
