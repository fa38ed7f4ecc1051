"""The layering DESIGN.md states: the engine imports no use case and no job; use cases plug in by name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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
    names = {p.stem for p in ENGINE}
    assert {"serve", "stream", "train", "controller", "evaluate", "sweep", "feeds", "tables"} <= names


@pytest.mark.parametrize("path", [*ENGINE, MAIN_JOB], ids=lambda p: p.name if p == MAIN_JOB else str(p.relative_to(PACKAGE)))
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

    with pytest.raises(ConfigError, match="'weather' is not a built-in use case; one of .*'elec2'"):
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
