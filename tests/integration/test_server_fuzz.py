"""Schema-driven fuzzing: schemathesis generates requests from /openapi.json (valid and
invalid) against a real server; none may answer 5xx, every answer must match the document,
and no sandbox may outlive the run."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from tests.conftest import SESSION_RUN
from tests.integration.server_harness import KEYS, RunningServer, serving

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[RunningServer]:
    label = f"{SESSION_RUN}-{uuid4().hex[:8]}"
    with (
        tempfile.TemporaryDirectory(prefix="jsbx-fuzz-") as folder,
        serving(
            Path(folder) / "home",
            label,
            server_max_live_sandboxes=3,
            server_rate_limit=0,
            server_max_body_bytes=2 * 2**20,
            file_size_limit=2**20,
        ) as server,
    ):
        yield server


@pytest.fixture(scope="module")
def api_schema(fuzz_server: RunningServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json", timeout=30)


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.mark.parametrize(
    "mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
)
def test_no_server_errors(
    fuzz_server: RunningServer,
    api_schema: schemathesis.BaseSchema,
    mode: schemathesis.GenerationMode,
) -> None:
    schema = api_schema
    headers = {"Authorization": f"Bearer {KEYS['alice']}"}
    before = _requests(fuzz_server)
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def call(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(
                base_url=fuzz_server.url, headers=headers, timeout=120, checks=CHECKS
            )

        call()
        operations += 1
    assert operations == 26  # every route and method in the document
    statuses = _statuses(fuzz_server, before)
    assert len(statuses) >= 100, statuses  # it really ran
    assert not [s for s in statuses if s >= 500]


def _requests(server: RunningServer) -> int:
    return len(_statuses(server, 0))


def _statuses(server: RunningServer, skip: int) -> list[int]:
    lines = [line for line in server.log if "jupyter_sandbox.server.access" in line]
    found = [re.search(r" (\d{3}) [\d.]+ms$", line.rstrip()) for line in lines[skip:]]
    return [int(match.group(1)) for match in found if match]
