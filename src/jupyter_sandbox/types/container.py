"""The container object and the parameters that create one (OpenAI's shapes, seed extras)."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from jupyter_sandbox.types.skill import InstalledSkill

ContainerStatus = Literal["initializing", "ready", "terminated", "failed", "expired", "paused"]
"""The seed's statuses plus `expired`; the hosted API's `running` maps to `ready`. `paused`
(extension, issue 18): an idle sandbox with `idle_action="pause"`, frozen until its next
execute or file call (the store keeps it `ready`; only the API shows `paused`)."""

IdleAction = Literal["expire", "pause"]
"""What `expires_after` does to an idle sandbox: end it, or freeze it (extension)."""

MemoryLimit = Literal["512m", "1g", "2g", "4g", "16g", "64g"]
"""The seed's tiers (512m..4g) and the SDK's large ones (16g, 64g: only when configured)."""

MEMORY_LIMIT_BYTES: dict[str, int] = {
    "512m": 512 * 2**20,
    "1g": 2**30,
    "2g": 2 * 2**30,
    "4g": 4 * 2**30,
    "16g": 16 * 2**30,
    "64g": 64 * 2**30,
}

LARGE_MEMORY_LIMITS: tuple[str, ...] = ("16g", "64g")
"""Tiers only an operator can enable (`allow_large_memory`)."""

_MEMORY_SPELLING = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNIT_BYTES = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def normalize_memory(value: object) -> str:
    """The tier a memory size names, whatever its spelling: `1G`, `1GB`, `1g`, `1gb`,
    `1GiB` and `1024m` are all `1g`.

    Raises:
        ValueError: the value names no tier (the message lists the tiers).
    """
    text = value.strip() if isinstance(value, str) else ""
    match = _MEMORY_SPELLING.fullmatch(text)
    if match is not None:
        size = float(match.group(1)) * _UNIT_BYTES[match.group(2).lower()]
        for tier, tier_bytes in MEMORY_LIMIT_BYTES.items():
            if size == tier_bytes:
                return tier
    standard = ", ".join(t for t in MEMORY_LIMIT_BYTES if t not in LARGE_MEMORY_LIMITS)
    raise ValueError(
        f"{value!r:.40} is not a memory limit: use {standard} "
        f"({', '.join(LARGE_MEMORY_LIMITS)} when the operator allows them)"
    )


def _tier(value: object) -> object:
    return None if value is None else normalize_memory(value)


MemoryLimitInput = Annotated[MemoryLimit | None, BeforeValidator(_tier)]
"""A memory limit as callers spell it (`1G`, `1gb`, `1024m` are `1g`), as its tier. Whether
this host allows the tier is checked when a sandbox is made (`core.containers.check_memory`)."""

MAX_NAME_LENGTH = 256
MAX_IDLE_MINUTES = 24 * 60
_DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalize_domain(value: str) -> str:
    """Lower-case, IDNA-encode and check one allowlist entry (`host` or `*.host`)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a domain must be a non-empty string")
    text = value.strip().rstrip(".").lower()
    wildcard = text.startswith("*.")
    host = text[2:] if wildcard else text
    if "*" in host:
        raise ValueError(f"{value!r}: '*' is only allowed as a leading '*.'")
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"{value!r} is not a valid domain name") from exc
    labels = ascii_host.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.match(label) for label in labels):
        raise ValueError(f"{value!r} is not a valid domain name")
    if labels[-1].isdigit() or ":" in host:
        raise ValueError(f"{value!r} is an IP address; only domain names are allowed")
    return ("*." if wildcard else "") + ascii_host


class NetworkPolicyDisabled(BaseModel):
    """No network at all (the default)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["disabled"] = "disabled"


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Variables the sandbox's own setup owns: a secret may not shadow them.
_RESERVED_ENV = re.compile(
    r"^(PATH|HOME|USER|SHELL|PWD|LANG|LC_.*|PYTHON.*|JPY_.*|JUPYTER.*|JSBX_.*|"
    r"(HTTP|HTTPS|ALL|NO)_PROXY|SSL_CERT_.*|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE|LD_.*)$",
    re.IGNORECASE,
)
MAX_SECRET_LENGTH = 8192


class DomainSecret(BaseModel):
    """One `{domain, name, value}` of an allowlist's `domain_secrets` (the hosted API's shape).

    The value is a `SecretStr`: it never shows in a repr, a dump or an error message."""

    model_config = ConfigDict(extra="forbid")
    domain: str
    """A domain of the same policy's `allowed_domains` (or one of its wildcards covers it)."""
    name: str
    """The environment variable that holds a placeholder for the secret in the sandbox."""
    value: SecretStr = Field(min_length=1, max_length=MAX_SECRET_LENGTH)
    """The secret itself; only the egress proxy would ever put it on the wire."""

    @field_validator("domain")
    @classmethod
    def _domain(cls, domain: str) -> str:
        return normalize_domain(domain)

    @field_validator("value")
    @classmethod
    def _value(cls, value: SecretStr) -> SecretStr:
        # It goes into header values and query strings at the proxy: printable ASCII only, so
        # it can neither split a header nor be mangled on the wire.
        if not all(" " <= char <= "~" for char in value.get_secret_value()):
            raise ValueError("value must be printable ASCII (no control or non-ASCII characters)")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _ENV_NAME.match(name):
            raise ValueError(
                "name must be an environment variable name (letters, digits, '_'; "
                "not starting with a digit; at most 128 characters)"
            )
        if _RESERVED_ENV.match(name):
            raise ValueError(f"name {name} is reserved for the sandbox's own setup")
        return name


def _domain_allowed(domain: str, allowed: list[str]) -> bool:
    """Whether `domain` (normalized, maybe `*.x`) is reached through the list `allowed`."""
    for entry in allowed:
        if entry == domain:
            return True
        if entry.startswith("*.") and domain.removeprefix("*.").endswith(entry[1:]):
            return True
    return False


class NetworkPolicyAllowlist(BaseModel):
    """Only HTTP(S) to the listed domains, through the egress proxy."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: Literal["allowlist"]
    allowed_domains: list[str] = Field(
        validation_alias=AliasChoices("allowed_domains", "domains"), min_length=1, max_length=100
    )
    """Exact hosts, or `*.example.com` for subdomains. The seed's `domains` is accepted too."""
    domain_secrets: list[DomainSecret] = Field(default_factory=list, max_length=100, exclude=True)
    """Secrets for listed domains (write-only: never dumped, stored or returned)."""

    @field_validator("allowed_domains")
    @classmethod
    def _normalize(cls, domains: list[str]) -> list[str]:
        return list(dict.fromkeys(normalize_domain(d) for d in domains))

    @field_validator("domain_secrets")
    @classmethod
    def _secrets_on_listed_domains(
        cls, secrets: list[DomainSecret], info: ValidationInfo
    ) -> list[DomainSecret]:
        allowed = info.data.get("allowed_domains") or []
        seen: set[tuple[str, str]] = set()
        for secret in secrets:
            if not _domain_allowed(secret.domain, allowed):
                raise ValueError(
                    f"domain {secret.domain} of secret {secret.name} is not in allowed_domains"
                )
            if (secret.domain, secret.name) in seen:
                raise ValueError(f"secret {secret.name} is given twice for {secret.domain}")
            seen.add((secret.domain, secret.name))
        return secrets

    def create_params(self) -> dict[str, Any]:
        """This policy as `containers.create` takes it, secret values included: for handing a
        validated request on inside this process only (the server to the client)."""
        params: dict[str, Any] = self.model_dump(mode="json")
        if self.domain_secrets:
            params["domain_secrets"] = [
                {"domain": s.domain, "name": s.name, "value": s.value.get_secret_value()}
                for s in self.domain_secrets
            ]
        return params


NetworkPolicy = Annotated[
    NetworkPolicyDisabled | NetworkPolicyAllowlist, Field(discriminator="type")
]


class ExpiresAfter(BaseModel):
    """Idle expiry: `minutes` after `last_active_at` (the seed's `seconds` is accepted too)."""

    model_config = ConfigDict(extra="forbid")
    anchor: Literal["last_active_at"] = "last_active_at"
    minutes: int = Field(ge=1, le=MAX_IDLE_MINUTES)

    @model_validator(mode="before")
    @classmethod
    def _seconds_to_minutes(cls, data: Any) -> Any:
        if isinstance(data, dict) and "seconds" in data:
            data = dict(data)
            seconds = data.pop("seconds")
            if "minutes" in data:
                raise ValueError("give either minutes or seconds, not both")
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise ValueError("seconds must be a number")
            if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_IDLE_MINUTES * 60:
                raise ValueError(f"seconds must be between 1 and {MAX_IDLE_MINUTES * 60}")
            data["minutes"] = max(1, math.ceil(seconds / 60))
        return data


class ContainerCreateParams(BaseModel):
    """What `containers.create` accepts. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    """Descriptive name (required)."""
    memory_limit: MemoryLimitInput = None
    """512m, 1g, 2g or 4g (16g/64g when the operator allows them); `1G`, `1GB` and `1024m`
    spell 1g too. Default 1g."""
    file_ids: list[str] = Field(default_factory=list, max_length=100)
    """Files (from `client.files`) to copy into /mnt/data at creation."""
    network_policy: NetworkPolicy = Field(default_factory=NetworkPolicyDisabled)
    """`{"type": "disabled"}` (default) or an allowlist of domains."""
    skills: list[dict[str, Any]] = Field(default_factory=list, max_length=50)
    """Skills by id or inline (see the files and skills guide)."""
    expires_after: ExpiresAfter | None = None
    """Idle expiry; default 20 minutes after the last use."""
    lifetime_seconds: int | None = Field(default=None, ge=5)
    """Hard lifetime (extension): default 1 h, at most the configured maximum (24 h)."""
    idle_action: IdleAction | None = None
    """Extension: `expire` (the default setting) ends an idle sandbox; `pause` freezes it
    (no CPU, memory kept) and the next execute or file call resumes it."""
    snapshot_id: str | None = Field(default=None, min_length=1, max_length=100)
    """Extension: fork this snapshot (`containers.snapshots.create`): its files restored and
    its namespace loaded in the new kernel; the snapshot's own sandbox is not touched."""

    @field_validator("name")
    @classmethod
    def _printable_name(cls, name: str) -> str:
        if not name.strip() or not name.isprintable():
            raise ValueError("name must be printable and not blank")
        return name


class Container(BaseModel):
    """A sandbox, as the containers API returns it."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["container"] = "container"
    name: str
    created_at: int
    status: ContainerStatus
    last_active_at: int
    expires_after: ExpiresAfter
    memory_limit: MemoryLimit
    network_policy: dict[str, Any]
    """`{"type": "disabled"}` or `{"type": "allowlist", "allowed_domains": [...]}`."""
    expires_at: int
    """Hard end of life (extension): the container stops itself at this time."""
    skills: list[InstalledSkill] = Field(default_factory=list)
    """Skills installed read-only under /mnt/skills, with their SKILL.md (extension)."""


class ContainerDeleted(BaseModel):
    """The body a delete returns."""

    id: str
    object: Literal["container.deleted"] = "container.deleted"
    deleted: bool = True
