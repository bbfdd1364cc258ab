"""The code_interpreter tool, self-hosted, and the shell tool: what a model calls in a sandbox.

`interpreter` (CodeInterpreter: run code, get OpenAI's `code_interpreter_call` item back),
`adapters` (the tool for models that only know function tools), `outputs` (outputs and
citations shaped like OpenAI's), `auto_containers` (the `container="auto"` sandboxes),
`shell_commands` (shell commands through a sandbox's kernel: the Responses `shell` tool and
the MCP server's `run_shell`). All of them sit on the public `Client`; the server and the MCP
server sit on them.
"""

from jupyter_sandbox.code_interpreter.interpreter import (
    CodeInterpreter,
    EventCallback,
    call_id,
    image_url,
    strip_ansi,
    to_outputs,
)

__all__ = ["CodeInterpreter", "EventCallback", "call_id", "image_url", "strip_ansi", "to_outputs"]
