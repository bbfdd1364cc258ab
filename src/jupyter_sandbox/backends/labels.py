"""The labels put on every Docker object the project creates."""

from __future__ import annotations

PREFIX = "org.jupyter-sandbox"
MANAGED = f"{PREFIX}.managed"
CONTAINER_ID = f"{PREFIX}.container-id"
STORE = f"{PREFIX}.store"
VERSION = f"{PREFIX}.version"
ROLE = f"{PREFIX}.role"


def sandbox_labels(
    container_id: str, store_id: str, version: str, extra: dict[str, str]
) -> dict[str, str]:
    """Labels for an object that belongs to one sandbox."""
    return {
        **extra,
        MANAGED: "true",
        CONTAINER_ID: container_id,
        STORE: store_id,
        VERSION: version,
    }
