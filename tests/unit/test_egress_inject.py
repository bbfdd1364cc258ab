"""The ICAP adapter that would put domain secrets in place of their placeholders (issue 17;
`egress_recipe/egress-inject`, not wired into the image yet). Spoken to over a real socket,
as squid would: OPTIONS, REQMOD without and with a body (preview 0, ieof, streamed),
another domain, an unknown port, and malformed messages."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import socket
import threading
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from types import ModuleType

import pytest

RECIPE = files("jupyter_sandbox.backends") / "egress_recipe"
VALUE = "sk-live-9d8c7b6a5f4e3d2c"
PLACEHOLDER = "jsbx-secret-API_KEY-0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def adapter() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("egress_inject", str(RECIPE / "egress-inject"))
    spec = importlib.util.spec_from_loader("egress_inject", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The adapter on an ephemeral loopback port; port 3129's sandbox holds one secret."""
    module = adapter()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "3129.json").write_text(
        json.dumps(
            {
                "container_id": "cntr_a",
                "secrets": [
                    {"domain": "api.example.com", "name": "API_KEY",
                     "placeholder": PLACEHOLDER, "value": VALUE},
                ],
            }
        )
    )  # fmt: skip
    log = tmp_path / "inject.log"
    module.Handler.directory, module.Handler.log_file = str(secrets), str(log)
    server = module.Server(("127.0.0.1", 0), module.Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], log
    finally:
        server.shutdown()
        server.server_close()


def icap(port: int, message: bytes, then: bytes = b"") -> bytes:
    """Send one ICAP message (and, after a 100 Continue, `then`); read until the answer ends."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(message)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith(b"ICAP/1.0 100 Continue\r\n\r\n") and then:
                sock.sendall(then)
                then = b""
                data = data[len(b"ICAP/1.0 100 Continue\r\n\r\n") :]
            if _complete(data):
                break
    return data


def _complete(data: bytes) -> bool:
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    if b" 200 " not in head.split(b"\r\n")[0] or b"Encapsulated: null-body=0" in head:
        return True
    encapsulated = head.split(b"Encapsulated: ")[1].split(b"\r\n")[0].decode()
    if "null-body" in encapsulated:
        return len(rest) >= int(encapsulated.rpartition("=")[2])
    _http_head, sep, chunked = rest.partition(b"\r\n\r\n")
    return bool(sep) and (chunked == b"0\r\n\r\n" or chunked.endswith(b"\r\n0\r\n\r\n"))


def reqmod(http_head: str, *, port: str = "3129", body: bytes | None = None,
           preview: bool = False, ieof: bool = False) -> bytes:  # fmt: skip
    raw = http_head.replace("\n", "\r\n").encode() + b"\r\n\r\n"
    kind = "null-body" if body is None else "req-body"
    head = (
        f"REQMOD icap://127.0.0.1:1344/inject ICAP/1.0\r\nHost: 127.0.0.1\r\n"
        f"Allow: 204\r\nX-Jsbx-Port: {port}\r\n"
        + ("Preview: 0\r\n" if preview else "")
        + f"Encapsulated: req-hdr=0, {kind}={len(raw)}\r\n\r\n"
    )
    message = head.encode() + raw
    if body is not None:
        if preview:
            message += b"0; ieof\r\n\r\n" if ieof else b"0\r\n\r\n"
        else:
            message += (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    return message


def test_options_announce_reqmod_with_a_zero_preview(service: tuple[int, Path]) -> None:
    port, _ = service
    answer = icap(port, b"OPTIONS icap://127.0.0.1/inject ICAP/1.0\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"ICAP/1.0 200 OK\r\n")
    assert b"Methods: REQMOD\r\n" in answer
    assert b"Preview: 0\r\n" in answer


def test_the_secret_replaces_its_placeholder_in_headers_and_query(
    service: tuple[int, Path],
) -> None:
    port, log = service
    answer = icap(
        port,
        reqmod(
            f"GET https://api.example.com/v1/x?key={PLACEHOLDER}&a=1 HTTP/1.1\n"
            f"Host: api.example.com\nAuthorization: Bearer {PLACEHOLDER}\n"
            f"X-Custom: {PLACEHOLDER}"
        ),
    )
    assert answer.startswith(b"ICAP/1.0 200 OK\r\n")
    http = answer.partition(b"\r\n\r\n")[2].decode()
    assert http.startswith(f"GET https://api.example.com/v1/x?key={VALUE}&a=1 HTTP/1.1\r\n")
    assert f"Authorization: Bearer {VALUE}\r\n" in http
    assert f"X-Custom: {VALUE}\r\n" in http
    assert PLACEHOLDER not in http
    lines = log.read_text().splitlines()
    assert [line.split()[1:] for line in lines] == [
        ["cntr_a", "injected", "API_KEY", "api.example.com"]
    ]
    assert VALUE not in log.read_text()


def test_the_placeholder_sent_elsewhere_is_forwarded_unchanged_and_logged(
    service: tuple[int, Path],
) -> None:
    port, log = service
    answer = icap(
        port,
        reqmod(
            f"GET https://other.example.com/?key={PLACEHOLDER} HTTP/1.1\n"
            f"Host: api.example.com\nAuthorization: Bearer {PLACEHOLDER}"
        ),
    )
    assert answer.startswith(b"ICAP/1.0 204 No Content\r\n")  # squid sends the original
    assert [line.split()[1:] for line in log.read_text().splitlines()] == [
        ["cntr_a", "placeholder-elsewhere", "API_KEY", "other.example.com"]
    ]


def test_the_path_and_header_names_are_not_rewritten(service: tuple[int, Path]) -> None:
    port, _ = service
    answer = icap(port, reqmod(f"GET https://api.example.com/{PLACEHOLDER} HTTP/1.1\nHost: a"))
    assert answer.startswith(b"ICAP/1.0 204 No Content\r\n")


def test_a_port_without_secrets_changes_nothing(service: tuple[int, Path]) -> None:
    port, log = service
    for sandbox_port in ("3130", "../3129", ""):
        answer = icap(
            port,
            reqmod(
                f"GET https://api.example.com/?k={PLACEHOLDER} HTTP/1.1\nHost: api.example.com",
                port=sandbox_port,
            ),
        )
        assert answer.startswith(b"ICAP/1.0 204 No Content\r\n"), sandbox_port
    assert not log.exists()


def test_a_body_is_relayed_after_the_preview(service: tuple[int, Path]) -> None:
    port, _ = service
    body = b"x" * 100_000
    pieces = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    chunks = b"".join(b"%x\r\n" % len(piece) + piece + b"\r\n" for piece in pieces)
    chunks += b"0\r\n\r\n"
    answer = icap(
        port,
        reqmod(
            f"POST https://api.example.com/up HTTP/1.1\nHost: api.example.com\n"
            f"Authorization: Bearer {PLACEHOLDER}\nContent-Length: {len(body)}",
            body=body,
            preview=True,
        ),
        then=chunks,
    )
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"ICAP/1.0 200 OK\r\n")
    http_head, _, encoded = rest.partition(b"\r\n\r\n")
    assert f"Authorization: Bearer {VALUE}".encode() in http_head
    relayed = b""
    while True:
        size_line, _, encoded = encoded.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        relayed += encoded[:size]
        encoded = encoded[size + 2 :]
    assert relayed == body


def test_an_empty_body_ends_with_the_preview(service: tuple[int, Path]) -> None:
    port, _ = service
    answer = icap(
        port,
        reqmod(
            f"POST https://api.example.com/?k={PLACEHOLDER} HTTP/1.1\nHost: api.example.com\n"
            "Content-Length: 0",
            body=b"",
            preview=True,
            ieof=True,
        ),
    )
    assert answer.startswith(b"ICAP/1.0 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\n0\r\n\r\n")
    assert VALUE.encode() in answer


@pytest.mark.parametrize(
    "message",
    [
        b"RESPMOD icap://x/inject ICAP/1.0\r\nEncapsulated: null-body=0\r\n\r\n",
        b"REQMOD icap://x/inject ICAP/1.0\r\nEncapsulated: res-hdr=0, null-body=4\r\n\r\nab\r\n",
        b"REQMOD icap://x/inject ICAP/1.0\r\nEncapsulated: req-hdr=0, null-body=400\r\n\r\nGET",
        b"REQMOD icap://x/inject ICAP/1.0\r\nEncapsulated: req-hdr=0, null-body=9\r\n\r\n"
        b"GET /\r\n\r\n",
    ],
)
def test_malformed_messages_are_icap_errors(service: tuple[int, Path], message: bytes) -> None:
    port, _ = service
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(message)
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(4096)
    assert answer.startswith(b"ICAP/1.0 400 Bad Request\r\n"), answer
