"""`network_policy.domain_secrets` (issue 17): the hosted API's shape is accepted and checked,
the value never shows in a dump, a repr or an error, and no validation error anywhere echoes
what may be a secret (issue 17's unknown-parameter 400 did)."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_sandbox import BadRequestError
from jupyter_sandbox.core.validation import parse
from jupyter_sandbox.types.container import ContainerCreateParams, NetworkPolicyAllowlist

SECRET = "sk-live-4f9c2b7e1d0a6c3e8b5f"


def policy(**extra: Any) -> dict[str, Any]:
    return {"type": "allowlist", "allowed_domains": ["api.example.com", "*.wild.example"], **extra}


def create(network_policy: dict[str, Any]) -> ContainerCreateParams:
    return parse(ContainerCreateParams, {"name": "x", "network_policy": network_policy})


def test_the_sdk_shape_is_accepted_and_never_dumped() -> None:
    params = create(
        policy(
            domain_secrets=[
                {"domain": "API.example.com.", "name": "API_KEY", "value": SECRET},
                {"domain": "a.wild.example", "name": "API_KEY", "value": SECRET + "2"},
            ]
        )
    )
    assert isinstance(params.network_policy, NetworkPolicyAllowlist)
    secrets = params.network_policy.domain_secrets
    assert [(s.domain, s.name) for s in secrets] == [
        ("api.example.com", "API_KEY"),
        ("a.wild.example", "API_KEY"),
    ]
    assert secrets[0].value.get_secret_value() == SECRET
    # What is stored and returned (model_dump), and every repr, leave the value out.
    for text in (
        str(params.model_dump()),
        params.model_dump_json(),
        repr(params),
        str(params),
        repr(secrets),
    ):
        assert SECRET not in text
    assert "domain_secrets" not in params.network_policy.model_dump()
    # Handed on inside the process (server to client) with the value, and re-validated.
    handed = params.network_policy.create_params()
    assert handed["domain_secrets"][0] == {
        "domain": "api.example.com",
        "name": "API_KEY",
        "value": SECRET,
    }
    again = create(handed)
    assert isinstance(again.network_policy, NetworkPolicyAllowlist)
    assert again.network_policy.domain_secrets == secrets


@pytest.mark.parametrize(
    ("secret", "param", "words"),
    [
        ({"domain": "other.example", "name": "K", "value": SECRET}, "network_policy.domain_secrets",
         "other.example of secret K is not in allowed_domains"),
        ({"domain": "wild.example", "name": "K", "value": SECRET}, "network_policy.domain_secrets",
         "not in allowed_domains"),
        ({"domain": "api.example.com", "name": "1BAD", "value": SECRET},
         "network_policy.domain_secrets.name", "environment variable name"),
        ({"domain": "api.example.com", "name": "HTTPS_PROXY", "value": SECRET},
         "network_policy.domain_secrets.name", "reserved"),
        ({"domain": "api.example.com", "name": "K", "value": ""},
         "network_policy.domain_secrets.value", "at least 1"),
        ({"domain": "api.example.com", "name": "K"}, "network_policy.domain_secrets.value",
         "required"),
        ({"domain": "api.example.com", "name": "K", "value": SECRET, "extra": SECRET},
         "network_policy.domain_secrets.extra", "unknown parameter"),
        ({"domain": "10.0.0.1", "name": "K", "value": SECRET},
         "network_policy.domain_secrets.domain", "IP address"),
        ({"domain": "api.example.com", "name": "K", "value": ["x", SECRET]},
         "network_policy.domain_secrets.value", "valid string"),
        ({"domain": "api.example.com", "name": "K", "value": SECRET + "\r\nX-Evil: 1"},
         "network_policy.domain_secrets.value", "printable ASCII"),
        ({"domain": "api.example.com", "name": "K", "value": SECRET + "\u00e9"},
         "network_policy.domain_secrets.value", "printable ASCII"),
    ],
)  # fmt: skip
def test_bad_secrets_are_refused_without_echoing_the_value(
    secret: dict[str, Any], param: str, words: str
) -> None:
    with pytest.raises(BadRequestError) as caught:
        create(policy(domain_secrets=[secret]))
    assert caught.value.param == param
    assert words in caught.value.message
    assert SECRET not in caught.value.message
    assert SECRET not in str(caught.value)


def test_a_secret_given_twice_for_one_domain_is_refused() -> None:
    twice = [{"domain": "api.example.com", "name": "K", "value": SECRET}] * 2
    with pytest.raises(BadRequestError) as caught:
        create(policy(domain_secrets=twice))
    assert caught.value.param == "network_policy.domain_secrets"
    assert SECRET not in caught.value.message


@pytest.mark.parametrize(
    "params",
    [
        # Unknown parameters may hold anything: a key sent by mistake, at any depth.
        {"name": "x", "api_key": SECRET},
        {"name": "x", "extra": {"token": SECRET}},
        {"name": "x", "extra": [SECRET]},
        {"name": "x", "network_policy": {"type": "disabled", "domain_secrets": [SECRET]}},
        {"name": "x", "network_policy": {"type": "allowlist", "allowed_domains": ["a.example"],
                                         "secret": SECRET}},
        # A list or object in the wrong place is never echoed either.
        {"name": [SECRET]},
        {"name": "x", "file_ids": SECRET[:3] and {"a": SECRET}},
        {"name": "x", "skills": [SECRET]},
    ],
)  # fmt: skip
def test_no_validation_error_echoes_an_unknown_or_structured_input(params: Any) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse(ContainerCreateParams, params)
    assert SECRET not in caught.value.message


def test_a_scalar_of_a_known_field_is_still_shown() -> None:
    with pytest.raises(BadRequestError) as caught:
        parse(ContainerCreateParams, {"name": "x", "memory_limit": "8g"})
    assert "(got '8g')" in caught.value.message


def test_a_kernelspec_never_holds_a_secret() -> None:
    """kernel.json is a file on disk: a policy with secrets is refused, not written."""
    from jupyter_sandbox.jupyter.kernelspec import kernel_json

    with pytest.raises(BadRequestError) as caught:
        kernel_json(
            network=policy(
                domain_secrets=[{"domain": "api.example.com", "name": "K", "value": SECRET}]
            )
        )
    assert caught.value.param == "network_policy.domain_secrets"
    assert SECRET not in caught.value.message
