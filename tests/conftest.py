"""Test-session ordering: tests/cluster (its own `ray start --head`) runs before anything that
starts the in-process session cluster, so two Ray clusters never run at once."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: 0 if "/tests/cluster/" in str(item.fspath) else 1)  # stable: order kept otherwise
