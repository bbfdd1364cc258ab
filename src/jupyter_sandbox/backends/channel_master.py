"""The master secret the tcp kernel channel's Curve keys derive from (`kernel_tcp.sandbox_keys`).

One machine (the SQLite store, the default): `<home>/curve-master.key`, as before
(`kernel_tcp.master_key`). A shared PostgreSQL store: one row of the store's
`channel_secrets` table, written once by whichever server needs it first (an atomic
insert-if-absent) and read by every server, whatever its state folder, so any server can
reach the kernel of a sandbox any other server made. A server that already had a file
master offers that one, so the sandboxes it made before keep their keys.

Why the store (docs/security.md, "The kernel channel's keys on a shared store"): it is
already trusted with every sandbox's record, including the kernel's HMAC signing key; the
master adds nothing a database reader could not already aim at a kernel, since the kernel
is reached only through a node engine's mutual-TLS API (the exec tunnel), never over an
open port. Backends read it here and nowhere else; it never leaves the API servers.
"""

from __future__ import annotations

import secrets
import time

from jupyter_sandbox.backends import kernel_tcp
from jupyter_sandbox.backends.open_store import open_store
from jupyter_sandbox.backends.store import Store
from jupyter_sandbox.settings import Settings

__all__ = ["MASTER_ROW", "channel_master", "shared_master"]

MASTER_ROW = "curve-master"
"""The `channel_secrets` row that holds the master (hex)."""


def channel_master(settings: Settings) -> bytes:
    """The 32-byte master for `settings`' store (a short connection for a shared store).

    Raises:
        ChannelSetupError: the key on file or in the store is not 32 bytes.
    """
    if settings.store_url is None:
        return kernel_tcp.master_key(settings.home)
    store = open_store(settings)
    try:
        return shared_master(store, settings)
    finally:
        store.close()


def shared_master(store: Store, settings: Settings) -> bytes:
    """The store's master, written first if it has none (this server's file master if it has
    one, else a fresh random one); whichever server's insert lands first wins for all."""
    local = settings.home / kernel_tcp.MASTER_KEY_FILE
    offered = local.read_bytes() if local.is_file() else b""
    if len(offered) != 32:
        offered = secrets.token_bytes(32)
    with store.transaction() as db:
        db.execute(
            "INSERT INTO channel_secrets (name, value, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO NOTHING",
            (MASTER_ROW, offered.hex(), time.time()),
        )
        row = db.execute("SELECT value FROM channel_secrets WHERE name = ?", (MASTER_ROW,))
        value = row.fetchone()
    try:
        master = bytes.fromhex(str(value[0]))
    except (TypeError, ValueError):
        master = b""
    if len(master) != 32:
        raise kernel_tcp.ChannelSetupError(
            f"the store's channel_secrets row {MASTER_ROW!r} is not a 32-byte key; delete it "
            "(every tcp sandbox's kernel then becomes unreachable) to make a new one"
        )
    return master
