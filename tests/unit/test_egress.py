"""Egress rules without Docker: policy validation, the ceiling, the squid helper's decisions,
the log parser and the blocked ranges."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import ipaddress
import json
import re
from importlib.resources import files
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import ValidationError

from jupyter_sandbox import BadRequestError
from jupyter_sandbox.backends.egress import BLOCKED_NETWORKS, blocked_networks
from jupyter_sandbox.backends.egress_network import parse_access_log, proxy_environment
from jupyter_sandbox.core.network import covers
from jupyter_sandbox.core.validation import parse
from jupyter_sandbox.types.container import ContainerCreateParams

RECIPE = files("jupyter_sandbox.backends") / "egress_recipe"


def helper() -> ModuleType:
    path = str(RECIPE / "egress-policy")
    loader = importlib.machinery.SourceFileLoader("egress_policy", path)
    spec = importlib.util.spec_from_loader("egress_policy", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"type": "allowlist", "allowed_domains": []}, "at least 1"),
        ({"type": "allowlist", "domains": ["10.0.0.1"]}, "IP address"),
        ({"type": "allowlist", "domains": ["[::1]"]}, "not a valid domain"),
        ({"type": "allowlist", "domains": ["localhost"]}, "not a valid domain"),
        ({"type": "allowlist", "domains": ["a..b.com"]}, "not a valid domain"),
        ({"type": "allowlist", "domains": ["*"]}, "only allowed as a leading"),
        ({"type": "allowlist", "domains": ["a.*.com"]}, "only allowed as a leading"),
        ({"type": "allowlist", "domains": [f"d{i}.example.com" for i in range(101)]}, "100"),
        ({"type": "allowlist"}, "is required"),
        ({"type": "open"}, "network_policy"),
    ],
)
def test_bad_policies_are_refused_naming_network_policy(policy: Any, message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse(ContainerCreateParams, {"name": "x", "network_policy": policy})
    assert caught.value.param is not None
    assert caught.value.param.startswith("network_policy")
    assert message in caught.value.message


def test_both_spellings_normalize_to_allowed_domains() -> None:
    seed = parse(ContainerCreateParams, {"name": "x", "network_policy": {
        "type": "allowlist", "domains": ["API.Example.com.", "*.GitHubUserContent.com", "bücher.de"]
    }})  # fmt: skip
    assert seed.network_policy.model_dump() == {
        "type": "allowlist",
        "allowed_domains": ["api.example.com", "*.githubusercontent.com", "xn--bcher-kva.de"],
    }
    spec = parse(ContainerCreateParams, {"name": "x", "network_policy": {
        "type": "allowlist", "allowed_domains": ["pypi.org"]}})  # fmt: skip
    assert spec.network_policy.model_dump()["allowed_domains"] == ["pypi.org"]


@pytest.mark.parametrize(
    ("ceiling", "requested", "allowed"),
    [
        ("pypi.org", "pypi.org", True),
        ("pypi.org", "files.pypi.org", False),
        ("*.pypi.org", "files.pypi.org", True),
        ("*.pypi.org", "pypi.org", False),
        ("*.pypi.org", "*.pypi.org", True),
        ("*.pypi.org", "*.a.pypi.org", True),
        ("*.pypi.org", "*.org", False),
        ("pypi.org", "*.pypi.org", False),
        ("*.pypi.org", "evilpypi.org", False),
    ],
)
def test_ceiling_covers(ceiling: str, requested: str, allowed: bool) -> None:
    assert covers(ceiling, requested) is allowed


@pytest.mark.parametrize(
    ("method", "host", "port", "reason"),
    [
        ("GET", "allowed.test", "80", "allowed"),
        ("CONNECT", "allowed.test", "443", "allowed"),
        ("CONNECT", "ALLOWED.test.", "443", "allowed"),
        ("GET", "a.wild.test", "443", "allowed"),
        ("GET", "x.y.wild.test", "80", "allowed"),
        ("GET", "wild.test", "80", "not_listed"),
        ("GET", "evilwild.test", "80", "not_listed"),
        ("GET", "allowed.test.evil", "80", "not_listed"),
        ("GET", "evilallowed.test", "80", "not_listed"),
        ("GET", "xn--bcher-kva.de", "80", "not_listed"),
        ("CONNECT", "allowed.test", "22", "port"),
        ("CONNECT", "allowed.test", "80", "port"),
        ("CONNECT", "allowed.test", "8443", "port"),
        ("GET", "allowed.test", "8080", "port"),
        ("GET", "169.254.169.254", "80", "ip_literal"),
        ("GET", "[fd00:ec2::254]", "80", "ip_literal"),
        ("GET", "[::ffff:169.254.169.254]", "80", "ip_literal"),
        ("GET", "2852039166", "80", "ip_literal"),
        ("GET", "0xa9fea9fe", "80", "ip_literal"),
        ("GET", "0251.0376.0251.0376", "80", "ip_literal"),
        ("GET", "-", "80", "no_host"),
        ("GET", "bad host", "80", "bad_host"),
    ],
)
def test_helper_decisions(tmp_path: Path, method: str, host: str, port: str, reason: str) -> None:
    policy = {"container_id": "cntr_a", "allowed_domains": ["allowed.test", "*.wild.test"]}
    (tmp_path / "198.18.0.3.json").write_text(json.dumps(policy))
    allowed, owner, got, message = helper().decide(
        str(tmp_path), ["198.18.0.3", method, host, port]
    )
    assert (got, owner, allowed) == (reason, "cntr_a", reason == "allowed")
    if not allowed:
        assert "blocked by network policy" in message or "refused" in message


def test_helper_refuses_unknown_sources_and_speaks_squid(tmp_path: Path) -> None:
    module = helper()
    assert module.decide(str(tmp_path), ["198.18.0.11", "GET", "allowed.test", "80"])[2] == (
        "unknown_source"
    )
    assert module.decide(str(tmp_path), ["../../etc/passwd", "GET", "a.test", "80"])[2] == (
        "unknown_source"
    )
    assert module.quote('say "hi" \\') == '"say \\"hi\\" \\\\"'


def test_log_parser_keeps_one_sandbox_and_names_reasons() -> None:
    lines = [
        "1.000 198.18.0.3 cntr_a%20allowed GET allowed.test 80 200 - 10.0.0.9",
        "2.000 198.18.0.3 cntr_a%20not_listed GET other.test 80 403 ERR_JSBX_POLICY -",
        "3.000 198.18.0.3 cntr_a%20allowed GET private.test 80 403 ERR_JSBX_ADDRESS -",
        "4.000 198.18.0.11 cntr_b%20allowed CONNECT b.test 443 200 - 10.0.0.9",
        "5.000 198.18.0.1 - NONE - 0 0 error:transaction-end-before-headers -",
    ]
    decisions = parse_access_log(lines, "cntr_a")
    assert [(d.host, d.decision, d.reason) for d in decisions] == [
        ("allowed.test", "allowed", None),
        ("other.test", "denied", "the host is not on the sandbox's allowlist"),
        ("private.test", "denied", "the name resolves to a private, loopback, link-local or "
         "metadata address"),
    ]  # fmt: skip
    assert decisions[0].server_ip == "10.0.0.9"
    assert decisions[1].server_ip is None


def test_proxy_environment_has_both_spellings() -> None:
    env = proxy_environment("198.18.0.2")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        assert env[name] == env[name.lower()]
    assert env["HTTPS_PROXY"] == "http://198.18.0.2:3128"


def test_blocked_ranges_cover_the_threats_and_match_the_kernel_fence() -> None:
    networks = [ipaddress.ip_network(n) for n in BLOCKED_NETWORKS]
    for address in ("169.254.169.254", "100.100.100.200", "168.63.129.16", "127.0.0.1",
                    "10.1.2.3", "172.17.0.1", "192.168.1.1", "100.64.0.1", "fd00:ec2::254",
                    "::1", "fe80::1", "198.18.0.2", "224.0.0.1"):  # fmt: skip
        ip = ipaddress.ip_address(address)
        assert any(ip in n for n in networks if n.version == ip.version), address
    entrypoint = (RECIPE / "egress-entrypoint").read_text()
    fenced = set(re.findall(r"\d+\.\d+\.\d+\.\d+/\d+", entrypoint.split("iptables")[0]))
    assert fenced == {n for n in BLOCKED_NETWORKS if ":" not in n}


def test_exemption_carves_out_only_its_own_range() -> None:
    carved = [ipaddress.ip_network(n) for n in blocked_networks(["10.213.5.0/24"])]
    assert not any(ipaddress.ip_address("10.213.5.9") in n for n in carved if n.version == 4)
    assert any(ipaddress.ip_address("10.213.6.9") in n for n in carved if n.version == 4)
    assert any(ipaddress.ip_address("10.0.0.1") in n for n in carved if n.version == 4)
    assert blocked_networks([]) == list(BLOCKED_NETWORKS)


def test_test_overrides_are_off_by_default_and_validated() -> None:
    from jupyter_sandbox.settings import Settings

    settings = Settings()
    assert settings.test_egress_resolver is None
    assert settings.test_egress_exempt == []
    assert settings.test_egress_networks == []
    with pytest.raises(ValidationError):
        Settings(test_egress_exempt=["not a cidr"])
    with pytest.raises(ValidationError):
        Settings(egress_allowed_domains=["10.0.0.1"])


def test_operator_ceiling_bounds_every_allowlist() -> None:
    from jupyter_sandbox.core.network import check_ceiling
    from jupyter_sandbox.settings import Settings
    from jupyter_sandbox.types.container import NetworkPolicyAllowlist

    settings = Settings(egress_allowed_domains=["pypi.org", "*.githubusercontent.com"])
    allowed = NetworkPolicyAllowlist(
        type="allowlist", allowed_domains=["pypi.org", "raw.githubusercontent.com"]
    )
    check_ceiling(settings, allowed)
    with pytest.raises(BadRequestError) as caught:
        check_ceiling(
            settings, NetworkPolicyAllowlist(type="allowlist", allowed_domains=["evil.example"])
        )
    assert caught.value.param == "network_policy"
    assert "evil.example not permitted on this host" in caught.value.message


def _rendered_squid_conf() -> list[str]:
    from string import Template

    from jupyter_sandbox.backends.egress_image import squid_conf_template

    text = Template(squid_conf_template()).substitute(
        dns_nameservers="",
        max_connections=64,
        blocked_addresses="10.0.0.0/8",
        bump_ports="40000-40999",
        tls_outgoing="",
    )
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_squid_conf_refuses_the_proxy_itself_before_anything_is_allowed() -> None:
    """The deny chain starts with the manager (after naming the sandbox), then the internal
    URLs, methods and schemes; the only allow is the last line. The integration tests
    (test_network_proxy.py) prove the behaviour; this pins the order and the audit's choices."""
    lines = _rendered_squid_conf()
    access = [line for line in lines if line.startswith("http_access")]
    # First, domain_secrets: the host's own warm-up CONNECTs (from the proxy's loopback only,
    # and never direct), then whatever reached a bump port (loopback) and no sandbox's own
    # rules (included just before) allowed; sandbox requests to the front port match neither.
    assert access[:2] == [
        "http_access allow jsbx_front jsbx_loopback CONNECT tls_port",
        "http_access deny jsbx_bumped",
    ]
    assert "acl jsbx_loopback src 127.0.0.1" in lines
    assert "never_direct allow jsbx_front jsbx_loopback" in lines
    assert lines.index("include /etc/jsbx/secrets/*.conf") < lines.index(access[0])
    access = access[2:]
    assert access[:4] == [
        "http_access deny sandbox_named manager",
        "http_access deny proxy_internal",
        "http_access deny !safe_methods",
        "http_access deny !CONNECT !http_scheme",
    ]
    assert [line for line in access if " allow " in line] == ["http_access allow all"]
    assert access[-1] == "http_access allow all"
    assert "acl safe_methods method GET HEAD POST PUT PATCH DELETE OPTIONS CONNECT" in lines
    for directive in (
        "via off", "forwarded_for delete", "httpd_suppress_version_string on", "icp_port 0",
        "htcp_port 0", "snmp_port 0", "pinger_enable off", "digest_generation off",
        "ecap_enable off", "cachemgr_passwd disable all",
        "global_internal_static off", "cache deny all", "email_err_data off",
        "reply_header_access X-Cache deny all", "reply_header_access X-Squid-Error deny all",
        "half_closed_clients off", "pipeline_prefetch 0", "request_header_max_size 64 KB",
        "reply_header_max_size 64 KB", "netdb_filename none",
        "server_persistent_connections off",
    ):  # fmt: skip
        assert directive in lines, directive
    never = ("url_rewrite_program", "ftp_port", "cache_peer", "ecap_service")
    assert not [line for line in lines if line.split()[0] in never]
    # ICAP only for domain_secrets: one loopback service, fail closed, bump ports only.
    assert [line for line in lines if line.startswith(("icap_service", "adaptation_"))] == [
        "icap_service jsbx_inject reqmod_precache icap://127.0.0.1:1344/inject bypass=off "
        "on-overload=block",
        'adaptation_meta X-Jsbx-Port "%>lp" jsbx_bumped',
        "adaptation_access jsbx_inject allow jsbx_bumped",
        "adaptation_access jsbx_inject deny all",
    ]
    assert [line for line in lines if line.startswith("ssl_bump")] == [
        "ssl_bump bump jsbx_bumped",
        "ssl_bump terminate all",
    ]
    assert [line for line in lines if line.startswith("http_port")] == ["http_port 3128"]
    # Every page a deny_info names ships in the image.
    from jupyter_sandbox.backends.egress_image import RECIPE_FILES

    pages = {line.split()[1] for line in lines if line.startswith("deny_info")}
    assert {f"errors/{page}" for page in pages} <= set(RECIPE_FILES)


def test_log_parser_names_the_proxy_itself_refusals() -> None:
    lines = [
        "1.000 198.18.0.3 cntr_a%20allowed GET allowed.test 80 403 ERR_JSBX_PROXY -",
        "2.000 198.18.0.3 cntr_a%20allowed GET allowed.test 80 403 ERR_JSBX_SCHEME -",
        "3.000 198.18.0.3 cntr_a%20allowed TRACE allowed.test 80 403 ERR_JSBX_METHOD -",
    ]
    assert [d.reason for d in parse_access_log(lines, "cntr_a")] == [
        "the proxy's own pages (cache manager, internal URLs) are not reachable",
        "only http:// requests, and CONNECT to 443, are allowed",
        "the request method is not allowed",
    ]
