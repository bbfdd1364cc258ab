"""Network benchmark, in one run, against the tests' own local upstream (nothing leaves):

- create-to-first-result: `disabled` (the floor) beside `allowlist` with the proxy cold (its
  start included) and warm (already running for another sandbox);
- request latency to the same local server: through the egress proxy from a sandbox, and
  directly from a container on the upstream's network (same client code: urllib, a new
  connection per request), over HTTP and over HTTPS (CONNECT).

Usage (from the repository root): `python -m benchmarks.network [--rounds 3] [--requests 50]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import IMAGE
from tests.integration.test_network_lab import Lab, running_lab

from jupyter_sandbox import Client

TIMER = r"""
import json, ssl, sys, time, urllib.request
def timed(url, count, cafile):
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
    samples = []
    for _ in range(count + 1):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=20, context=context) as response:
            response.read()
        samples.append(time.perf_counter() - started)
    return samples[1:]
"""


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(samples) * 1e3:7.1f} ms   p95 {p95 * 1e3:7.1f} ms"


def first_result(client: Client, policy: dict[str, object]) -> tuple[float, str]:
    started = time.perf_counter()
    container = client.containers.create(name="bench", network_policy=policy)
    execution = client.containers.execute(container.id, "print(1)")
    assert execution.stdout == "1\n"
    return time.perf_counter() - started, container.id


def through_proxy(client: Client, container_id: str, lab: Lab, url: str, count: int) -> list[float]:
    code = (
        TIMER
        + f"open('/tmp/ca.pem', 'w').write({lab.cert_pem!r})\n"
        + f"print(json.dumps(timed({url!r}, {count}, '/tmp/ca.pem')))"
    )
    execution = client.containers.execute(container_id, code, timeout=300)
    assert execution.status == "ok", execution
    return list(json.loads(execution.stdout))


def direct(lab: Lab, folder: Path, url: str, count: int) -> list[float]:
    (folder / "ca.pem").write_text(lab.cert_pem)
    (folder / "ca.pem").chmod(0o644)
    folder.chmod(0o755)  # the kernel image runs as uid 1000
    code = TIMER + f"print(json.dumps(timed({url!r}, {count}, '/bench/ca.pem')))"
    host = url.split("/")[2]
    out = subprocess.run(
        ["docker", "run", "--rm", "--network", lab.network,
         "--add-host", f"{host}:{lab.upstream_ip}", "-v", f"{folder}:/bench:ro",
         "--entrypoint", "python3", IMAGE, "-c", code],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return list(json.loads(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jsbx-netbench-") as scratch:
        folder = Path(scratch)
        with running_lab(folder) as lab, Client(home=folder / "home", **lab.settings) as client:
            try:
                run(client, lab, folder, args.rounds, args.requests)
            finally:
                for container in client.containers.list(limit=100):
                    client.containers.delete(container.id)


def run(client: Client, lab: Lab, folder: Path, rounds: int, requests: int) -> None:
    allowlist = {"type": "allowlist", "allowed_domains": ["allowed.test"]}
    disabled, cold, warm = [], [], []
    for _ in range(rounds):
        seconds, container_id = first_result(client, {"type": "disabled"})
        disabled.append(seconds)
        client.containers.delete(container_id)
    for index in range(rounds):
        seconds, keeper = first_result(client, allowlist)  # the proxy starts here
        cold.append(seconds)
        seconds, container_id = first_result(client, allowlist)  # the proxy is already up
        warm.append(seconds)
        client.containers.delete(container_id)
        if index < rounds - 1:
            client.containers.delete(keeper)  # the proxy goes with the last sandbox
    print("create-to-first-result (median of", rounds, "rounds)")
    print(f"  disabled                 {statistics.median(disabled):6.2f} s")
    print(f"  allowlist, proxy cold    {statistics.median(cold):6.2f} s")
    print(f"  allowlist, proxy warm    {statistics.median(warm):6.2f} s")
    print(f"request to the same local server ({requests} requests, new connection each)")
    for scheme in ("http", "https"):
        url = f"{scheme}://allowed.test/"
        proxied = through_proxy(client, keeper, lab, url, requests)
        straight = direct(lab, folder, url, requests)
        overhead = statistics.median(proxied) - statistics.median(straight)
        print(f"  {scheme:5} direct             {summary(straight)}")
        print(f"  {scheme:5} through the proxy  {summary(proxied)}")
        print(f"  {scheme:5} proxy overhead     {overhead * 1e3:7.1f} ms (median)")


if __name__ == "__main__":
    main()
