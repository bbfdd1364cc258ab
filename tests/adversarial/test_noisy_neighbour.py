"""Noisy neighbour: while one sandbox runs a bomb, another's executes stay fast (a loose ratio
here; the figures come from benchmarks/noisy_neighbour.py)."""

from __future__ import annotations

import pytest
from benchmarks.noisy_neighbour import run

from tests.adversarial.conftest import Sandboxes, is_gvisor

RUNC_ONLY = (
    "a performance measurement of runc's cgroup limits (gVisor's overhead is measured in "
    "benchmarks/channels.py)"
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# The target is 2x; the suite shares a 2-core machine with whatever else runs, so it fails only
# on a clear loss of isolation.
LOOSE_RATIO = 4.0


def test_a_bomb_next_door_barely_slows_the_victim(sandboxes: Sandboxes) -> None:
    baseline, phases = run(
        sandboxes.home, sandboxes.label, ["cpu", "fork", "memory", "stdout", "fd"], seconds=4
    )
    ratios = {phase.name: round(phase.p95 / baseline.p95, 2) for phase in phases}
    assert all(phase.attacker_runs >= 1 for phase in phases)
    # gVisor's user-space kernel spends more host CPU per bomb syscall (stdout, fd floods).
    loose = LOOSE_RATIO * (2 if is_gvisor() else 1)
    assert max(ratios.values()) <= loose, (f"baseline p95 {baseline.p95:.4f} s", ratios)
