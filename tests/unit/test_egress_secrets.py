"""domain_secrets on the proxy's side, without Docker: the per-sandbox files (private, removed
with their sandbox), the squid lines of a bump port, and the egress log of injections."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jupyter_sandbox.backends.egress_network import parse_inject_log
from jupyter_sandbox.backends.egress_secrets import (
    SecretEntry,
    SecretsConfig,
    new_placeholder,
    render_sandbox_conf,
)

VALUE = "sk-unit-4f9c2b7e1d0a6c3e8b5f"


def test_placeholders_are_random_and_hint_nothing() -> None:
    one, two = new_placeholder("API_KEY"), new_placeholder("API_KEY")
    assert one != two
    assert one.startswith("jsbx-secret-api_key-")
    assert len(one) > 40
    entry = SecretEntry("api.example.com", "API_KEY", one, VALUE)
    assert VALUE not in repr(entry)
    assert VALUE not in str(entry)


def test_a_bump_port_serves_one_sandbox_and_its_secret_domains_only() -> None:
    text = render_sandbox_conf("cntr_a", 40007, "198.18.0.3", ["api.example.com", ".wild.example"])
    lines = text.splitlines()[1:]
    assert lines[0].startswith("http_port 127.0.0.1:40007 ssl-bump ")
    assert "tls-cert=/etc/jsbx/secrets/40007.pem" in lines[0]
    assert "acl jsbx_src_40007 src 198.18.0.3" in lines
    assert "acl jsbx_dst_40007 dstdomain api.example.com .wild.example" in lines
    assert "cache_peer_access jsbx_peer_40007 allow jsbx_src_40007 jsbx_dst_40007 CONNECT" in lines
    assert lines.index("cache_peer_access jsbx_peer_40007 deny all") > lines.index(
        "cache_peer_access jsbx_peer_40007 allow jsbx_src_40007 jsbx_dst_40007 CONNECT"
    )
    access = [line for line in lines if line.startswith("http_access")]
    # Every rule is about this port only; the one allow comes after every deny but the last.
    assert all(line.split()[2] == "jsbx_port_40007" for line in access)
    assert access[-2:] == [
        "http_access allow jsbx_port_40007 tls_port",
        "http_access deny jsbx_port_40007",
    ]
    assert "http_access deny jsbx_port_40007 !jsbx_dst_40007" in access
    assert "http_access deny jsbx_port_40007 blocked_address" in access
    # Inside a tunnel, a request for the other secret domain (Host header, absolute URI).
    assert (
        "http_access deny jsbx_port_40007 !CONNECT jsbx_dst_40007_1 !jsbx_tunnel_40007_1" in access
    )
    assert "acl jsbx_tunnel_40007_1 ssl::server_name .wild.example" in lines


@pytest.mark.skipif(os.geteuid() != 0, reason="the files are given to squid's uid (13)")
def test_secret_files_are_private_and_go_with_their_sandbox(tmp_path: Path) -> None:
    config = SecretsConfig(tmp_path / "config", tmp_path)
    entries = [SecretEntry("api.example.com", "API_KEY", new_placeholder("API_KEY"), VALUE)]
    port_a = config.add("cntr_a", "198.18.0.3", entries, days=2)
    port_b = config.add("cntr_b", "198.18.0.11", entries, days=2)
    assert port_a != port_b
    assert config.owners() == {port_a: "cntr_a", port_b: "cntr_b"}
    assert (config.directory.stat().st_mode & 0o777) == 0o700
    for path in config.directory.iterdir():
        assert (path.stat().st_mode & 0o777) == 0o600, path
        assert path.stat().st_uid == 13, path
    holders = [p for p in tmp_path.rglob("*") if p.is_file() and VALUE in p.read_text()]
    assert sorted(p.name for p in holders) == sorted([f"{port_a}.json", f"{port_b}.json"])
    secrets = json.loads((config.directory / f"{port_a}.json").read_text())
    assert secrets["container_id"] == "cntr_a"
    assert secrets["secrets"][0]["value"] == VALUE
    # The sandbox's bundle holds its CA's certificate, never the CA's key.
    bundle = config.bundle_path("cntr_a").read_text()
    assert "BEGIN CERTIFICATE" in bundle
    assert "PRIVATE KEY" not in bundle
    assert "PRIVATE KEY" in (config.directory / f"{port_a}.pem").read_text()
    assert config.drop(keep={"cntr_b"}) is True
    assert config.owners() == {port_b: "cntr_b"}
    assert not config.bundle_path("cntr_a").exists()
    assert not list(config.directory.glob(f"{port_a}.*"))
    assert config.drop(keep={"cntr_b"}) is False
    assert (config.directory / "00-base.conf").exists()


def test_the_egress_log_names_secrets_never_values() -> None:
    lines = [
        "10.500 cntr_a injected API_KEY api.example.com",
        "11.000 cntr_a placeholder-elsewhere API_KEY other.example",
        "12.000 cntr_b injected API_KEY api.example.com",
        "garbage",
        "x cntr_a injected API_KEY api.example.com",
    ]
    decisions = parse_inject_log(lines, "cntr_a")
    assert [(d.host, d.reason, d.secret) for d in decisions] == [
        ("api.example.com", "secret API_KEY injected", "API_KEY"),
        (
            "other.example",
            "placeholder of secret API_KEY sent to another domain, left unchanged",
            "API_KEY",
        ),
    ]
    assert all(d.decision == "allowed" and d.container_id == "cntr_a" for d in decisions)


def test_without_root_secrets_are_refused_not_left_readable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Only root can give the files to squid's user alone: otherwise a clear 400."""
    from typing import Any, cast

    from jupyter_sandbox import BadRequestError
    from jupyter_sandbox.backends.egress_network import EgressNetworks
    from jupyter_sandbox.settings import Settings
    from jupyter_sandbox.types.container import NetworkPolicyAllowlist

    policy = NetworkPolicyAllowlist.model_validate(
        {
            "type": "allowlist",
            "allowed_domains": ["api.example.com"],
            "domain_secrets": [{"domain": "api.example.com", "name": "K", "value": VALUE}],
        }
    )
    service = EgressNetworks(Settings(home=tmp_path), cast(Any, None))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(BadRequestError) as caught:
        service.check(policy)
    assert caught.value.param == "network_policy.domain_secrets"
    assert VALUE not in str(caught.value)
