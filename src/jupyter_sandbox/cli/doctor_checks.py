"""Health checks for `jupyter-sandbox doctor`: pure functions over `docker info` and version.

Each check turns what the engine reports into a `Check` with a level: `ok`, `info` (worth
knowing), `warn` (a known weakness; sandboxes still run) or `fail` (we refuse to call the
host safe). The thresholds come from `THREATS.md`'s known vulnerabilities.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = [
    "Check",
    "Level",
    "check_cgroup",
    "check_default_runtime",
    "check_egress_image",
    "check_engine_version",
    "check_image",
    "check_runc_version",
    "check_runsc",
    "check_seccomp",
    "check_security_extras",
    "check_storage_driver",
    "engine_checks",
    "exit_code",
    "missing",
    "parse_version",
    "runc_version",
    "unreachable",
]

Level = Literal["ok", "info", "warn", "fail"]

Version = tuple[int, int, int]

# CVE-2024-29018 (DNS of --internal networks forwarded outside) is fixed in these releases.
_DNS_FIX: tuple[Version, ...] = ((23, 0, 11), (25, 0, 4), (26, 0, 0))
# CVE-2025-31133/52565/52881 (maskedPaths and procfs redirects) are fixed in these.
_RUNC_FIX: tuple[Version, ...] = ((1, 2, 8), (1, 3, 3), (1, 4, 0))
_LEAKY_VESSELS_FIX: Version = (1, 1, 12)
_VENDOR_BUILD = re.compile(r"[+~]|-\d|deb|ubuntu|el\d|fc\d", re.IGNORECASE)
_VENDOR_NOTE = " (a distribution build: it may carry backported fixes; check its advisories)"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    level: Level
    detail: str

    def to_dict(self) -> dict[str, str]:
        """The JSON shape of a check."""
        return asdict(self)


def parse_version(text: str | None) -> Version | None:
    """`(major, minor, patch)` from a version string like `20.10.24+dfsg1` or `v1.2.8-rc.1`."""
    if not text:
        return None
    match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def _is_fixed(version: Version, fixes: Iterable[Version]) -> bool:
    """Whether `version` carries a fix released as the given per-branch versions.

    The last entry fixes every later branch; the others fix only their own `major.minor`.
    """
    fixes = sorted(fixes)
    if version >= fixes[-1]:
        return True
    return any(version[:2] == fix[:2] and version >= fix for fix in fixes[:-1])


def _format(version: Version) -> str:
    return ".".join(str(part) for part in version)


def _vendor_note(text: str) -> str:
    suffix = re.sub(r"^v?\d+\.\d+(\.\d+)?", "", text.strip())
    return _VENDOR_NOTE if _VENDOR_BUILD.search(suffix) else ""


def check_engine_version(version: str | None) -> Check:
    """Docker before 26.0.0 (25.0.4, 23.0.11) leaks DNS from internal networks."""
    parsed = parse_version(version)
    if parsed is None:
        return Check("Docker engine", "warn", f"unknown version {version!r}")
    if _is_fixed(parsed, _DNS_FIX):
        return Check("Docker engine", "ok", str(version))
    fixed = ", ".join(_format(v) for v in _DNS_FIX)
    return Check(
        "Docker engine",
        "warn",
        f"{version}: CVE-2024-29018 (DNS exfiltration from internal networks) is fixed in "
        f"{fixed}; the network allowlist relies on that fix{_vendor_note(str(version))}",
    )


def runc_version(info: Mapping[str, Any], version: Mapping[str, Any]) -> str | None:
    """runc's version from `docker version` components, else `docker info`'s RuncCommit."""
    server = version.get("Server") or version
    for component in server.get("Components") or []:
        if str(component.get("Name", "")).lower() == "runc":
            return str(component.get("Version") or "") or None
    commit = (info.get("RuncCommit") or {}).get("ID")
    return str(commit) if commit else None


def check_runc_version(version: str | None) -> Check:
    """runc before 1.2.8 (1.3.3) lets a container write host files through masked paths."""
    parsed = parse_version(version)
    if parsed is None:
        return Check("runc", "warn", f"unknown version {version!r}")
    if _is_fixed(parsed, _RUNC_FIX):
        return Check("runc", "ok", str(version))
    cves = ["CVE-2025-31133", "CVE-2025-52565", "CVE-2025-52881"]
    if parsed < _LEAKY_VESSELS_FIX:
        cves.insert(0, "CVE-2024-21626")
    return Check(
        "runc",
        "warn",
        f"{version}: vulnerable to {', '.join(cves)} (container escapes); upgrade to "
        f">= 1.2.8 or 1.3.3{_vendor_note(str(version))}",
    )


def check_cgroup(info: Mapping[str, Any]) -> Check:
    """cgroup v1 works, but v2 gives reliable memory accounting and OOM events."""
    cgroup = str(info.get("CgroupVersion") or "")
    driver = info.get("CgroupDriver") or "unknown driver"
    if cgroup == "2":
        return Check("cgroup", "ok", f"v2 ({driver})")
    if cgroup == "1":
        return Check(
            "cgroup",
            "warn",
            f"v1 ({driver}): memory and OOM accounting are less reliable; prefer cgroup v2",
        )
    return Check("cgroup", "warn", f"unknown cgroup version {cgroup or '(not reported)'}")


def _security_options(info: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """`["name=seccomp,profile=default", "name=rootless"]` as `{name: {key: value}}`."""
    options: dict[str, dict[str, str]] = {}
    for entry in info.get("SecurityOptions") or []:
        fields = dict(part.split("=", 1) for part in str(entry).split(",") if "=" in part)
        name = fields.pop("name", None)
        if name:
            options[name] = fields
    return options


def check_seccomp(info: Mapping[str, Any]) -> Check:
    """Without seccomp, syscalls like those behind CVE-2022-0492 reach the host kernel."""
    seccomp = _security_options(info).get("seccomp")
    if seccomp is None:
        return Check(
            "seccomp", "fail", "not enabled in the engine: sandboxes would reach every syscall"
        )
    profile = seccomp.get("profile", "default")
    if profile == "unconfined":
        return Check("seccomp", "fail", "the engine's default profile is unconfined")
    return Check("seccomp", "ok", f"profile {profile}")


def check_security_extras(info: Mapping[str, Any]) -> Check:
    """Other security options the engine runs with (rootless, user namespaces, LSMs)."""
    names = sorted(name for name in _security_options(info) if name != "seccomp")
    return Check("security options", "info", ", ".join(names) if names else "none besides seccomp")


def check_storage_driver(info: Mapping[str, Any]) -> Check:
    """The storage driver, for the record."""
    driver = info.get("Driver") or "unknown"
    return Check("storage driver", "info", str(driver))


def check_default_runtime(info: Mapping[str, Any]) -> Check:
    """The runtime sandboxes get unless the operator picks another."""
    default = str(info.get("DefaultRuntime") or "unknown")
    level: Level = "ok" if default in ("runc", "runsc", "crun") else "info"
    return Check("default runtime", level, default)


def check_runsc(
    info: Mapping[str, Any], configured: str | None = None, *, installed: bool | None = None
) -> Check:
    """gVisor is optional; asking for a runtime the engine lacks is a failure. `installed`:
    whether this host has the runsc binary (None: unknown, a remote engine)."""
    from jupyter_sandbox.backends.gvisor import FIX

    runtimes = info.get("Runtimes") or {}
    if configured and configured not in runtimes:
        fix = f"; {FIX}" if configured == "runsc" else ""
        return Check(
            "gVisor (runsc)",
            "fail",
            f"JUPYTER_SANDBOX_RUNTIME={configured} but the engine has only "
            f"{', '.join(sorted(runtimes)) or 'no runtimes'}{fix}",
        )
    if "runsc" in runtimes:
        chosen = (
            " (in use)" if configured == "runsc" else "; opt in with JUPYTER_SANDBOX_RUNTIME=runsc"
        )
        return Check("gVisor (runsc)", "ok", f"installed and registered{chosen}")
    state = "installed but not registered with the engine" if installed else "not installed"
    return Check(
        "gVisor (runsc)",
        "info",
        f"{state} (optional: a user-space kernel between sandboxes and the host); {FIX}",
    )


def engine_checks(
    info: Mapping[str, Any],
    version: Mapping[str, Any],
    *,
    runtime: str | None = None,
    runsc_installed: bool | None = None,
) -> list[Check]:
    """Every engine check, from `docker info` and `docker version` as the API returns them."""
    engine = info.get("ServerVersion") or (version.get("Server") or version).get("Version")
    checks = [
        check_engine_version(str(engine) if engine else None),
        check_runc_version(runc_version(info, version)),
        check_cgroup(info),
        check_seccomp(info),
        check_security_extras(info),
        check_storage_driver(info),
        check_default_runtime(info),
        check_runsc(info, runtime, installed=runsc_installed),
    ]
    kernel = info.get("KernelVersion")
    if kernel:
        checks.append(Check("host kernel", "info", f"{kernel} (keep it patched)"))
    return checks


def check_image(tag: str, *, exists: bool, up_to_date: bool, size_bytes: int | None) -> Check:
    """The kernel image: missing fails (no sandbox can start), stale is a warning; both name
    the command that fixes it."""
    if not exists:
        return Check(
            "kernel image",
            "fail",
            f"{tag} is missing, so no sandbox can start: run `jupyter-sandbox image build`",
        )
    size = f", {size_bytes / 1e6:.0f} MB" if size_bytes is not None else ""
    if not up_to_date:
        return Check(
            "kernel image",
            "warn",
            f"{tag} is out of date{size}: run `jupyter-sandbox image build`",
        )
    return Check("kernel image", "ok", f"{tag} (up to date{size})")


def check_egress_image(tag: str, *, exists: bool) -> Check:
    """The egress proxy image: only allowlist sandboxes need it, so missing is a warning."""
    if exists:
        return Check("egress image", "ok", tag)
    return Check(
        "egress image",
        "warn",
        f"{tag} is missing: allowlist sandboxes cannot start (run `jupyter-sandbox image build`)",
    )


def missing(checks: Iterable[Check]) -> str | None:
    """One sentence naming every failed check, or None: what stops sandboxes being made."""
    failed = [check.name for check in checks if check.level == "fail"]
    if not failed:
        return None
    return "Sandboxes cannot be created here until these are fixed: " + ", ".join(failed)


def unreachable(message: str) -> Check:
    """The check shown when the engine does not answer."""
    return Check("Docker engine", "fail", message)


def exit_code(checks: Iterable[Check]) -> int:
    """1 if any check failed, else 0 (warnings do not fail the doctor)."""
    return 1 if any(check.level == "fail" for check in checks) else 0
