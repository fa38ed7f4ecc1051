"""The `ray start --head` test cluster's pinned ports and handle (imported by conftest and tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Every port this head uses, pinned, apart from the session cluster's (18123/18124) and Ray's defaults.
PORTS = {
    "gcs": 6391,
    "dashboard": 21265,
    "agent_listen": 21266,
    "agent_grpc": 21267,
    "metrics": 21268,
    "client": 21269,
    "node_manager": 21270,
    "object_manager": 21271,
    "runtime_env_agent": 21272,
    "serve": 21800,
}
WORKER_PORTS = (21300, 21399)


@dataclass
class Head:
    address: str  # the dashboard / Jobs API
    token: str
    env: dict[str, str]  # for CLI processes that talk to this head (token auth on)
    temp_dir: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}
