"""Invalid numbers from the caller: every timeout and numeric parameter is finite and in range.

A NaN deadline is never reached (the run never times out and the host spins a core); an
infinite or huge one means "never" too. Each surface refuses them with an error naming the
parameter, before anything runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.code_interpreter import CodeInterpreter
from jupyter_sandbox.core.execution import ExecutionService
from jupyter_sandbox.core.validation import MAX_TIMEOUT_SECONDS, check_seconds, parse
from jupyter_sandbox.jupyter.kernelspec import kernel_json
from jupyter_sandbox.server import create_app
from jupyter_sandbox.server.auth import KeyRing
from jupyter_sandbox.settings import Settings
from jupyter_sandbox.types.container import ContainerCreateParams
from jupyter_sandbox.types.page import ListParams
from tests.unit.test_server import AUTH, KEY, _NoEngine

BAD_SECONDS = [
    float("nan"),
    float("inf"),
    float("-inf"),
    -1,
    0,
    0.0,
    True,
    False,
    "5",
    10**400,
    MAX_TIMEOUT_SECONDS + 1,
    [1],
]


@pytest.mark.parametrize("value", BAD_SECONDS, ids=repr)
def test_check_seconds_refuses(value: object) -> None:
    with pytest.raises(BadRequestError) as caught:
        check_seconds(value, "timeout")
    assert caught.value.param == "timeout"


@pytest.mark.parametrize(
    ("value", "seconds"), [(None, None), (1, 1.0), (0.5, 0.5), (86400, 86400.0)]
)
def test_check_seconds_accepts(value: object, seconds: float | None) -> None:
    assert check_seconds(value, "timeout") == seconds


class _Record:
    status = "ready"
    id = "cntr_x"


@pytest.mark.parametrize("value", BAD_SECONDS, ids=repr)
def test_core_execute_refuses_bad_timeouts_before_running(value: object) -> None:
    service = ExecutionService(Settings(home=Path("/nonexistent")), None, None)  # type: ignore[arg-type]
    with pytest.raises(BadRequestError) as caught:
        service.execute(_Record(), "1", timeout=value)  # type: ignore[arg-type]
    assert caught.value.param == "timeout"


def _interpreter(**kwargs: Any) -> CodeInterpreter:
    return CodeInterpreter(client=object(), **kwargs)  # type: ignore[arg-type]


SURFACES: list[tuple[str, Callable[[], object], str]] = [
    ("interpreter timeout nan", lambda: _interpreter(timeout=math.nan), "timeout"),
    ("interpreter timeout inf", lambda: _interpreter(timeout=math.inf), "timeout"),
    ("interpreter timeout -1", lambda: _interpreter(timeout=-1), "timeout"),
    ("interpreter history 0", lambda: _interpreter(history=0), "history"),
    ("interpreter history nan", lambda: _interpreter(history=math.nan), "history"),
    ("kernelspec lifetime -1", lambda: kernel_json(lifetime=-1), "lifetime_seconds"),
    ("kernelspec lifetime nan", lambda: kernel_json(lifetime=math.nan), "lifetime_seconds"),  # type: ignore[arg-type]
    ("kernelspec lifetime True", lambda: kernel_json(lifetime=True), "lifetime_seconds"),
    *[
        (
            f"create {field}={value!r}",
            lambda field=field, value=value: parse(
                ContainerCreateParams, {"name": "x", field: value}
            ),
            param,
        )
        for field, param, values in [
            ("lifetime_seconds", "lifetime_seconds", [math.nan, math.inf, -1, 0, 4, 1.5, "x"]),
            (
                "expires_after",
                "expires_after",
                [{"seconds": math.nan}, {"seconds": math.inf}, {"seconds": -1}, {"seconds": True}],
            ),
            (
                "expires_after",
                "expires_after.minutes",
                [{"minutes": math.nan}, {"minutes": math.inf}, {"minutes": 0}, {"minutes": 10**9}],
            ),
        ]
        for value in values
    ],
    *[
        (f"list limit={value!r}", lambda value=value: parse(ListParams, {"limit": value}), "limit")
        for value in (math.nan, math.inf, 0, -1, 101, 10**400, "x")
    ],
]


@pytest.mark.parametrize(("case", "call", "param"), SURFACES, ids=[s[0] for s in SURFACES])
def test_every_surface_refuses_bad_numbers(
    case: str, call: Callable[[], object], param: str
) -> None:
    with pytest.raises(BadRequestError) as caught:
        call()
    assert caught.value.param == param, case


def test_widget_panel_refuses_a_nan_refresh() -> None:
    pytest.importorskip("ipywidgets")
    from jupyter_sandbox.jupyter.widgets import Panel

    with pytest.raises(BadRequestError) as caught:
        Panel(client=object(), refresh_seconds=math.nan)  # type: ignore[arg-type]
    assert caught.value.param == "refresh_seconds"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("START_TIMEOUT", "nan"),
        ("START_TIMEOUT", "inf"),
        ("INTERRUPT_GRACE", "nan"),
        ("INTERRUPT_GRACE", "1e400"),
        ("CPUS", "inf"),
        ("SERVER_SWEEP_INTERVAL", "nan"),
        ("EGRESS_START_TIMEOUT", "-inf"),
        ("MAX_LIFETIME_SECONDS", str(10**30)),
        ("DEFAULT_LIFETIME_SECONDS", "nan"),
        ("POOL_SIZE", "1000"),
        ("POOL_MAX_AGE_SECONDS", str(10**30)),
        ("PIDS_LIMIT", str(2**63)),
        ("OUTPUT_LIMIT_BYTES", str(2**63)),
    ],
)
def test_settings_refuse_non_finite_and_huge_numbers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    monkeypatch.setenv(f"JUPYTER_SANDBOX_{name}", value)
    with pytest.raises(ValidationError) as caught:
        Settings(home=tmp_path)
    assert caught.value.errors()[0]["loc"] == (name.lower(),)


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(
        Settings(home=tmp_path / "home"),
        KeyRing.from_entries([KEY]),
        allowed_hosts={"127.0.0.1"},
    )
    app.state.server.client = _NoEngine()
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    try:
        yield client
    finally:
        client.close()


@pytest.mark.parametrize(
    "raw", ["NaN", "Infinity", "-Infinity", "1e400", "-1", "0", "86401", "true", '"5"'], ids=str
)
def test_server_refuses_bad_timeouts(http: TestClient, raw: str) -> None:
    response = http.post(
        "/v1/containers/cntr_x/execute",
        content=f'{{"code": "1", "timeout": {raw}}}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "timeout"


@pytest.mark.parametrize("raw", ["nan", "inf", "-1", "0", "101", "1e400", "true", "9" * 40])
def test_server_refuses_bad_page_limits(http: TestClient, raw: str) -> None:
    response = http.get(f"/v1/containers?limit={raw}", headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "limit"
