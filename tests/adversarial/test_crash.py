"""Crash recovery: the owning process is SIGKILLed at random points of create, execute,
upload and delete; the next client reaps every orphan within 30 s and leaves no record
`initializing`. (A Docker daemon restart is not tested here: it would hit every other user of
this engine; see docs/security.md.)"""

from __future__ import annotations

import random

import pytest
from benchmarks.crash import CrashReport, crash_once
from benchmarks.server_crash import ServerCrashReport
from benchmarks.server_crash import crash_once as server_crash_once

from tests.adversarial.conftest import Sandboxes, is_gvisor

RUNC_ONLY = "killed host processes and reconcile are host-side code, the same under every runtime"

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_ten_random_kills_are_reconciled(sandboxes: Sandboxes) -> None:
    report = CrashReport()
    rng = random.Random(9)
    for _ in range(10):
        crash_once(sandboxes.home, sandboxes.label, rng, report)
    assert report.problems == {}, report
    assert report.kills == 10
    assert max(report.reconcile_seconds) <= 30


def test_server_kills_are_reconciled_by_the_restarted_server(sandboxes: Sandboxes) -> None:
    """`serve` with a warm pool, SIGKILLed mid-traffic four times: each restarted server's own
    start-up reconcile leaves nothing stuck or unowned (the dead server's pool included)."""
    report = ServerCrashReport()
    rng = random.Random(5)
    for _ in range(4):
        server_crash_once(sandboxes.home, sandboxes.label, rng, report)
    assert report.problems == {}, report
    assert report.kills == 4
    # The dead servers did leave pools to reap (gVisor's slower refill may not be ready yet).
    assert report.pooled_at_kill > 0 or is_gvisor()
    assert max(report.restart_seconds) <= 30
