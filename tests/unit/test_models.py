"""Validation of what users send: each bad input names its parameter."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_sandbox import BadRequestError
from jupyter_sandbox.core.containers import check_memory
from jupyter_sandbox.core.validation import parse
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import (
    ContainerCreateParams,
    normalize_domain,
    normalize_memory,
)
from jupyter_sandbox.types.execution import Execution, StreamOutput
from jupyter_sandbox.types.page import ListParams


def test_minimal_create_gets_defaults() -> None:
    params = parse(ContainerCreateParams, {"name": "data"})
    assert params.memory_limit is None
    assert params.network_policy.type == "disabled"
    assert params.file_ids == []


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 257}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"name": "x", "memory_limit": "3g"}, "memory_limit"),
        ({"name": "x", "memory_limit": 1}, "memory_limit"),
        ({"name": "x", "colour": "red"}, "colour"),
        (
            {"name": "x", "expires_after": {"anchor": "last_active_at", "minutes": -1}},
            "expires_after",
        ),
        (
            {"name": "x", "expires_after": {"anchor": "last_active_at", "minutes": 1441}},
            "expires_after",
        ),
        (
            {"name": "x", "expires_after": {"anchor": "created_at", "minutes": 5}},
            "expires_after.anchor",
        ),
        ({"name": "x", "expires_after": {"seconds": 90000}}, "expires_after"),
        ({"name": "x", "network_policy": {"type": "open"}}, "network_policy"),
        ({"name": "x", "network_policy": {"type": "allowlist", "domains": []}}, "network_policy"),
        (
            {"name": "x", "network_policy": {"type": "allowlist", "domains": ["10.0.0.1"]}},
            "network_policy",
        ),
        ({"name": "x", "lifetime_seconds": 0}, "lifetime_seconds"),
    ],
)
def test_bad_create_input_names_the_parameter(data: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse(ContainerCreateParams, data)
    assert caught.value.param is not None
    assert caught.value.param.startswith(param)
    assert param.split(".")[0] in caught.value.message


def test_memory_limit_error_lists_allowed_values() -> None:
    with pytest.raises(BadRequestError) as caught:
        parse(ContainerCreateParams, {"name": "x", "memory_limit": "3g"})
    assert "512m, 1g, 2g, 4g" in caught.value.message
    assert caught.value.param == "memory_limit"


def test_seed_seconds_become_minutes() -> None:
    params = parse(
        ContainerCreateParams,
        {"name": "x", "expires_after": {"anchor": "last_active_at", "seconds": 90}},
    )
    assert params.expires_after is not None
    assert params.expires_after.minutes == 2


def test_seed_domains_spelling_is_accepted_and_normalized() -> None:
    params = parse(
        ContainerCreateParams,
        {
            "name": "x",
            "network_policy": {"type": "allowlist", "domains": ["API.Example.com.", "*.b.org"]},
        },
    )
    assert params.network_policy.model_dump() == {
        "type": "allowlist",
        "allowed_domains": ["api.example.com", "*.b.org"],
    }


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("example.com", "example.com"),
        ("*.example.com", "*.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("EXAMPLE.com.", "example.com"),
    ],
)
def test_domain_normalization(domain: str, expected: str) -> None:
    assert normalize_domain(domain) == expected


@pytest.mark.parametrize(
    "domain", ["", "*", "a.*.com", "1.2.3.4", "[::1]", "localhost", "-a.com", "a..com", "a b.com"]
)
def test_bad_domains_are_refused(domain: str) -> None:
    with pytest.raises(ValueError, match=r"domain|IP|'\*'"):
        normalize_domain(domain)


@pytest.mark.parametrize(
    ("data", "param"),
    [({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"order": "up"}, "order")],
)
def test_bad_list_params(data: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse(ListParams, data)
    assert caught.value.param == param


def test_execution_joins_streams_and_dumps_them() -> None:
    execution = Execution(
        container_id="cntr_x",
        status="ok",
        duration=0.1,
        outputs=[
            StreamOutput(name="stdout", text="a"),
            StreamOutput(name="stderr", text="b"),
            StreamOutput(name="stdout", text="c"),
        ],
    )
    assert execution.stdout == "ac"
    assert execution.stderr == "b"
    dumped = execution.model_dump()
    assert dumped["stdout"] == "ac"
    assert dumped["outputs"][0] == {"type": "stream", "name": "stdout", "text": "a"}


@pytest.mark.parametrize(
    ("spelling", "tier"),
    [
        ("1g", "1g"), ("1G", "1g"), ("1GB", "1g"), ("1gb", "1g"), ("1GiB", "1g"),
        ("1024m", "1g"), ("1024MB", "1g"), (" 2g ", "2g"), ("0.5g", "512m"), ("512M", "512m"),
        ("4096m", "4g"), ("16G", "16g"), ("65536m", "64g"),
    ],
)  # fmt: skip
def test_one_memory_parser_for_every_spelling(spelling: str, tier: str) -> None:
    assert normalize_memory(spelling) == tier
    assert (
        parse(ContainerCreateParams, {"name": "x", "memory_limit": spelling}).memory_limit == tier
    )
    assert check_memory(spelling, Settings(allow_large_memory=True)) == tier


@pytest.mark.parametrize("value", ["3g", "1", "g", "1.5g", "-1g", "1 g b", "", "1e9", None, 1])
def test_unknown_memory_sizes_list_this_hosts_tiers(value: object) -> None:
    with pytest.raises(ValueError, match="not a memory limit"):
        normalize_memory(value)
    with pytest.raises(BadRequestError) as caught:
        check_memory(value, Settings())
    assert caught.value.param == "memory_limit"
    assert "allowed on this host: 512m, 1g, 2g, 4g;" in caught.value.message


def test_large_tiers_only_where_allowed() -> None:
    with pytest.raises(BadRequestError, match="'16g' is not enabled on this host"):
        check_memory("16GB", Settings())
    assert Settings().memory_limits() == ("512m", "1g", "2g", "4g")
    assert Settings(allow_large_memory=True).memory_limits()[-2:] == ("16g", "64g")
    assert Settings(default_memory_limit="2GB").default_memory_limit == "2g"


def test_unknown_environment_variables_warn_once_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("JUPYTER_SANDBOX_POOLSIZE", "2")
    monkeypatch.setenv("jupyter_sandbox_default_memory", "2g")
    monkeypatch.setenv("JUPYTER_SANDBOX_ZZZZZZZZZZZZZZZZZZZ", "1")
    monkeypatch.setenv("JUPYTER_SANDBOX_API_KEYS", "p:k")  # read by serve, not Settings
    monkeypatch.setenv("JUPYTER_SANDBOX_ALLOW_LARGE_MEMORY", "1")
    with caplog.at_level("WARNING", logger="jupyter_sandbox.settings"):
        Settings()
        Settings()
    assert sorted(r.getMessage() for r in caplog.records) == [
        "unknown environment variable JUPYTER_SANDBOX_POOLSIZE is ignored; "
        "did you mean JUPYTER_SANDBOX_POOL_SIZE?",
        "unknown environment variable JUPYTER_SANDBOX_ZZZZZZZZZZZZZZZZZZZ is ignored",
        "unknown environment variable jupyter_sandbox_default_memory is ignored; "
        "did you mean JUPYTER_SANDBOX_DEFAULT_MEMORY_LIMIT?",
    ]
