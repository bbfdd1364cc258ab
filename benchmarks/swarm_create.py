"""Swarm backend: service create to first result, step by step, on a running cluster.

Point the environment at a manager (what `jupyter-sandbox cluster up --json` prints as `env`:
DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH), then
`python benchmarks/swarm_create.py [--rounds 6] [--executes 30]`. For each create: seconds to
`ready`, to the first result of `print(1)`, the backend's own steps (service create, task
running, hardening, image scan, kernel files) and the node Swarm chose; then the median
execute round trip through the exec tunnel on the node.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from jupyter_sandbox import Client
from jupyter_sandbox.backends.swarm_backend import SwarmBackend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--executes", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jsbx-bench-") as home:
        client = Client(home=Path(home), backend="swarm")
        backend = client._backend
        assert isinstance(backend, SwarmBackend)
        rows = []
        try:
            for _ in range(args.rounds):
                started = time.monotonic()
                box = client.containers.create(name="bench")
                ready = time.monotonic() - started
                assert client.containers.execute(box.id, "print(1)").stdout == "1\n"
                first = time.monotonic() - started
                state = backend.state(box.id)
                rounds = []
                for _ in range(args.executes):
                    at = time.monotonic()
                    client.containers.execute(box.id, "1")
                    rounds.append((time.monotonic() - at) * 1000)
                rows.append(
                    {
                        "ready_s": round(ready, 2),
                        "first_result_s": round(first, 2),
                        "steps_s": backend.tasks.last_start_steps,
                        "node": state.node if state else None,
                        "execute_ms_median": round(statistics.median(rounds), 1),
                    }
                )
                client.containers.delete(box.id)
        finally:
            client.close()
    for row in rows:
        print(json.dumps(row))
    firsts = [float(r["first_result_s"]) for r in rows]  # type: ignore[arg-type]
    print(
        json.dumps(
            {
                "first_result_s_median": round(statistics.median(firsts), 2),
                "first_result_s_min": min(firsts),
                "first_result_s_max": max(firsts),
            }
        )
    )


if __name__ == "__main__":
    main()
