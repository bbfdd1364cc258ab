"""Pydantic models: the one definition of every shape we accept or return."""

from jupyter_sandbox.types.container import (
    Container,
    ContainerCreateParams,
    ContainerDeleted,
    ContainerStatus,
    ExpiresAfter,
    MemoryLimit,
    NetworkPolicy,
    NetworkPolicyAllowlist,
    NetworkPolicyDisabled,
)
from jupyter_sandbox.types.execution import (
    DisplayDataOutput,
    ErrorOutput,
    ExecuteResultOutput,
    Execution,
    ExecutionOutput,
    ExecutionStatus,
    StreamOutput,
)
from jupyter_sandbox.types.page import CursorPage, ListParams

__all__ = [
    "Container",
    "ContainerCreateParams",
    "ContainerDeleted",
    "ContainerStatus",
    "CursorPage",
    "DisplayDataOutput",
    "ErrorOutput",
    "ExecuteResultOutput",
    "Execution",
    "ExecutionOutput",
    "ExecutionStatus",
    "ExpiresAfter",
    "ListParams",
    "MemoryLimit",
    "NetworkPolicy",
    "NetworkPolicyAllowlist",
    "NetworkPolicyDisabled",
    "StreamOutput",
]
