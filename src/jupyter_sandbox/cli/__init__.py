"""The `jupyter-sandbox` command (also `jupyter sandbox`): parse, call the Client, render.

Exit codes: 0 success; 1 a failed execution, a failed doctor check or any other error;
2 bad input or an unknown id; 3 the Docker engine is unreachable; 130 interrupted.

`_common` holds the Typer apps and the shared helpers. Each command module registers its
commands on `app` when imported, so the order of the imports below is the order in which
`--help` lists the commands: keep it.
"""

from __future__ import annotations

# isort: off
from jupyter_sandbox.cli._common import app, parse_network
from jupyter_sandbox.cli import files  # noqa: F401 (cp, files, skills)
from jupyter_sandbox.cli import containers  # noqa: F401 (create, list, get, delete, logs, exec, gc)
from jupyter_sandbox.cli import snapshots  # noqa: F401 (snapshots create/list/get/delete)
from jupyter_sandbox.cli import serve  # noqa: F401
from jupyter_sandbox.cli import mcp  # noqa: F401
from jupyter_sandbox.cli import doctor  # noqa: F401
from jupyter_sandbox.cli import demo  # noqa: F401
from jupyter_sandbox.cli import image  # noqa: F401 (image build, image status)
from jupyter_sandbox.cli import kernelspec  # noqa: F401 (kernelspec install)
from jupyter_sandbox.cli import cluster  # noqa: F401 (cluster up, cluster status, cluster down)
# isort: on

__all__ = ["app", "main", "parse_network"]


def main() -> None:
    """Entry point of the `jupyter-sandbox` script."""
    app(prog_name="jupyter-sandbox")
