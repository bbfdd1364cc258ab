"""Which sandbox a code_interpreter call runs in: the `container` param resolved to an id.

An explicit id is looked up; `"auto"` (or `{"type": "auto", ...}`) gets one sandbox per
configuration (memory limit and network policy), made on first use, reused while it is ready
and replaced once it has ended; `file_ids` are copied into it once each. `CodeInterpreter`
(in `code_interpreter`) takes these methods from `AutoContainers`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from typing import cast

from pydantic import ValidationError

from jupyter_sandbox._exceptions import BadRequestError, NotFoundError
from jupyter_sandbox.client import Client
from jupyter_sandbox.core.validation import bad_request
from jupyter_sandbox.types.code_interpreter import (
    CodeInterpreterContainer,
    CodeInterpreterContainerAuto,
    CodeInterpreterContainerRef,
)
from jupyter_sandbox.types.container import NetworkPolicyAllowlist
from jupyter_sandbox.types.params import NetworkPolicyParam

__all__ = ["AutoContainers"]

logger = logging.getLogger("jupyter_sandbox.code_interpreter")  # the name it has always had


class AutoContainers:
    """The `container` param's resolution, and the auto sandboxes it makes (a mixin of
    `CodeInterpreter`, which sets these attributes)."""

    client: Client
    idle_minutes: int
    lifetime_seconds: int | None
    name: str
    _auto: dict[str, str]  # configuration -> container id
    _auto_files: dict[str, set[str]]  # container id -> file ids copied in
    _lock: threading.Lock

    @property
    def auto_containers(self) -> list[str]:
        """Ids of the sandboxes `container="auto"` made that are still in use."""
        return list(self._auto.values())

    def resolve(self, container: CodeInterpreterContainer = "auto") -> str:
        """The id of the sandbox a `container` param names, making the auto one if needed.

        Raises:
            BadRequestError: `container` is not one of the accepted forms.
            NotFoundError: an explicit container id is unknown.
        """
        if isinstance(container, CodeInterpreterContainerAuto):
            return self._resolve_auto(container)
        if isinstance(container, str):
            if container == "auto":
                return self._resolve_auto(CodeInterpreterContainerAuto())
            return self.client.containers.retrieve(container).id
        if isinstance(container, dict) and ("type" in container or "container_id" in container):
            try:
                if "container_id" in container:
                    ref = CodeInterpreterContainerRef.model_validate(container)
                    return self.client.containers.retrieve(ref.container_id).id
                auto = CodeInterpreterContainerAuto.model_validate(container)
            except ValidationError as exc:
                error = bad_request(exc)
                raise BadRequestError(
                    error.message.replace("Invalid ", "Invalid container.", 1),
                    param=f"container.{error.param}" if error.param else "container",
                ) from exc
            return self._resolve_auto(auto)
        raise BadRequestError(
            "Invalid container: give 'auto', a container id, {'type': 'auto', ...} "
            "or {'container_id': ...}",
            param="container",
        )

    def _auto_config(
        self, params: CodeInterpreterContainerAuto
    ) -> tuple[str, str, NetworkPolicyParam | None]:
        """(key, memory limit, network policy) of an auto configuration."""
        memory_limit = params.memory_limit or self.client.settings.default_memory_limit
        # Validated models as the create parameters they came from.
        policy: NetworkPolicyParam | None = None
        if isinstance(params.network_policy, NetworkPolicyAllowlist):
            policy = cast(
                "NetworkPolicyParam", params.network_policy.create_params()
            )  # secrets kept
        elif params.network_policy is not None:
            policy = cast("NetworkPolicyParam", params.network_policy.model_dump())
        # A digest: the configuration may hold domain secrets, which no key should keep.
        key = hashlib.sha256(
            json.dumps([memory_limit, policy], sort_keys=True).encode()
        ).hexdigest()
        return key, memory_limit, policy

    def _resolve_auto(self, params: CodeInterpreterContainerAuto) -> str:
        key, memory_limit, policy = self._auto_config(params)
        with self._lock:
            container_id = self._auto.get(key)
            if container_id is not None and not self._is_ready(container_id):
                logger.info("auto sandbox %s has ended; making a new one", container_id)
                del self._auto[key]
                self._auto_files.pop(container_id, None)
                container_id = None
            if container_id is None:
                container = self.client.containers.create(
                    name=self.name,
                    memory_limit=memory_limit,
                    network_policy=policy,
                    file_ids=list(dict.fromkeys(params.file_ids)) or None,
                    expires_after={"anchor": "last_active_at", "minutes": self.idle_minutes},
                    lifetime_seconds=self.lifetime_seconds,
                )
                container_id = container.id
                self._auto[key] = container_id
                self._auto_files[container_id] = set(params.file_ids)
                return container_id
            copied = self._auto_files.setdefault(container_id, set())
            for file_id in dict.fromkeys(params.file_ids):
                if file_id not in copied:
                    self.client.containers.files.create(container_id, file_id=file_id)
                    copied.add(file_id)
            return container_id

    def _is_ready(self, container_id: str) -> bool:
        try:
            return self.client.containers.retrieve(container_id).status in ("ready", "paused")
        except NotFoundError:
            return False
