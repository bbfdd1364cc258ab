"""Hostile request bodies: every route that takes a body answers them with a 400 in OpenAI's
error shape (never a 5xx), before any route code runs; the strict parser's rules one by one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.server import create_app, strict_json
from jupyter_sandbox.server.auth import KeyRing
from jupyter_sandbox.settings import Settings

KEY = "sk-local-unit-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}

HOSTILE: list[tuple[str, bytes]] = [
    ("deep arrays", b"[" * 100_000 + b"]" * 100_000),
    ("deep objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    ("nesting past the limit", b'{"name": ' + b"[" * 40 + b"]" * 40 + b"}"),
    ("unclosed deep arrays", b"[" * 200_000),
    ("float overflow", b'{"name": "x", "lifetime_seconds": 1e999999}'),
    ("negative float overflow", b'{"name": "x", "timeout": -1e999999, "code": "1"}'),
    ("a 100000-digit integer", b'{"name": "x", "lifetime_seconds": ' + b"9" * 100_000 + b"}"),
    ("NaN", b'{"name": "x", "timeout": NaN, "code": "1"}'),
    ("Infinity", b'{"name": "x", "timeout": Infinity, "code": "1"}'),
    ("-Infinity", b'{"name": "x", "expires_after": {"minutes": -Infinity}}'),
    ("duplicate keys", b'{"name": "x", "name": "y"}'),
    ("invalid UTF-8", b'{"name": "\xff\xfe"}'),
    ("a lone surrogate", b'{"name": "\\ud800"}'),
    ("a lone surrogate key", b'{"\\udfff": 1}'),
    ("truncated", b'{"name": '),
    ("NUL bytes", b'{"name": "x"}\x00\x00'),
    ("UTF-16", '{"name": "x"}'.encode("utf-16")),
]


class _NoEngine:
    def for_project(self, project: str) -> _NoEngine:
        return self


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path / "home", server_rate_limit=0)
    app = create_app(settings, KeyRing.from_entries([KEY]), allowed_hosts={"127.0.0.1"})
    app.state.server.client = _NoEngine()  # never used: the body is refused first
    client = TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    try:
        yield client
    finally:
        client.close()


def _body_routes(http: TestClient) -> list[tuple[str, str]]:
    document = http.get("/openapi.json").json()
    routes = [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "application/json" in (operation.get("requestBody") or {}).get("content", {})
    ]
    assert len(routes) >= 4, routes  # containers, execute, container files, skills...
    return routes


@pytest.mark.parametrize(("what", "body"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_every_json_route_answers_hostile_bodies_with_400(
    http: TestClient, what: str, body: bytes
) -> None:
    for method, path in _body_routes(http):
        for content_type in ("application/json", "application/merge-patch+json", None):
            headers = {**AUTH, **({"content-type": content_type} if content_type else {})}
            response = http.request(method, path, content=body, headers=headers)
            assert response.status_code == 400, (what, method, path, response.text[:300])
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert "JSON body" in error["message"]
            if error["param"] is not None:
                assert error["message"].startswith(f"Invalid {error['param']} ")
            assert response.headers["x-request-id"].startswith("req_")


def test_bodies_of_other_types_are_not_parsed_as_json(http: TestClient) -> None:
    # Not JSON by its Content-Type: left to the route (here: refused by validation, 400).
    response = http.post(
        "/v1/containers", content=b"[" * 100_000, headers={**AUTH, "content-type": "text/plain"}
    )
    assert response.status_code == 400, response.text


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'{"a": [1, 2.5, "x", null, true]}', {"a": [1, 2.5, "x", None, True]}),
        (b'"\\ud83d\\ude00"', "\U0001f600"),  # a surrogate pair is one character: fine
        (b"[" * strict_json.MAX_DEPTH + b"]" * strict_json.MAX_DEPTH, [[]]),
        (b"1e308", 1e308),
    ],
)
def test_strict_parser_accepts_ordinary_json(raw: bytes, value: Any) -> None:
    parsed = strict_json.parse(raw)
    if raw.startswith(b"[["):
        depth = 0
        while isinstance(parsed, list) and parsed:
            parsed, depth = parsed[0], depth + 1
        assert depth == strict_json.MAX_DEPTH - 1
    else:
        assert parsed == value


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"code": "1", "timeout": NaN}', "timeout"),
        (b'{"name": "x", "expires_after": {"minutes": -Infinity}}', "expires_after.minutes"),
        (b'{"name": "x", "lifetime_seconds": 1e999999}', "lifetime_seconds"),
        (b'{"limit": ' + b"9" * 5000 + b"}", "limit"),
        (b'{"skills": [{"name": "\\ud800"}]}', "skills.name"),
        (b'{"name": "x", "name": "y"}', "name"),
        (b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "a"),
        (b"[NaN]", None),
    ],
)
def test_strict_parser_names_the_parameter(raw: bytes, param: str | None) -> None:
    with pytest.raises(BadRequestError) as caught:
        strict_json.parse(raw)
    assert caught.value.param == param


@pytest.mark.parametrize(("what", "body"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_strict_parser_refuses_with_one_error(what: str, body: bytes) -> None:
    with pytest.raises(BadRequestError):
        strict_json.parse(body)
