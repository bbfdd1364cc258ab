"""`open_store(settings)`: which `Store` implementation the settings name. Apart from
`store.py` (the interface, which the implementations import) so that no import runs round a
circle."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jupyter_sandbox._exceptions import BadRequestError
from jupyter_sandbox.backends.store import Store

if TYPE_CHECKING:
    from jupyter_sandbox.settings import Settings

__all__ = ["open_store"]


def open_store(settings: Settings) -> Store:
    """The store `settings` name: PostgreSQL when `store_url` is set, else the SQLite file in
    the state folder."""
    if settings.store_url is not None:
        url = settings.store_url.get_secret_value()
        if not url.startswith(("postgresql://", "postgres://")):
            # the message leaves the URL out: it may hold a password
            raise BadRequestError("store_url must be a postgresql:// URL", param="store_url")
        try:
            from jupyter_sandbox.backends.postgres_store import PostgresStore
        except ImportError as exc:
            raise BadRequestError(
                "store_url needs psycopg: pip install 'jupyter-sandbox[postgres]'",
                param="store_url",
            ) from exc
        return PostgresStore(url)
    from jupyter_sandbox.backends.sqlite_store import SqliteStore

    return SqliteStore(settings.store_path)
