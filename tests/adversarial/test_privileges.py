"""Privileges: the sandbox user has nothing to escalate with, and the kernel interfaces that
break out of containers are refused (each attack is sandboxed code; results checked as errno)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.adversarial.conftest import Sandboxes, is_gvisor

pytestmark = pytest.mark.docker

Probe = Callable[[str], str]

# Syscall numbers on x86_64 (the probes run the raw syscall, as an exploit would).
_SYSCALL = """
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    return "ok" if result >= 0 else errno.errorcode[ctypes.get_errno()]
"""


def test_runs_as_an_unprivileged_user_with_no_capabilities(probe: Probe) -> None:
    status = dict(
        line.split(":\t", 1)
        for line in probe("print(open('/proc/self/status').read())").splitlines()
        if ":\t" in line
    )
    uids = status["Uid"].split()
    assert uids == ["1000"] * 4
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        # gVisor's /proc has no CapAmb line (and no ambient capabilities to show).
        assert int(status.get(field, "0" if is_gvisor() else "missing"), 16) == 0, field
    if not is_gvisor():  # gVisor's /proc has no NoNewPrivs or Seccomp lines
        assert status["NoNewPrivs"].strip() == "1"
        assert status["Seccomp"].strip() == "2"  # filter mode: Docker's default profile


def test_no_setuid_or_setgid_programs(probe: Probe) -> None:
    found = probe(
        "import subprocess\n"
        "print(subprocess.run(['find', '/', '-xdev', '-type', 'f', '-perm', '/6000'],"
        " capture_output=True, text=True).stdout)"
    ).split()
    assert found == []


def test_root_file_system_is_read_only(probe: Probe) -> None:
    result = json.loads(
        probe(
            "import errno, json\nout = {}\n"
            "for path in ['/etc/newfile', '/usr/bin/newfile', '/var/x', '/home/sandbox/x']:\n"
            "    try:\n        open(path, 'a').close(); out[path] = 'ok'\n"
            "    except OSError as e:\n        out[path] = errno.errorcode[e.errno]\n"
            "print(json.dumps(out))"
        )
    )
    if is_gvisor():  # refused all the same; gVisor's gofer says EACCES for some paths
        assert set(result.values()) <= {"EROFS", "EACCES"}, result
        return
    assert result == {
        "/etc/newfile": "EROFS",
        "/usr/bin/newfile": "EROFS",
        "/var/x": "EROFS",
        "/home/sandbox/x": "EROFS",
    }


# (name, python expression after _SYSCALL returning the errno name, accepted results)
ESCAPES = [
    ("mount tmpfs", "call(165, buf(b'tmpfs'), buf(b'/tmp'), buf(b'tmpfs'), 0, 0)", {"EPERM"}),
    ("unshare user namespace", "call(272, 0x10000000)", {"EPERM"}),
    ("unshare mount namespace", "call(272, 0x00020000)", {"EPERM"}),
    ("setns (mount ns)", "call(308, os.open('/proc/self/ns/mnt', 0), 0)", {"EPERM"}),
    ("keyctl join session keyring", "call(250, 1, 0)", {"EPERM", "ENOSYS"}),
    ("add_key", "call(248, buf(b'user'), buf(b'x'), buf(b'y'), 1, -3)", {"EPERM", "ENOSYS"}),
    ("bpf map create", "call(321, 0, buf(bytes(72)), 72)", {"EPERM", "ENOSYS"}),
    ("perf_event_open", "call(298, buf(bytes(128)), 0, -1, -1, 0)", {"EPERM", "ENOSYS", "EACCES"}),
    ("userfaultfd", "call(323, 0)", {"EPERM", "ENOSYS"}),
    ("open_by_handle_at", "call(304, 3, buf(bytes(16)), 0)", {"EPERM"}),
    ("kexec_load", "call(246, 0, 0, 0, 0)", {"EPERM"}),
    ("init_module", "call(175, 0, 0, buf(b''))", {"EPERM"}),
    ("settimeofday", "call(164, buf(bytes(16)), 0)", {"EPERM"}),
    ("chroot", "call(161, buf(b'/tmp'))", {"EPERM"}),
    ("mknod block device", "call(133, buf(b'/tmp/sda'), 0o60600, 0x800)", {"EPERM"}),
    ("setuid(0)", "call(105, 0)", {"EPERM"}),
    ("raw IPv4 socket", "sock(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)", {"EPERM"}),
    ("packet socket", "sock(socket.AF_PACKET, socket.SOCK_RAW, 0)", {"EPERM", "EAFNOSUPPORT"}),
]


def _portable(expr: str) -> str:
    # gVisor has no /proc/self/ns/mnt: setns is then tried on a bad descriptor.
    return expr.replace("os.open('/proc/self/ns/mnt', 0)", "-1") if is_gvisor() else expr


def test_container_escape_interfaces_are_refused(probe: Probe) -> None:
    code = (
        _SYSCALL
        + "import socket\n"
        + "keep = []\n"
        + "def buf(data):\n    b = ctypes.create_string_buffer(data); keep.append(b)\n"
        + "    return ctypes.addressof(b)\n"
        + "def sock(*args):\n    try:\n        socket.socket(*args).close(); return 'ok'\n"
        + "    except OSError as e:\n        return errno.errorcode[e.errno]\n"
        + "print(json.dumps({"
        + ", ".join(f"{name!r}: {_portable(expr)}" for name, expr, _ in ESCAPES)
        + "}))"
    )
    results = json.loads(probe(code).strip().splitlines()[-1])
    if is_gvisor():  # its own errno values: any refusal is containment, success is not
        # Namespaces and device nodes exist only inside gVisor's kernel: a node it makes
        # reaches no host device, a namespace no host resource.
        inside = {"unshare mount namespace", "unshare user namespace", "mknod block device"}
        succeeded = [name for name, result in results.items() if result in ("ok", 0, "0")]
        assert not set(succeeded) - inside, succeeded
        return
    refused = {name: results[name] for name, _, allowed in ESCAPES if results[name] in allowed}
    assert results == refused, {n: results[n] for n in results if n not in refused}


def test_command_line_escapes_fail(probe: Probe) -> None:
    code = (
        "import json, subprocess\nout = {}\n"
        "for name, cmd in [('unshare -Ur', 'unshare -Ur true'), ('date -s', 'date -s 2001-01-01'),"
        " ('mount', 'mount -t tmpfs none /tmp'), ('su', 'su -c id root </dev/null'),"
        " ('dmesg', 'dmesg')]:\n"
        "    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)\n"
        "    out[name] = [r.returncode, r.stderr.strip()[-80:]]\n"
        "print(json.dumps(out))"
    )
    results = json.loads(probe(code).strip().splitlines()[-1])
    if is_gvisor():
        # gVisor implements user namespaces inside its own kernel: `unshare -Ur` succeeds
        # there and grants nothing on the host; the rest is refused as under runc.
        results.pop("unshare -Ur")
        results.pop("dmesg")  # gVisor's own synthetic log, not the host's
    for name, (returncode, stderr) in results.items():
        assert returncode != 0, (name, stderr)
    if is_gvisor():
        return
    assert "Operation not permitted" in results["unshare -Ur"][1]
    assert "Operation not permitted" in results["date -s"][1]


def test_the_supervisor_cannot_be_traced(probe: Probe) -> None:
    """Sandbox code cannot take over sandbox-init (PID 1, the hard deadline's enforcer)."""
    code = (
        _SYSCALL
        + "pids = {}\n"
        + "for entry in os.listdir('/proc'):\n"
        + "    if entry.isdigit():\n"
        + "        cmd = open(f'/proc/{entry}/cmdline', 'rb').read()\n"
        + "        if b'sandbox-init' in cmd and b'ipykernel' not in cmd: pids[entry] = cmd[:40]\n"
        + "out = {}\n"
        + "for pid in pids:\n"
        + "    out[pid + ' ptrace'] = call(101, 0x4206, int(pid), 0, 0)\n"  # PTRACE_SEIZE
        + "    try:\n        open(f'/proc/{pid}/mem', 'rb').close(); out[pid + ' mem'] = 'ok'\n"
        + "    except OSError as e:\n        out[pid + ' mem'] = errno.errorcode[e.errno]\n"
        + "print(json.dumps(out))"
    )
    results = json.loads(probe(code).strip().splitlines()[-1])
    assert results, "no supervisor process found"
    assert all(value in ("EPERM", "EACCES") for value in results.values()), results


def test_the_supervisor_cannot_be_killed_or_stopped(probe: Probe, sandboxes: Sandboxes) -> None:
    """SIGKILL and SIGSTOP from inside never reach a namespace's init (the deadline keeper).

    gVisor lets sandbox code end its PID 1: the sandbox then ends, which contains it too (the
    deadline needs no keeper once nothing runs); checked on a sandbox of its own."""
    if is_gvisor():
        client = sandboxes.client()
        container_id = client.containers.create(name="pid1").id
        kill = "import os, signal, time; os.kill(1, signal.SIGKILL); time.sleep(5)"
        client.containers.execute(container_id, kill, timeout=30)
        deadline = time.monotonic() + 60
        while client.containers.retrieve(container_id).status != "terminated":
            assert time.monotonic() < deadline, "the sandbox outlived its PID 1"
            time.sleep(0.5)
        return
    state = probe(
        "import os, signal, time\n"
        "os.kill(1, signal.SIGSTOP); os.kill(1, signal.SIGKILL); time.sleep(0.3)\n"
        "print(open('/proc/1/stat').read().rpartition(')')[2].split()[0])"
    )
    assert state.strip() == "S"  # sleeping in sigtimedwait: neither stopped nor gone
    assert probe("print('alive')") == "alive\n"
