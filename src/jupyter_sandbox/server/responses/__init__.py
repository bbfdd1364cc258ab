"""`/v1/responses` over the operator's chat completions model: the tool loop (`loop`), the
hosted tools in sandboxes (`tools`), the model client (`upstream`), shape conversion
(`convert`), streaming (`events`) and stored conversations (`service`)."""

from jupyter_sandbox.server.responses.service import ResponsesService

__all__ = ["ResponsesService"]
