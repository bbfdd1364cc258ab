"""The HTTP layer without Docker: keys, hosts, limits, error bodies, the OpenAPI document."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient

from jupyter_sandbox._exceptions import StoreUnavailableError
from jupyter_sandbox.server import create_app, default_allowed_hosts
from jupyter_sandbox.server.auth import KeyRing, parse_entry
from jupyter_sandbox.server.errors import QuotaExceededError, api_error_parts
from jupyter_sandbox.server.limits import CreateLedger, RateLimiter
from jupyter_sandbox.server.middleware import host_name
from jupyter_sandbox.settings import Settings

KEY = "sk-local-unit-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.mark.parametrize(
    ("entry", "project", "key"),
    [
        ("sk-local-abc123", "default", "sk-local-abc123"),
        ("team-a:sk-local-abc123", "team-a", "sk-local-abc123"),
        ("  team.b : sk-local-abc123 ", "team.b", "sk-local-abc123"),
        ("weird key:with-colon", "default", None),  # prefix is no project name: one key
    ],
)
def test_key_entries(entry: str, project: str, key: str | None) -> None:
    if key is None:
        with pytest.raises(ValueError, match="spaces") as caught:
            parse_entry(entry)
        assert "with-colon" not in str(caught.value)
        return
    parsed = parse_entry(entry)
    assert (parsed.project, parsed.digest) == (project, hashlib.sha256(key.encode()).digest())


def test_keys_given_by_digest_and_constant_time_lookup() -> None:
    hexdigest = hashlib.sha256(b"sk-hashed-secret").hexdigest()
    ring = KeyRing.from_entries(
        ["# comment", "", f"team-b:sha256:{hexdigest}", f"sha256:{hexdigest.upper()}", KEY]
    )
    assert ring.projects == ["default", "team-b"]
    found = ring.lookup("sk-hashed-secret")
    assert found is not None
    assert found.project == "default"
    assert ring.lookup(KEY) is not None
    assert ring.lookup(KEY[:-1]) is None
    with pytest.raises(ValueError, match="shorter") as caught:
        KeyRing.from_entries(["team:short"])
    assert "short" not in str(caught.value).split("characters")[0].split("project")[0]
    with pytest.raises(ValueError, match="no API keys"):
        KeyRing.from_entries(["# nothing"])


def test_key_file_and_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("a:sk-from-file-123\n")
    key_file.chmod(0o600)
    ring = KeyRing.load(key_file, "b:sk-from-env-1234, c:sk-from-env-5678")
    assert ring.projects == ["a", "b", "c"]
    assert len(ring) == 3


@pytest.mark.parametrize(
    ("header", "name"),
    [("localhost:8000", "localhost"), ("[::1]:8000", "::1"), ("127.0.0.1", "127.0.0.1"),
     ("Example.COM:443", "example.com"), ("::1", "::1")],
)  # fmt: skip
def test_host_names(header: str, name: str) -> None:
    assert host_name(header) == name


def test_loopback_binds_accept_only_loopback_hosts() -> None:
    assert default_allowed_hosts("127.0.0.1") == {"localhost", "127.0.0.1", "::1"}
    assert default_allowed_hosts("::1") is not None
    assert default_allowed_hosts("0.0.0.0") is None


def test_rate_limiter_refills() -> None:
    limiter = RateLimiter(per_minute=3)
    for _ in range(3):
        limiter.check("k", now=100.0)
    with pytest.raises(QuotaExceededError) as caught:
        limiter.check("k", now=100.0)
    assert caught.value.should_retry
    assert 19 < caught.value.retry_after <= 20
    limiter.check("other", now=100.0)
    limiter.check("k", now=120.5)
    RateLimiter(per_minute=0).check("k")  # off


def test_ledger_remembers_successes_and_forgets_failures() -> None:
    ledger = CreateLedger(window=300)
    one = ledger.fingerprint("p", {"name": "a", "memory_limit": "1g"})
    assert one == ledger.fingerprint("p", {"memory_limit": "1g", "name": "a"})
    assert one != ledger.fingerprint("q", {"name": "a", "memory_limit": "1g"})
    attempt = ledger.begin(one, "p")
    assert ledger.in_flight("p") == 1
    assert ledger.earlier(one) is attempt
    ledger.end(one, "p", attempt, "cntr_1")
    assert ledger.in_flight("p") == 0
    assert attempt.done.is_set()
    assert ledger.earlier(one) is attempt
    assert attempt.container_id == "cntr_1"
    failed = ledger.begin(two := ledger.fingerprint("p", {"name": "b"}), "p")
    ledger.end(two, "p", failed, None)
    assert ledger.earlier(two) is None


def test_a_retry_waits_for_the_attempt_in_flight() -> None:
    async def scenario() -> str | None:
        ledger = CreateLedger()
        key = ledger.fingerprint("p", {"name": "slow"})
        first = ledger.begin(key, "p")
        async with anyio.create_task_group() as group:

            async def finish() -> None:
                await anyio.sleep(0.05)
                ledger.end(key, "p", first, "cntr_slow")

            group.start_soon(finish)
            earlier = ledger.earlier(key)
            assert earlier is not None
            await earlier.done.wait()
        return earlier.container_id if earlier is not None else None

    assert anyio.run(scenario) == "cntr_slow"


class _NoEngine:
    """Stands in for the Client: these requests fail before any route body runs."""

    def for_project(self, project: str) -> _NoEngine:
        return self


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        home=tmp_path / "home", server_rate_limit=20, server_max_body_bytes=64 * 1024
    )
    app = create_app(
        settings, KeyRing.from_entries([KEY]), allowed_hosts={"127.0.0.1", "localhost"}
    )
    app.state.server.client = _NoEngine()
    client = TestClient(app, base_url="http://127.0.0.1:8000")  # no `with`: no lifespan, no engine
    try:
        yield client
    finally:
        client.close()


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


def test_missing_or_wrong_key_is_401(http: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer sk-wrong-123456"}, {"Authorization": KEY}):
        error = _error(http.get("/v1/containers", headers=headers), 401)
        assert error["code"] == "invalid_api_key"
        assert KEY not in error["message"]
    _error(http.post("/v1/nowhere", headers={}), 401)


def test_foreign_host_is_403(http: TestClient) -> None:
    error = _error(http.get("/v1/containers", headers={**AUTH, "Host": "evil.example"}), 403)
    assert "evil.example" in error["message"]


def test_unknown_route_or_method_is_404(http: TestClient) -> None:
    error = _error(http.get("/v1/nope", headers=AUTH), 404)
    assert error["message"] == "Invalid URL (GET /v1/nope)"
    _error(http.put("/v1/containers", headers=AUTH), 404)
    _error(http.get("/containers", headers=AUTH), 404)


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"name": "x", "memory_limit": "3g"}, "memory_limit", "512m"),
        ({"memory_limit": "1g"}, "name", "required"),
        ({"name": "x", "colour": "red"}, "colour", "unknown parameter"),
        ({"name": "x", "network_policy": {"type": "allowlist", "domains": []}},
         "network_policy.domains", "at least 1"),  # named as the caller spelled it
        ({"name": "x", "expires_after": {"anchor": "last_active_at", "minutes": 0}},
         "expires_after.minutes", "greater than or equal to 1"),
        ([1, 2], None, "JSON object"),
    ],
)  # fmt: skip
def test_validation_is_400_never_422(
    http: TestClient, body: Any, param: str | None, words: str
) -> None:
    error = _error(http.post("/v1/containers", json=body, headers=AUTH), 400)
    assert (error["param"], error["type"]) == (param, "invalid_request_error")
    assert words in error["message"]


def test_bad_json_and_bad_queries_are_400(http: TestClient) -> None:
    error = _error(
        http.post(
            "/v1/containers",
            content=b'{"name": ',
            headers={**AUTH, "content-type": "application/json"},
        ),
        400,
    )
    assert "parse the JSON body" in error["message"]
    assert _error(http.get("/v1/containers?limit=0", headers=AUTH), 400)["param"] == "limit"
    assert _error(http.get("/v1/containers?order=up", headers=AUTH), 400)["param"] == "order"
    assert _error(http.get("/v1/files?limit=10001", headers=AUTH), 400)["param"] == "limit"


def test_oversized_bodies_are_413_while_streaming(http: TestClient) -> None:
    big = b"x" * (200 * 1024)
    error = _error(http.post("/v1/files", content=big, headers=AUTH), 413)
    assert error["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: caught while it streams in
        for _ in range(200):
            yield b"y" * 1024

    response = http.post(
        "/v1/files",
        content=chunks(),
        headers={**AUTH, "content-type": "multipart/form-data; boundary=abc"},
    )
    assert _error(response, 413)["code"] == "request_too_large"


def test_rate_limit_is_429_with_retry_after(http: TestClient) -> None:
    statuses = [http.get("/v1/nope", headers=AUTH).status_code for _ in range(25)]
    assert statuses[:20] == [404] * 20
    assert 429 in statuses
    response = http.get("/v1/nope", headers=AUTH)
    error = _error(response, 429)
    assert error["code"] == "rate_limit_exceeded"
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-should-retry"] == "true"


def test_keys_are_never_logged(http: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        http.get("/v1/containers", headers={"Authorization": "Bearer sk-wrong-secret-999"})
        http.get("/v1/nope", headers=AUTH)
    assert caplog.records
    assert "sk-wrong-secret" not in caplog.text
    assert KEY not in caplog.text


def test_openapi_documents_every_route_without_422(http: TestClient) -> None:
    response = http.get("/openapi.json")  # public: no key needed
    assert response.status_code == 200
    document = response.json()
    expected = {
        "/v1/containers": {"get", "post"},
        "/v1/containers/{container_id}": {"get", "delete"},
        "/v1/containers/{container_id}/execute": {"post"},
        "/v1/containers/{container_id}/files": {"get", "post"},
        "/v1/containers/{container_id}/files/{file_id}": {"get", "delete"},
        "/v1/containers/{container_id}/files/{file_id}/content": {"get"},
        "/v1/containers/{container_id}/snapshots": {"get", "post"},
        "/v1/containers/{container_id}/snapshots/{snapshot_id}": {"get", "delete"},
        "/v1/files": {"get", "post"},
        "/v1/files/{file_id}": {"get", "delete"},
        "/v1/files/{file_id}/content": {"get"},
        "/v1/skills": {"get", "post"},
        "/v1/skills/{skill_id}": {"get", "post", "delete"},
        "/v1/skills/{skill_id}/content": {"get"},
        "/v1/skills/{skill_id}/versions": {"get", "post"},
        "/v1/skills/{skill_id}/versions/{version}": {"get", "delete"},
        "/v1/skills/{skill_id}/versions/{version}/content": {"get"},
        "/v1/responses": {"post"},
        "/v1/responses/{response_id}": {"get", "delete"},
        "/v1/responses/{response_id}/input_items": {"get"},
    }
    assert {path: set(item) for path, item in document["paths"].items()} == expected
    text = response.text
    assert '"422"' not in text
    assert "HTTPValidationError" not in text
    assert document["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    upload = document["paths"]["/v1/containers/{container_id}/files"]["post"]["requestBody"]
    assert set(upload["content"]) == {"multipart/form-data", "application/json"}
    for item in document["paths"].values():
        for operation in item.values():
            assert {"400", "401", "404", "429", "500"} <= set(operation["responses"])


def test_unexpected_failures_are_500_without_internals(
    http: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = http.get("/v1/containers", headers=AUTH)  # the stand-in has no containers
    error = _error(response, 500)
    assert error["type"] == "server_error"
    assert "NoEngine" not in response.text
    assert "Attribute" not in response.text
    assert response.headers["x-request-id"] in caplog.text  # the log has the details


def test_an_unavailable_store_is_503_with_retry_after_and_no_address() -> None:
    status, body, headers = api_error_parts(
        StoreUnavailableError("cannot connect to the store postgresql://jsbx@10.0.0.9:5432/db")
    )
    assert status == 503
    assert body["error"]["code"] == "store_unavailable"
    assert body["error"]["type"] == "server_error"
    assert "10.0.0.9" not in body["error"]["message"]
    assert headers == {"retry-after": "2", "x-should-retry": "true"}
