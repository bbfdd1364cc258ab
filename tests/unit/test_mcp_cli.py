"""`jupyter-sandbox mcp` and `serve`'s model options refuse unsafe or malformed input."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from jupyter_sandbox.cli import app

runner = CliRunner()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "example.com", "::"])
def test_mcp_http_refuses_non_loopback_hosts(host: str) -> None:
    result = runner.invoke(app, ["mcp", "--http", "--host", host])
    assert result.exit_code == 2
    assert "no authentication" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--model-map", "gpt-4", "NAME=UPSTREAM"),
        ("--model-map", "=qwen", "NAME=UPSTREAM"),
        ("--model-base-url", "ftp://x", "http(s) URL"),
    ],
)
def test_serve_refuses_bad_model_options(option: str, value: str, words: str) -> None:
    result = runner.invoke(
        app, ["serve", option, value], env={"JUPYTER_SANDBOX_API_KEYS": "p:sk-0123456789abcdef"}
    )
    assert result.exit_code == 2, result.output
    assert words in " ".join(result.output.split())
