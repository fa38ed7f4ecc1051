"""Integration tier: one local Ray cluster (and one Serve instance) for the whole session."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.integration.session_ports import DIRECT_INGRESS_PORTS, METRICS_PORT, SERVE_PORT

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def ray_cluster() -> Any:
    # Token auth is on by default since Ray 2.59; this cluster only listens on 127.0.0.1
    # and lives for one test session, so the mode is set explicitly to disabled.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
    # Serve's proxy must answer its readiness check within 5 s, 3 times, or it is killed and
    # restarted; on 2 busy cores its start-up can take longer (seen here with benchmarks running).
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "30")
    # application metrics reach the endpoint within ~1 s (Ray reads this exact, lower-case name)
    os.environ["RAY_metrics_report_interval_ms"] = "1000"  # noqa: SIM112
    shared = ROOT.parent / "shared" / "datasets"
    if shared.is_dir():
        os.environ.setdefault("DDN_RAY_DATA_DIR", str(shared))
    import ray
    from ray import serve

    from ddn_ray.serve import ingress

    # as the main job starts its own cluster (serve.direct_ingress): its requests go to the replicas' own servers
    ingress.enable(ports=DIRECT_INGRESS_PORTS)
    ray.init(
        num_cpus=4,  # logical CPUs on 2 cores: leaves Ray Data a whole CPU (see ../shared/RAY_NOTES.md)
        num_gpus=2,  # logical: GPU requests (train.use_gpu, serve.num_gpus) are scheduled and fall back to CPU
        include_dashboard=False,
        namespace="ddn_ray",
        _node_ip_address="127.0.0.1",
        _metrics_export_port=METRICS_PORT,
        runtime_env={"env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}},
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": SERVE_PORT})
    yield ray
    serve.shutdown()
    ray.shutdown()


def load_recipe(script: str) -> ModuleType:
    """A recipe of jobs/ (``continuous.py``, ``service.py``) imported as a module."""
    spec = importlib.util.spec_from_file_location(f"recipe_{Path(script).stem}", ROOT / "jobs" / script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def continuous() -> ModuleType:
    """The main job's recipe, imported from jobs/continuous.py."""
    return load_recipe("continuous.py")


@pytest.fixture(scope="session")
def service_recipe() -> ModuleType:
    """The service's recipe (deploy, stop), imported from jobs/service.py."""
    return load_recipe("service.py")


@pytest.fixture(scope="session")
def job_config(tmp_path_factory: pytest.TempPathFactory):
    """Build the main job's config from jobs/configs/elec2.yaml (``file=`` another one there) with fresh test
    paths and the pinned port."""
    from ddn_ray import config

    def make(file: str = "elec2.yaml", **sections: dict[str, Any]) -> config.JobConfig:
        tmp_path = tmp_path_factory.mktemp("job")
        base = {
            "storage_path": str(tmp_path / "storage"),
            "serve": {"port": SERVE_PORT},
            "report": {"output_dir": str(tmp_path / "runs"), "static_windows": 5},
            "stream": {"window_size": 100},  # tests reason in 100-row windows, whatever the shipped default
        }
        for name, values in sections.items():
            base[name] = {**base.get(name, {}), **values} if isinstance(values, dict) else values
        return config.load(ROOT / "jobs" / "configs" / file, base)

    return make
