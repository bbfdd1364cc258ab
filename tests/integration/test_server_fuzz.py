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

import httpx
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
    assert operations == 34  # every route and method in the document (snapshots: 4)
    statuses = _statuses(fuzz_server, before)
    assert len(statuses) >= 100, statuses  # it really ran
    assert not [s for s in statuses if s >= 500]


def _requests(server: RunningServer) -> int:
    return len(_statuses(server, 0))


def _statuses(server: RunningServer, skip: int) -> list[int]:
    lines = [line for line in server.log if "jupyter_sandbox.server.access" in line]
    found = [re.search(r" (\d{3}) [\d.]+ms$", line.rstrip()) for line in lines[skip:]]
    return [int(match.group(1)) for match in found if match]


# Bodies a hostile client sends; each goes to every operation in the document, with several
# Content-Types. None may answer 5xx.
HOSTILE_BODIES: list[tuple[str, bytes]] = [
    ("deep arrays", b"[" * 100_000 + b"]" * 100_000),
    ("deep objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    ("float overflow", b'{"name": "x", "lifetime_seconds": 1e999999, "code": "1"}'),
    ("a 100000-digit integer", b'{"name": "x", "limit": ' + b"9" * 100_000 + b"}"),
    ("NaN", b'{"name": "x", "timeout": NaN, "code": "1"}'),
    ("Infinity", b'{"name": "x", "timeout": Infinity, "code": "1"}'),
    ("duplicate keys", b'{"name": "x", "name": {"y": 1}}'),
    ("invalid UTF-8", b'{"name": "\xff\xfe\xfd"}'),
    ("a lone surrogate", b'{"name": "\\ud800", "code": "\\udfff", "path": "/mnt/data/\\ud800"}'),
    ("a bare string", b'"just a string"'),
    ("a bare number", b"1e999"),
    ("an array", b'[{"name": "x"}]'),
    ("null", b"null"),
    ("empty", b""),
    ("NUL bytes", b"\x00" * 64),
    ("multipart without a boundary", b"--x\r\nContent-Disposition: form-data\r\n\r\n"),
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=latin-1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=x",
    "multipart/form-data; boundary=",
    None,
]
MULTIPART_ODDITIES: list[tuple[str, bytes]] = [
    ("unterminated part", b"--x\r\nContent-Disposition: form-data; name=\"files\"; "
     b"filename=\"a\"\r\n\r\nabc"),
    ("no closing boundary", b"--x\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n"
     b"user_data\r\n"),
    ("header without colon", b"--x\r\nnonsense\r\n\r\nabc\r\n--x--\r\n"),
    ("a filename with NUL and traversal", b"--x\r\nContent-Disposition: form-data; "
     b"name=\"file\"; filename=\"../\x00evil\"\r\n\r\nabc\r\n--x--\r\n"),
    ("a thousand empty parts", b"--x\r\n\r\n\r\n" * 1000 + b"--x--\r\n"),
    ("a huge header", b"--x\r\nContent-Disposition: form-data; name=\"" + b"n" * 100_000
     + b"\"\r\n\r\nv\r\n--x--\r\n"),
]  # fmt: skip


def _operations(server: RunningServer) -> list[tuple[str, str]]:
    document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    return [
        (method.upper(), re.sub(r"\{[^}]+\}", "cntr_0000", path))
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]


def test_hostile_bodies_on_every_route_are_never_5xx(fuzz_server: RunningServer) -> None:
    operations = _operations(fuzz_server)
    assert len(operations) == 34  # every route and method in the document (snapshots: 4)
    failures: list[str] = []
    answered = 0
    log_start = len(fuzz_server.log)
    with httpx.Client(base_url=fuzz_server.url, timeout=120) as http:
        # The fuzzing before may have filled the project's live-sandbox quota.
        listed = http.get("/v1/containers?limit=100", headers=fuzz_server.headers())
        for container in listed.json()["data"]:
            http.delete(f"/v1/containers/{container['id']}", headers=fuzz_server.headers())
        # A real container id too, so routes below it reach their body parsing.
        made = http.post(
            "/v1/containers", json={"name": "fuzz-target"}, headers=fuzz_server.headers()
        )
        assert made.status_code == 200, made.text
        real = made.json()["id"]
        targets = [*operations, *((m, p.replace("cntr_0000", real)) for m, p in operations)]
        for method, path in targets:
            if method == "DELETE" and path.rstrip("/").endswith(real):
                continue  # keep the target for the other routes
            bodies = [*HOSTILE_BODIES, *MULTIPART_ODDITIES]
            for what, body in bodies:
                for content_type in CONTENT_TYPES:
                    headers = dict(fuzz_server.headers())
                    if content_type is not None:
                        headers["content-type"] = content_type
                    response = http.request(method, path, content=body, headers=headers)
                    answered += 1
                    if response.status_code >= 500:
                        failures.append(
                            f"{method} {path} [{what}] {content_type}: "
                            f"{response.status_code} {response.text[:200]}"
                        )
                    elif response.status_code >= 400:
                        assert set(response.json()) == {"error"}, response.text[:200]
        http.delete(f"/v1/containers/{real}", headers=fuzz_server.headers())
    assert answered > 1000
    assert not failures, "\n".join(failures[:30])
    assert not [line for line in fuzz_server.log[log_start:] if "Traceback" in line]
