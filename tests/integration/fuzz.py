"""Fuzz a Serve app against the OpenAPI it publishes: schemathesis generates requests (hypothesis), valid and
invalid by the schema, and checks each answer: no 5xx, a body that matches the schema of its status, no hang.

Used by ``tests/integration/test_serve_http.py`` (a short run) and ``benchmarks/fuzz_serve.py`` (the totals in
the docs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import requests
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode, openapi
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.core.failures import FailureGroup

__all__ = ["FuzzTotals", "fuzz"]


@dataclass
class FuzzTotals:
    """What a fuzz run sent and got.

    Attributes:
        requests: requests sent.
        statuses: answers by HTTP status.
        kinds: requests by ``"METHOD /path (positive|negative)"``.
        failures: one line per answer that failed a check (5xx, schema, timeout).
    """

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def count(self, low: int, high: int) -> int:
        return sum(n for s, n in self.statuses.items() if low <= s < high)

    def table(self) -> str:
        lines = [
            f"{'operation (data)':44s} {'requests':>9s}",
            *(f"{k:44s} {n:9d}" for k, n in sorted(self.kinds.items())),
        ]
        lines.append(
            f"{'total':44s} {self.requests:9d}   2xx {self.count(200, 300)}  4xx {self.count(400, 500)}  "
            f"5xx {self.count(500, 600)}  failed checks {len(self.failures)}"
        )
        lines.append("statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items())))
        return "\n".join(lines)


def _bound(check: Callable[[Any, str], None], kind: str) -> Callable[[Any], None]:
    def run(case: Any) -> None:  # hypothesis' @given takes a plain function of the generated arguments
        check(case, kind)

    return run


def fuzz(
    base_url: str,
    max_examples: int = 50,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    seed: int = 0,
) -> FuzzTotals:
    """Send ``max_examples`` generated requests per operation and mode (valid and invalid by the schema).

    Args:
        base_url: the app's URL (its route prefix); the schema is read from ``{base_url}/openapi.json``.
        max_examples: requests per operation and generation mode.
        headers: sent with every request (e.g. the bearer token).
        timeout_s: a request taking longer is a failure (a hang).
        seed: hypothesis' seed, for a run that repeats.
    """
    schema = openapi.from_url(f"{base_url}/openapi.json", headers=headers or {})
    totals = FuzzTotals()
    session = requests.Session()
    config = settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )

    def check(case: Any, kind: str) -> None:
        totals.requests += 1
        totals.kinds[kind] += 1
        try:
            response = case.call(base_url=base_url, session=session, headers=headers, timeout=timeout_s)
        except requests.Timeout:
            totals.failures.append(f"{kind}: no answer within {timeout_s} s")
            return
        totals.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
        except (Exception, FailureGroup) as exc:  # noqa: BLE001 (a failed check: recorded, the run goes on)
            totals.failures.append(f"{kind}: {response.status_code}: {str(exc)[:300]}")

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            kind = f"{operation.method.upper()} {operation.path} ({mode.value})"
            run = given(case=operation.as_strategy(generation_mode=mode))(_bound(check, kind))
            try:
                hypothesis.seed(seed)(config(run))()
            except hypothesis.errors.Unsatisfiable:  # e.g. no request to GET /version is invalid by the schema
                totals.kinds.setdefault(kind, 0)
    return totals
