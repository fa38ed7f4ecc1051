from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from ddn_ray import config
from ddn_ray.errors import ConfigError

CONFIGS = [
    p
    for p in sorted((Path(__file__).parents[2] / "jobs" / "configs").glob("*.yaml"))
    if not p.name.startswith("sweep_")
]  # sweeps: test_sweep.py


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_yaml_loads_and_says_how_to_run_it(path: Path) -> None:
    cfg = config.load(path)
    assert isinstance(cfg, config.JobConfig)
    first = path.read_text().splitlines()[0]
    assert first.startswith("#"), f"{path.name} must start with a comment giving its command"
    assert f"--config jobs/configs/{path.name}" in path.read_text()


def test_shipped_configs_exist() -> None:
    assert any(p.name == "elec2.yaml" for p in CONFIGS)


def test_all_errors_reported_at_once_with_field_paths() -> None:
    with pytest.raises(ConfigError) as err:
        config.load(overrides={"train": {"lr": -1, "bogus": 1}, "serve": {"num_replicas": 0}})
    msg = str(err.value)
    assert "3 invalid config field(s)" in msg
    for field in ("train.lr", "train.bogus", "serve.num_replicas"):
        assert field in msg


def test_landing_dir_source_needs_a_directory() -> None:
    with pytest.raises(ConfigError, match=re.escape("stream.landing_dir is required")):
        config.load(overrides={"stream": {"source": "landing_dir"}})


def test_overrides_parse_yaml_values_and_config_is_frozen(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 0.1\n")
    cfg = config.load(f, config.parse_overrides(["train.num_workers=2", "model.hidden_sizes=[8, 4]"]))
    assert (cfg.train.lr, cfg.train.num_workers, cfg.model.hidden_sizes) == (0.1, 2, (8, 4))
    with pytest.raises(ValidationError, match="frozen"):
        cfg.train.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "content,match",
    [(None, "does not exist"), ("a: [", "not valid YAML"), ("- 1\n", "mapping at the top level")],
)
def test_bad_files_name_the_problem(tmp_path: Path, content: str | None, match: str) -> None:
    f = tmp_path / "c.yaml"
    if content is not None:
        f.write_text(content)
    with pytest.raises(ConfigError, match=match):
        config.load(f)


def test_override_without_equals_is_an_error() -> None:
    with pytest.raises(ConfigError, match=re.escape("section.field=value")):
        config.parse_overrides(["train.lr"])
