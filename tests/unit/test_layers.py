"""The layering DESIGN.md states: the engine imports no use case and no job; use cases plug in by name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from tests.integration import byo_streams

PACKAGE = Path(__file__).resolve().parents[2] / "ddn_ray"
ENGINE = sorted(p for p in PACKAGE.rglob("*.py") if "usecases" not in p.relative_to(PACKAGE).parts)
MAIN_JOB = PACKAGE.parent / "jobs" / "continuous.py"


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_the_engine_has_modules_to_check() -> None:
    names = {".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__") for p in ENGINE}
    assert {"serve.app", "stream", "train", "controller.state", "controller.actor", "evaluate", "sweep"} <= names


@pytest.mark.parametrize(
    "path", [*ENGINE, MAIN_JOB], ids=lambda p: p.name if p == MAIN_JOB else str(p.relative_to(PACKAGE))
)
def test_an_engine_module_imports_no_use_case_and_no_job(path: Path) -> None:
    bad = sorted(m for m in _imports(path) if m.startswith(("ddn_ray.usecases", "jobs")))
    assert not bad, f"{path.name} imports {bad}"


def test_every_built_in_use_case_resolves_to_the_protocol() -> None:
    from ddn_ray import usecase

    for name in usecase.BUILT_IN:
        assert isinstance(usecase.get(name), usecase.UseCase), name


def test_an_unknown_use_case_names_the_choices() -> None:
    from ddn_ray import usecase
    from ddn_ray.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'weather' is not a built-in use case; one of .*'elec2'"):
        usecase.get("weather")


def test_the_input_spec_names_routes_a_replica_can_load() -> None:
    from ddn_ray import registry
    from ddn_ray.serve import InputRoutes

    for name in ("IMAGES", "TEXTS", "DYNAMICS", "SERIES"):
        routes = registry.load(f"ddn_ray.usecases.routes:{name}", what="inputs.routes")
        assert isinstance(routes, InputRoutes) and len(routes.router.routes) == 1


def test_the_built_in_feed_loads_by_name() -> None:
    from ddn_ray import registry, usecase
    from ddn_ray.feeds import Feed

    feed_type = registry.load(usecase.FEED, what="use-case feed")
    members = [m for m in vars(Feed) if not m.startswith("_")] + list(Feed.__annotations__)
    assert not [m for m in members if not hasattr(feed_type, m) and m not in feed_type.__init__.__code__.co_names]


class _DictOptions(byo_streams.FlipUseCase):
    options = dict  # type: ignore[assignment]  # not an Options model: refused by name


DICT_OPTIONS = _DictOptions()


def test_a_use_case_outside_the_package_is_named_by_module_and_checked_by_its_own_lists() -> None:
    from pydantic import ValidationError

    from ddn_ray import config, usecase

    name = "tests.integration.byo_streams:FLIP"
    job = config.JobConfig(data={"name": name, "scenario": "flip"}, stream={"window_size": 50})
    feed = usecase.feed(job)
    feed.start(next_offset=0, preprocessing=None)
    windows = list(feed.windows())
    assert len(windows) == 8 and feed.run_stem() == "flip-flip"
    assert feed.phase(windows[-1].offsets).tolist() == [1] * 50
    early = usecase.feed(
        config.JobConfig(
            data={"name": name, "scenario": "flip", "options": {"flip_at": 50}}, stream={"window_size": 50}
        )
    )
    early.start(next_offset=0, preprocessing=None)
    assert early.phase(next(iter(early.windows())).offsets).tolist() == [0] * 50  # rows 0-49
    assert early.phase(np.arange(50, 100)).tolist() == [1] * 50
    with pytest.raises(
        ValidationError,
        match=r"data.options.flip_at: Input should be greater than 0 \(the settings "
        r"of tests.integration.byo_streams:FLIP: num_rows, flip_at\)",
    ):
        config.JobConfig(data={"name": name, "options": {"flip_at": 0}})
    with pytest.raises(ValidationError, match=re.escape("data.options.flip: Extra inputs are not permitted")):
        config.JobConfig(data={"name": name, "options": {"flip": 10}})
    with pytest.raises(
        ValidationError,
        match=r"data: \['flip_at'\] are not data fields; a use case's own settings "
        "go under data.options",
    ):
        config.JobConfig(data={"name": name, "flip_at": 10})
    with pytest.raises(
        ValidationError,
        match="'rotation' does not apply to tests.integration.byo_streams:FLIP; use one of "
        r"\('none', 'flip'\)",
    ):
        config.JobConfig(data={"name": name, "scenario": "rotation"})
    with pytest.raises(ValidationError, match=re.escape("needs model.task classification")):
        config.JobConfig(data={"name": name}, model={"task": "regression"})
    with pytest.raises(ValidationError, match="byo_streams has no 'NOPE'"):
        config.JobConfig(data={"name": "tests.integration.byo_streams:NOPE"})
    with pytest.raises(ValidationError, match="is not a UseCase"):
        config.JobConfig(data={"name": "tests.unit.test_layers:ENGINE"})
    with pytest.raises(
        ValidationError,
        match=r"test_layers:DICT_OPTIONS.options must be a subclass of "
        r"ddn_ray.usecase.Options",
    ):
        config.JobConfig(data={"name": "tests.unit.test_layers:DICT_OPTIONS"})


def test_a_window_item_unpickles_without_torch() -> None:
    """The queue actor between the driver and a Train worker unpickles every WindowItem: doing so in a fresh
    process imports no torch (it took 1.7 s before the first window while WindowItem lived in ddn_ray.train)."""
    import pickle
    import subprocess
    import sys

    from ddn_ray.handoff import WindowItem

    blob = pickle.dumps(WindowItem(index=3, start=150, end=200, block=None, num_classes=2))
    code = "import pickle, sys; item = pickle.loads(sys.stdin.buffer.read()); print(item.index, 'torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], input=blob, capture_output=True, check=True, cwd=PACKAGE.parent
    ).stdout
    assert out.split() == [b"3", b"False"]
