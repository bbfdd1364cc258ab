"""What the sandbox can see: /proc, /sys and /dev are masked; nothing of the host leaks in
(environment, engine socket, HMAC key); with the network disabled nothing goes out."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

import pytest

from tests.adversarial.conftest import Sandboxes, is_gvisor, run, run_json

pytestmark = pytest.mark.docker

Probe = Callable[[str], str]

_READ = """
import errno, json, os
def read(path, size=4096):
    try:
        with open(path, 'rb') as f:
            return 'data' if f.read(size) else 'empty'
    except OSError as e:
        return errno.errorcode[e.errno]
def write(path, data=b'x'):
    try:
        with open(path, 'wb') as f:
            f.write(data)
        return 'ok'
    except OSError as e:
        return errno.errorcode[e.errno]
"""

# (path, how it may read: empty or an error, never data)
MASKED = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/sysrq-trigger",
    "/proc/acpi",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/kernel/debug",
]
NOT_WRITABLE = [
    "/proc/sysrq-trigger",
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/kernel/modprobe",
    "/proc/sys/vm/drop_caches",
    "/sys/kernel/uevent_helper",
    "/proc/self/oom_score_adj",
]


def test_proc_and_sys_are_masked(probe: Probe) -> None:
    code = (
        _READ
        + "out = {}\n"
        + f"for path in {MASKED!r}:\n"
        + "    is_dir = os.path.isdir(path)\n"
        + "    out[path] = (os.listdir(path) or 'empty') if is_dir else read(path)\n"
        + "print(json.dumps(out))"
    )
    seen = json.loads(probe(code).strip().splitlines()[-1])
    leaked = {path: how for path, how in seen.items() if how == "data" or isinstance(how, list)}
    assert not leaked, leaked


def test_kernel_addresses_are_hidden(probe: Probe) -> None:
    addresses = probe(
        "import os\n"
        "print(set(line.split()[0] for line in open('/proc/kallsyms').read().splitlines())"
        " if os.path.exists('/proc/kallsyms') else 'absent')"
    )
    if is_gvisor():  # gVisor's /proc has no kallsyms: no host kernel address to leak
        assert addresses.strip() == "absent"
        return
    assert addresses.strip() == "{'0000000000000000'}"  # kptr_restrict: no KASLR leak


def test_kernel_knobs_are_not_writable(probe: Probe) -> None:
    code = (
        _READ
        + "out = {}\n"
        + f"for path in {NOT_WRITABLE!r}:\n"
        + "    out[path] = write(path, b'-1000' if 'oom' in path else b'|/tmp/x')\n"
        + "print(json.dumps(out))"
    )
    written = json.loads(probe(code).strip().splitlines()[-1])
    if is_gvisor():  # gVisor's own OOM score, inside its kernel: the host's is untouched
        written.pop("/proc/self/oom_score_adj")
    assert not [path for path, how in written.items() if how == "ok"], written


def test_no_kernel_log_and_no_dangerous_devices(probe: Probe) -> None:
    code = (
        _READ
        + "import ctypes, stat\n"
        + "libc = ctypes.CDLL(None, use_errno=True)\n"
        + "buffer = ctypes.create_string_buffer(4096)\n"
        + "klog = libc.klogctl(3, buffer, 4096)\n"
        + "devices = sorted(os.listdir('/dev'))\n"
        + "blocks = [d for d in devices if stat.S_ISBLK(os.lstat('/dev/' + d).st_mode)]\n"
        + "print(json.dumps({'klogctl': klog, 'devices': devices, 'blocks': blocks,"
        + " 'kmsg': read('/dev/kmsg'), 'mem': read('/dev/mem')}))"
    )
    seen = json.loads(probe(code).strip().splitlines()[-1])
    # gVisor answers with its own synthetic boot log ("Starting gVisor..."), not the host's.
    assert seen["klogctl"] == -1 or is_gvisor()  # dmesg: EPERM
    assert seen["blocks"] == []
    assert seen["kmsg"] == "ENOENT"
    assert seen["mem"] == "ENOENT"
    forbidden = {"mem", "kmem", "port", "kmsg", "sda", "nvme0", "loop0", "fuse", "kvm", "net"}
    if is_gvisor():  # gVisor's own FUSE, served by its user-space kernel, not the host's
        forbidden.discard("fuse")
    assert not forbidden & set(seen["devices"])


# Variables the image, Docker and ipykernel set; anything else would come from the host.
ENV_ALLOWED = {
    "HOME", "HOSTNAME", "PATH", "PWD", "LANG", "MPLBACKEND", "MPLCONFIGDIR", "IPYTHONDIR",
    "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PAGER", "GIT_PAGER", "TERM", "CLICOLOR",
    # ipykernel 7 sets these for colored tracebacks.
    "FORCE_COLOR", "CLICOLOR_FORCE",
    "PYTHONPATH", "JPY_PARENT_PID", "SHLVL", "_",
}  # fmt: skip


def test_environment_is_allowlisted(sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JSBX_HOST_CANARY", "host-secret-7f3a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret-7f3a")
    client = sandboxes.client()
    container = client.containers.create(name="env")
    env = run_json(
        client,
        container.id,
        "import json, os\nprint(json.dumps({'kernel': dict(os.environ)}))",
    )
    assert isinstance(env, dict)
    configured = subprocess.run(
        ["docker", "inspect", "-f", "{{json .Config.Env}}", f"jsbx-{container.id}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    env["container"] = dict(item.split("=", 1) for item in json.loads(configured))
    for where, variables in env.items():
        assert set(variables) <= ENV_ALLOWED, (where, set(variables) - ENV_ALLOWED)
        assert "host-secret-7f3a" not in json.dumps(variables)
    client.containers.delete(container.id)


def test_engine_socket_is_unreachable(probe: Probe) -> None:
    code = (
        "import json, os, socket\nout = {}\n"
        "for path in ['/var/run/docker.sock', '/run/docker.sock',"
        " '/run/containerd/containerd.sock', '/var/run/docker/libnetwork']:\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    try:\n        s.connect(path); out[path] = 'connected'\n"
        "    except OSError as e:\n        out[path] = e.strerror\n"
        "    s.close()\n"
        "print(json.dumps(out))"
    )
    seen = json.loads(probe(code).strip().splitlines()[-1])
    assert "connected" not in seen.values(), seen


def test_hmac_key_is_absent_from_host_ps_and_docker_inspect(sandboxes: Sandboxes) -> None:
    client = sandboxes.client()
    container = client.containers.create(name="key")
    key = client._store.get(container.id).kernel_key  # type: ignore[union-attr]
    assert len(key) >= 32
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    inspect = subprocess.run(
        ["docker", "inspect", f"jsbx-{container.id}"], capture_output=True, text=True, check=True
    ).stdout
    environ = b"".join(
        _read_or_empty(f"/proc/{pid}/environ") for pid in os.listdir("/proc") if pid.isdigit()
    )
    assert key not in ps
    assert key not in inspect
    assert key.encode() not in environ
    client.containers.delete(container.id)


def _read_or_empty(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def test_network_disabled_means_only_loopback(probe: Probe) -> None:
    code = (
        "import errno, json, os, socket, subprocess\nout = {}\n"
        "def attempt(name, fn):\n"
        "    try:\n        fn(); out[name] = 'ok'\n"
        "    except OSError as e:\n        out[name] = type(e).__name__ + ':' + str(e.errno)\n"
        "def tcp():\n    s = socket.create_connection(('1.1.1.1', 443), timeout=3); s.close()\n"
        "def udp_dns():\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n"
        "    s.sendto(b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00"
        "\\x07example\\x03com\\x00\\x00\\x01\\x00\\x01', ('8.8.8.8', 53)); s.recv(512)\n"
        "def resolve():\n    socket.getaddrinfo('example.com', 443)\n"
        "def tcp6():\n    s = socket.create_connection(('2606:4700:4700::1111', 443), timeout=3)\n"
        "attempt('tcp', tcp); attempt('udp53', udp_dns); attempt('getaddrinfo', resolve)\n"
        "attempt('tcp6', tcp6)\n"
        "out['interfaces'] = sorted(os.listdir('/sys/class/net'))\n"
        "print(json.dumps(out))"
    )
    seen = json.loads(probe(code).strip().splitlines()[-1])
    assert seen.pop("interfaces") == ["lo"]
    assert not [name for name, how in seen.items() if how == "ok"], seen


def test_sandbox_cannot_see_the_host_or_other_sandboxes(sandboxes: Sandboxes) -> None:
    client = sandboxes.client()
    first = client.containers.create(name="a")
    second = client.containers.create(name="b")
    run(client, first.id, "open('/mnt/data/secret-a', 'w').write('a')")
    seen = run_json(
        client,
        second.id,
        "import json, os\n"
        "procs = [open(f'/proc/{p}/cmdline','rb').read()[:30].decode('utf8','replace')"
        " for p in os.listdir('/proc') if p.isdigit()]\n"
        "print(json.dumps({'files': os.listdir('/mnt/data'), 'procs': len(procs),"
        " 'kernel_dir': sorted(os.listdir('/run/kernel'))}))",
    )
    assert isinstance(seen, dict)
    assert seen["files"] == []
    assert seen["procs"] <= 4  # sandbox-init, the kernel (and maybe a helper)
    assert "connection.json" in seen["kernel_dir"]
    client.containers.delete(first.id)
    client.containers.delete(second.id)
