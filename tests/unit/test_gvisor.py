"""The runtime check: a runtime the engine lacks is a BadRequestError naming `runtime`."""

from __future__ import annotations

import pytest

from jupyter_sandbox import BadRequestError
from jupyter_sandbox.backends.gvisor import check_runtime


@pytest.mark.parametrize(
    ("runtime", "registered"),
    [(None, set()), ("runc", {"runc"}), ("runsc", {"runc", "runsc"})],
)
def test_registered_runtimes_pass(runtime: str | None, registered: set[str]) -> None:
    check_runtime(runtime, registered)


def test_unregistered_runsc_names_the_fix() -> None:
    with pytest.raises(BadRequestError) as caught:
        check_runtime("runsc", {"runc"})
    assert caught.value.param == "runtime"
    assert "not registered" in caught.value.message
    assert "sudo scripts/register-runsc" in caught.value.message
    assert "apt-get install runsc" in caught.value.message


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(BadRequestError) as caught:
        check_runtime("kata", {"runc", "runsc"})
    assert caught.value.param == "runtime"
    assert "'kata' is not a runtime" in caught.value.message
    assert "'runsc' (gVisor)" in caught.value.message
