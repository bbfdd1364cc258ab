"""Churn: create, execute, delete, over and over with failing creates mixed in; nothing leaks."""

from __future__ import annotations

import pytest
from benchmarks.churn import churn

from tests.adversarial.conftest import Sandboxes

RUNC_ONLY = (
    "create/delete churn exercises the host's lifecycle and reconcile code, the same under "
    "every runtime"
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_fifty_cycles_leave_nothing_behind(sandboxes: Sandboxes) -> None:
    report = churn(sandboxes.home, sandboxes.label, cycles=50, fail_share=0.2)
    assert report.leaks == {}, report
    assert report.failed_creates == 10
    assert report.created == 40
    assert report.rss_growth_mib < 50, report
