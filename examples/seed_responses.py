"""The seed's complete example, in Python with the official `openai` SDK, against
`jupyter-sandbox serve`: only `base_url` and `api_key` differ from the hosted API.

Start the server with a model behind it, then run this script:

    jupyter-sandbox serve --api-key-file keys.txt --model-base-url http://127.0.0.1:8080/v1
    python examples/seed_responses.py --base-url http://127.0.0.1:8000/v1 --api-key sk-local-...

It uploads a data file, creates a container with an allowlist and the file, uploads a
processing script to /workspace, asks the model to "Process the uploaded data" with the
code_interpreter tool on that container, prints `response.output`, and deletes it all.
"""

# ruff: noqa: T201  (an example: it prints what it gets)
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import openai
from openai import OpenAI

DATA = b"city,temp\nOslo,3\nLima,19\n"
SCRIPT = """\
import csv
rows = list(csv.DictReader(open('/mnt/data/data.csv')))
print({row['city']: float(row['temp']) for row in rows})
"""


def main(base_url: str, api_key: str, model: str) -> None:
    client = OpenAI(base_url=base_url, api_key=api_key)
    data = client.files.create(file=("data.csv", DATA), purpose="user_data")

    # Create container with network access
    try:
        container = client.containers.create(
            name="data-processor",
            memory_limit="2g",  # type: ignore[arg-type]  # a seed tier the SDK's Literal lacks
            network_policy={"type": "allowlist", "domains": ["api.weatherapi.com"]},  # type: ignore[arg-type]
            file_ids=[data.id],
        )
    except openai.BadRequestError as exc:
        if exc.param != "network_policy":
            raise
        print(f"allowlist refused ({exc.message}); using no network")
        container = client.containers.create(
            name="data-processor",
            memory_limit="2g",  # type: ignore[arg-type]
            file_ids=[data.id],
        )
    print(f"Container created: {container.id}")

    # Upload processing script
    with tempfile.TemporaryDirectory() as folder:
        script_path = Path(folder) / "process.py"
        script_path.write_text(SCRIPT)
        with script_path.open("rb") as handle:
            script = client.containers.files.create(
                container.id, file=handle, extra_body={"path": "/workspace/process.py"}
            )
    print(f"Script uploaded: {script.path}")

    # Use container in Responses API
    response = client.responses.create(
        model=model,
        input="Process the uploaded data (run /workspace/process.py)",
        tools=[{"type": "code_interpreter", "container": {"container_id": container.id}}],  # type: ignore[list-item,typeddict-item]
    )
    for item in response.output:
        if item.type == "code_interpreter_call":
            logs = "".join(o.logs for o in item.outputs or [] if o.type == "logs")
            print(f"code_interpreter_call ({item.status}):\n{item.code}\n--- logs ---\n{logs}")
        elif item.type == "message":
            print(f"message: {response.output_text}")

    # Cleanup
    client.containers.delete(container.id)
    client.files.delete(data.id)
    client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", ""))
    parser.add_argument("--model", default="gpt-4")
    args = parser.parse_args()
    main(args.base_url, args.api_key, args.model)
