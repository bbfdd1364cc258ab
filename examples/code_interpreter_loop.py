"""The seed's complete example, code_interpreter step included, with any OpenAI-compatible model.

The seed creates a container, uploads a script, then asks the Responses API to "Process the
uploaded data" with `tools=[{"type": "code_interpreter", "container": {"container_id": ...}}]`.
Here the model gets the code_interpreter as a function tool, and each call it makes runs in
the local sandbox; the loop ends when the model answers in text.

    python examples/code_interpreter_loop.py --base-url http://localhost:8000/v1 --model qwen3
    python examples/code_interpreter_loop.py --api chat ...    # chat completions instead

`OPENAI_API_KEY` is sent if set (a local server usually ignores it).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openai import OpenAI

from jupyter_sandbox import Client
from jupyter_sandbox.code_interpreter import CodeInterpreter
from jupyter_sandbox.types.code_interpreter import ContainerFileCitation

PROMPT = "Process the uploaded data"
DATA = "city,day,temp_c\nOslo,1,4.5\nOslo,2,6.0\nLima,1,19.0\nLima,2,21.5\n"
SCRIPT = """\
import pandas as pd
import matplotlib.pyplot as plt

df = pd.read_csv("/mnt/data/weather.csv")
summary = df.groupby("city")["temp_c"].mean()
print(summary.to_string())
summary.plot.bar(title="Mean temperature")
plt.savefig("/mnt/data/chart.png")
plt.show()
"""
INSTRUCTIONS = (
    "You have a Python sandbox. /workspace/process.py processes the data in /mnt/data; run "
    "it, then report the result."
)


@dataclass
class Result:
    """What the loop produced: the model's answer and the files the code wrote."""

    text: str
    citations: list[ContainerFileCitation] = field(default_factory=list)
    tool_calls: int = 0


def responses_loop(
    model_client: OpenAI, ci: CodeInterpreter, container_id: str, model: str, max_turns: int = 8
) -> Result:
    """Responses API: run each `function_call` and send back its `function_call_output`."""
    inputs: list[Any] = [{"role": "user", "content": PROMPT}]
    tools: Any = [ci.responses_tool()]  # plain dicts, as the SDK's TypedDicts expect
    result = Result(text="")
    for _ in range(max_turns):
        response = model_client.responses.create(
            model=model, instructions=INSTRUCTIONS, input=inputs, tools=tools
        )
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            result.text = response.output_text
            return result
        inputs.extend(item.model_dump(exclude_none=True) for item in response.output)
        for item in calls:
            inputs.append(ci.handle_function_call(item, container={"container_id": container_id}))
            result.citations.extend(ci.citations(ci.calls[-1]))
            result.tool_calls += 1
    raise RuntimeError(f"no answer after {max_turns} turns")


def chat_loop(
    model_client: OpenAI, ci: CodeInterpreter, container_id: str, model: str, max_turns: int = 8
) -> Result:
    """Chat completions: run each of `message.tool_calls` and answer it with a tool message."""
    messages: list[Any] = [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": PROMPT},
    ]
    tools: Any = [ci.chat_tool()]
    result = Result(text="")
    for _ in range(max_turns):
        completion = model_client.chat.completions.create(
            model=model, messages=messages, tools=tools
        )
        message = completion.choices[0].message
        if not message.tool_calls:
            result.text = message.content or ""
            return result
        messages.append(message.model_dump(exclude_none=True))
        for tool_call in message.tool_calls:
            messages.append(
                ci.handle_chat_tool_call(tool_call, container={"container_id": container_id})
            )
            result.citations.extend(ci.citations(ci.calls[-1]))
            result.tool_calls += 1
    raise RuntimeError(f"no answer after {max_turns} turns")


def run_example(
    model_client: OpenAI, sandbox: Client, *, model: str, api: str, save_to: Path | None = None
) -> Result:
    """Create the seed's container (data file, uploaded script), run the loop, save the files
    the answer cites into `save_to`, clean up."""
    data = sandbox.files.create(file=("weather.csv", DATA.encode()), purpose="user_data")
    try:
        container = sandbox.containers.create(name="data-processor", file_ids=[data.id])
        try:
            sandbox.containers.files.create(
                container.id, file=("process.py", SCRIPT.encode()), path="/workspace/process.py"
            )
            with CodeInterpreter(sandbox) as ci:
                loop = responses_loop if api == "responses" else chat_loop
                result = loop(model_client, ci, container.id, model)
            for citation in result.citations:
                if save_to is None:
                    break
                target = save_to / citation.filename
                target.parent.mkdir(parents=True, exist_ok=True)
                sandbox.containers.files.content.retrieve(
                    citation.file_id, container_id=citation.container_id
                ).write_to_file(target)
            return result
        finally:
            sandbox.containers.delete(container.id)
    finally:
        sandbox.files.delete(data.id)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the example, print the answer and the cited files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"))
    parser.add_argument("--model", default="gpt-4.1")
    parser.add_argument("--api", choices=["responses", "chat"], default="responses")
    parser.add_argument("--save", type=Path, help="folder for the files the code wrote")
    args = parser.parse_args(argv)
    model_client = OpenAI(
        base_url=args.base_url, api_key=os.environ.get("OPENAI_API_KEY", "unused")
    )
    with Client() as sandbox:
        result = run_example(
            model_client, sandbox, model=args.model, api=args.api, save_to=args.save
        )
    print(result.text)  # noqa: T201
    for citation in result.citations:
        print(f"file: {citation.filename} ({citation.file_id} in {citation.container_id})")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
