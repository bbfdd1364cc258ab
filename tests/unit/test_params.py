"""The typed parameters (`types/params.py`) say what the models accept, no more, no less."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from pydantic import BaseModel

from jupyter_sandbox import NOT_GIVEN, NotGiven
from jupyter_sandbox.client.containers import Containers
from jupyter_sandbox.core.files import FileCreateParams
from jupyter_sandbox.types import params
from jupyter_sandbox.types.container import (
    ContainerCreateParams,
    DomainSecret,
    ExpiresAfter,
    NetworkPolicyAllowlist,
    NetworkPolicyDisabled,
)
from jupyter_sandbox.types.params import given
from jupyter_sandbox.types.skill import (
    InlineFile,
    InlineFilesSource,
    InlineSkill,
    InlineZipSource,
    SkillParams,
    SkillReference,
)


def test_not_given_is_falsy_and_named() -> None:
    assert isinstance(NOT_GIVEN, NotGiven)
    assert not NOT_GIVEN
    assert repr(NOT_GIVEN) == "NOT_GIVEN"
    assert given(NOT_GIVEN) is None
    assert given(0) == 0
    assert given(None) is None


def keys(typed_dict: Any) -> set[str]:
    return set(typed_dict.__required_keys__ | typed_dict.__optional_keys__)


@pytest.mark.parametrize(
    ("typed_dict", "model", "seed_keys"),
    [
        (params.ExpiresAfterParam, ExpiresAfter, {"seconds"}),
        (params.NetworkPolicyDisabledParam, NetworkPolicyDisabled, set()),
        (params.NetworkPolicyAllowlistParam, NetworkPolicyAllowlist, {"domains"}),
        (params.DomainSecretParam, DomainSecret, set()),
        (params.SkillReferenceParam, SkillReference, set()),
        (params.InlineSkillParam, InlineSkill, set()),
        (params.InlineSkillSourceParam, InlineZipSource, set()),
        (params.InlineSkillFilesSourceParam, InlineFilesSource, set()),
        (params.InlineSkillFileParam, InlineFile, set()),
    ],
)
def test_each_typed_dict_has_its_models_fields(
    typed_dict: Any, model: type[BaseModel], seed_keys: set[str]
) -> None:
    assert keys(typed_dict) == set(model.model_fields) | seed_keys


def test_file_expiry_keys() -> None:
    assert keys(params.FileExpiresAfterParam) == {"anchor", "seconds"}
    FileCreateParams.model_validate(
        {"purpose": "user_data", "expires_after": {"anchor": "created_at", "seconds": 3600}}
    )


def test_create_takes_every_field_of_its_model() -> None:
    keywords = set(inspect.signature(Containers.create).parameters) - {"self"}
    assert keywords == set(ContainerCreateParams.model_fields)


def test_typed_examples_validate() -> None:
    policy: params.NetworkPolicyParam = {
        "type": "allowlist",
        "allowed_domains": ["pypi.org", "*.github.com"],
        "domain_secrets": [{"domain": "pypi.org", "name": "TOKEN", "value": "s3cret"}],
    }
    skills: list[params.ContainerSkillParam] = [
        {"skill_id": "skill_1"},
        {"type": "skill_reference", "skill_id": "skill_2", "version": "latest"},
        {"type": "inline", "source": {"files": [{"path": "a.py", "content": "A = 1\n"}]}},
        {"type": "inline", "name": "z", "source": {"type": "base64", "data": "UEsFBgAAAAA="}},
    ]
    expires: params.ExpiresAfterParam = {"anchor": "last_active_at", "minutes": 5}
    created = ContainerCreateParams.model_validate(
        {"name": "x", "network_policy": policy, "expires_after": expires}
    )
    assert isinstance(created.network_policy, NetworkPolicyAllowlist)
    assert created.network_policy.domain_secrets[0].name == "TOKEN"
    assert len(SkillParams.model_validate({"skills": skills}).skills) == 4
