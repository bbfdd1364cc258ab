"""One settings model, read when a `Client` is built (never at import).

Every field can be set by keyword, or by an environment variable `JUPYTER_SANDBOX_<FIELD>`
(for example `JUPYTER_SANDBOX_HOME=/srv/sandbox`).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from jupyter_core.paths import jupyter_data_dir
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jupyter_sandbox._version import __version__
from jupyter_sandbox.backends.kernel_recipe import default_image_tag

logger = logging.getLogger(__name__)

# A Unix socket path must fit in sun_path (108 bytes with the NUL); keep a margin for
# "<run dir>/<sandbox>/k-<n>".
_MAX_RUN_ROOT = 70
# Every number has a ceiling: a huge value must not overflow a deadline or mean "never".
_YEAR = 365 * 24 * 3600


def _default_home() -> Path:
    return Path(jupyter_data_dir()) / "sandbox"


class Settings(BaseSettings):
    """Operator settings: where state lives, defaults and ceilings for every sandbox.

    Every number is finite (NaN and infinities are refused) and has a ceiling."""

    model_config = SettingsConfigDict(
        env_prefix="JUPYTER_SANDBOX_", extra="forbid", allow_inf_nan=False
    )

    home: Path = Field(default_factory=_default_home)
    """State folder: the SQLite store, blobs and the kernels' socket folders."""
    store_url: SecretStr | None = None
    """A shared PostgreSQL store, `postgresql://user:password@host:port/dbname` (the
    `postgres` extra), for API servers on several machines; None: the SQLite file in `home`.
    Never logged (it may hold a password)."""
    image: str = Field(default_factory=default_image_tag)
    """Kernel image every sandbox runs (built by `jupyter-sandbox image build`)."""
    runtime: str | None = None
    """OCI runtime: None for the engine's default (runc), or "runsc" for gVisor."""
    kernel_channel: Literal["auto", "ipc", "tcp"] = "auto"
    """How the host talks to kernels: `ipc` (sockets in a host folder; runc only), `tcp`
    (CurveZMQ-encrypted, inside the sandbox's own network namespace: entered with setns, root
    only, on a local engine; through an exec tunnel on a remote one), or `auto` (tcp for
    runsc and remote engines, ipc otherwise). The backend chooses it when the sandbox is made."""
    backend: str = "docker"
    """Where sandboxes run, by name (`backends.registry`): `docker` (the local engine),
    `swarm` (a Docker Swarm whose manager DOCKER_HOST names; docs/scale-out.md) or `local`
    (`jupyter_sandbox.testing.LocalBackend`: no isolation, for tests)."""
    engine_location: Literal["auto", "local", "remote"] = "auto"
    """Docker backend: where the engine runs: `auto` (local for a Unix socket, remote for
    `tcp://` or `ssh://`), or forced. A remote engine gets no host path: the tcp channel
    through an exec tunnel, files and the connection and deadline files through the archive
    API on volumes (forcing `remote` on a local engine tests that path)."""
    default_memory_limit: str = "1g"
    allow_large_memory: bool = False
    """Allow the SDK's 16g and 64g tiers."""
    default_idle_minutes: int = Field(default=20, ge=1, le=24 * 60)
    default_lifetime_seconds: int = Field(default=3600, ge=5, le=_YEAR)
    max_lifetime_seconds: int = Field(default=24 * 3600, ge=5, le=_YEAR)
    pids_limit: int = Field(default=256, ge=16, le=4_194_304)
    cpu_shares: int = Field(default=512, ge=2, le=262_144)
    cpus: float = Field(default=1.0, gt=0, le=1024)
    """CPU ceiling per sandbox (shared cores, never dedicated)."""
    tmp_size: str = "256m"
    """Size of the /tmp tmpfs (charged to the sandbox's memory)."""
    shm_size: str = "64m"
    output_limit_bytes: int = Field(default=10 * 2**20, ge=1024, le=2**30)
    """Output kept per execution; the rest is dropped and the result says so."""
    start_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds a kernel has to answer after its container starts."""
    interrupt_grace: float = Field(default=3.0, gt=0, le=3600)
    """Seconds a timed-out execution has to stop after SIGINT before the kernel restarts."""
    extra_labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to every Docker object (tests use them to find leaks)."""
    run_root: Path | None = None
    """Folder of the kernels' socket folders; default `<home>/run`, or a short temp path."""
    egress_image: str = f"jupyter-sandbox-egress:{__version__}"
    """Egress proxy image (squid) for allowlist sandboxes; built offline like the kernel image."""
    egress_allowed_domains: list[str] | None = None
    """Operator ceiling: allowlists may name only these (exact, or `*.` for subdomains);
    None lets a sandbox ask for any domain."""
    egress_subnet_pool: str = "198.18.0.0/16"
    """Where each allowlist sandbox's internal /29 network is carved from."""
    egress_max_connections: int = Field(default=64, ge=1, le=65_536)
    """Open connections one sandbox may hold through the proxy."""
    egress_start_timeout: float = Field(default=20.0, gt=0, le=3600)
    """Seconds the egress proxy has to start listening."""
    test_egress_resolver: str | None = None
    """TEST ONLY: the proxy resolves names with this server instead of the engine's."""
    test_egress_exempt: list[str] = Field(default_factory=list)
    """TEST ONLY: CIDRs the proxy may reach although private (a test's own upstream)."""
    test_egress_networks: list[str] = Field(default_factory=list)
    """TEST ONLY: Docker networks the proxy joins (where a test's upstream and DNS live)."""
    test_egress_upstream_ca: str | None = None
    """TEST ONLY: a PEM certificate the proxy also trusts for upstreams it decrypts for
    domain_secrets (a test's own HTTPS upstream); the system CAs are always trusted."""
    file_size_limit: int = Field(default=512 * 2**20, ge=1, le=2**50)
    """Largest single upload (a file or a container file), in bytes; more is refused (413)."""
    disk_limit: int = Field(default=10 * 2**30, ge=16 * 2**20, le=2**50)
    """Cap on what a sandbox writes to /mnt/data and /workspace together, in bytes."""
    disk_mechanism: Literal["auto", "loop", "volume"] = "auto"
    """How the cap is enforced: `loop` (a sparse ext4 image per sandbox; needs root),
    `volume` (plain Docker volumes: NO cap), `auto` (loop when possible, else volume)."""
    skill_size_limit: int = Field(default=50 * 2**20, ge=1024, le=2**40)
    """Largest skill, in bytes of unpacked files."""
    skill_max_files: int = Field(default=1000, ge=1, le=1_000_000)
    """Most files in one skill."""
    pool_size: int = Field(default=0, ge=0, le=100)
    """Warm pool: started sandboxes of the default configuration (default memory, network
    disabled, no files or skills) kept ready per process, so such a `create` is a claim, not
    a boot. 0 turns it off."""
    pool_max_age_seconds: int = Field(default=3600, ge=60, le=_YEAR)
    """A pooled sandbox not claimed within this many seconds is replaced."""
    default_idle_action: Literal["expire", "pause"] = "expire"
    """What an idle sandbox's `expires_after` does when `idle_action` is not given: `expire`
    (end it, the hosted API's semantics) or `pause` (freeze it, memory kept; the next
    execute or file call resumes it). The hard lifetime ends a paused sandbox too."""
    snapshot_max_bytes: int = Field(default=2 * 2**30, ge=1024, le=2**50)
    """Largest snapshot (files of /mnt/data and /workspace plus the pickled namespace)."""
    snapshot_expiry_seconds: int = Field(default=7 * 24 * 3600, ge=60, le=_YEAR)
    """A snapshot is deleted this many seconds after it was taken."""
    snapshot_timeout: float = Field(default=600.0, gt=0, le=24 * 3600)
    """Seconds a sandbox has to write (or load) a snapshot's bundle."""
    server_max_live_sandboxes: int = Field(default=10, ge=1, le=100_000)
    """`serve`: live (initializing or ready) sandboxes one project may hold; more is a 429."""
    server_rate_limit: int = Field(default=600, ge=0, le=10_000_000)
    """`serve`: requests per minute per API key (bursts up to that many); 0 turns it off."""
    server_max_body_bytes: int | None = Field(default=None, ge=1024, le=2**50)
    """`serve`: largest request body; default `file_size_limit` plus 1 MiB of form framing.
    A bigger body is refused with 413 while it streams in, never held whole."""
    server_sweep_interval: float = Field(default=10.0, gt=0, le=3600)
    """`serve`: seconds between idle-expiry sweeps (reconcile runs every 30 sweeps too)."""
    model_base_url: str | None = None
    """`serve`: the OpenAI-compatible model server `/v1/responses` calls (chat completions),
    e.g. `http://127.0.0.1:8080/v1`; None answers `/v1/responses` with 503."""
    model_api_key: SecretStr | None = None
    """`serve`: the bearer key sent to `model_base_url` (never logged)."""
    model_map: dict[str, str] = Field(default_factory=dict)
    """`serve`: a request's `model` -> the upstream's model name (unmapped names pass as is)."""
    model_timeout: float = Field(default=120.0, gt=0)
    """`serve`: seconds the model server has to answer one turn, else 504."""
    responses_max_tool_calls: int = Field(default=20, ge=1, le=1000)
    """`serve`: tool calls one response may run; past it the response is `incomplete`."""

    @field_validator("default_memory_limit")
    @classmethod
    def _known_limit(cls, value: str) -> str:
        from jupyter_sandbox.types.container import normalize_memory

        return normalize_memory(value)

    def memory_limits(self) -> tuple[str, ...]:
        """The memory tiers sandboxes may have on this host (16g and 64g only when allowed)."""
        from jupyter_sandbox.types.container import LARGE_MEMORY_LIMITS, MEMORY_LIMIT_BYTES

        return tuple(
            tier
            for tier in MEMORY_LIMIT_BYTES
            if self.allow_large_memory or tier not in LARGE_MEMORY_LIMITS
        )

    @field_validator("egress_allowed_domains")
    @classmethod
    def _ceiling_domains(cls, value: list[str] | None) -> list[str] | None:
        from jupyter_sandbox.types.container import normalize_domain

        return None if value is None else [normalize_domain(d) for d in value]

    @field_validator("egress_subnet_pool")
    @classmethod
    def _subnet_pool(cls, value: str) -> str:
        import ipaddress

        pool = ipaddress.IPv4Network(value)
        if pool.prefixlen > 28:
            raise ValueError("egress_subnet_pool must hold at least two /29 networks")
        return str(pool)

    @field_validator("test_egress_exempt")
    @classmethod
    def _exempt_cidrs(cls, value: list[str]) -> list[str]:
        import ipaddress

        return [str(ipaddress.IPv4Network(cidr)) for cidr in value]

    def model_post_init(self, context: object, /) -> None:
        """Say (once per name and process) which `JUPYTER_SANDBOX_*` variables mean nothing."""
        warn_unknown_environment(os.environ)

    @property
    def deadlines_root(self) -> Path:
        """Host folders holding each sandbox's deadline file (read-only in the sandbox)."""
        return self.home / "deadlines"

    @property
    def store_path(self) -> Path:
        """The SQLite database."""
        return self.home / "store.sqlite3"

    @property
    def store_id(self) -> str:
        """Short stable id of the store, put on every Docker object as a label: of the
        database for a shared store (so servers whose state folders differ still see each
        other's sandboxes as owned), else of this state folder."""
        if self.store_url is not None:
            where = describe_url(self.store_url.get_secret_value())  # never the password
            return hashlib.sha256(where.encode()).hexdigest()[:12]
        return hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:12]

    @property
    def sockets_root(self) -> Path:
        """Where per-sandbox socket folders live (short enough for Unix socket paths)."""
        if self.run_root is not None:
            return self.run_root
        candidate = self.home.resolve() / "run"
        if len(str(candidate)) <= _MAX_RUN_ROOT:
            return candidate
        return Path(os.environ.get("TMPDIR", "/tmp")) / f"jsbx-{os.getuid()}-{self.store_id}"


ENV_PREFIX = "JUPYTER_SANDBOX_"
OTHER_VARIABLES = frozenset(
    {
        "JUPYTER_SANDBOX_API_KEYS",  # serve's keys (server/auth.py)
        "JUPYTER_SANDBOX_REQUIRE_DOCKER",  # the test suite: fail instead of skip
        "JUPYTER_SANDBOX_REQUIRE_POSTGRES",  # the test suite: fail without initdb
        "JUPYTER_SANDBOX_UPDATE_SCREENSHOTS",  # the test suite: refresh docs/img
    }
)
"""Variables read outside `Settings`."""
_warned: set[str] = set()


def known_variables() -> list[str]:
    """Every `JUPYTER_SANDBOX_*` name something reads."""
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return sorted(fields | OTHER_VARIABLES)


def warn_unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """Log a warning for each `JUPYTER_SANDBOX_*` variable nothing reads (a typo is otherwise
    silently ignored), naming the closest valid one; each name once per process.

    Returns the warnings logged by this call."""
    known = known_variables()
    messages = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or name in _warned:
            continue
        _warned.add(name)
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        message = f"unknown environment variable {name} is ignored{hint}"
        logger.warning("%s", message)
        messages.append(message)
    return messages


def describe_url(url: str) -> str:
    """`postgresql://user@host:port/dbname` without the password, for messages and logs."""
    try:
        parts = urlsplit(url)
        host, port, user = parts.hostname or "localhost", parts.port or 5432, parts.username
    except ValueError:
        return "postgresql://(unparsable url)"
    return f"postgresql://{f'{user}@' if user else ''}{host}:{port}{parts.path}"
