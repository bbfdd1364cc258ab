"""The tcp kernel channel's master secret: one per state folder on SQLite, one per shared
PostgreSQL store (written once, whichever server asks first), so servers with different
state folders derive the same keys for every sandbox."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydantic import SecretStr

from jupyter_sandbox.backends import kernel_tcp
from jupyter_sandbox.backends.channel_master import MASTER_ROW, channel_master
from jupyter_sandbox.backends.open_store import open_store
from jupyter_sandbox.settings import Settings


def on_store(home: Path, url: str | None) -> Settings:
    return Settings(home=home, store_url=SecretStr(url) if url else None)


def test_sqlite_keeps_the_state_folders_file(tmp_path: Path) -> None:
    first = channel_master(on_store(tmp_path / "a", None))
    assert first == (tmp_path / "a" / kernel_tcp.MASTER_KEY_FILE).read_bytes()
    assert channel_master(on_store(tmp_path / "a", None)) == first
    assert channel_master(on_store(tmp_path / "b", None)) != first  # another host's


def test_servers_on_one_postgres_store_share_one_master(tmp_path: Path, postgres_url: str) -> None:
    homes = [tmp_path / f"server-{index}" for index in range(6)]
    found: list[bytes] = []
    threads = [
        threading.Thread(
            target=lambda h=home: found.append(channel_master(on_store(h, postgres_url)))
        )
        for home in homes
    ]
    for thread in threads:  # first use on six servers at once: one insert wins for all
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 6
    assert len(set(found)) == 1
    assert len(found[0]) == 32
    assert not [h for h in homes if (h / kernel_tcp.MASTER_KEY_FILE).exists()]  # no copies
    keys = {kernel_tcp.sandbox_keys(m, "cntr_x").client_secret for m in found}
    assert len(keys) == 1


def test_a_servers_file_master_seeds_an_empty_store(tmp_path: Path, postgres_url: str) -> None:
    """An upgraded server keeps the keys of the sandboxes it made when it was alone."""
    before = kernel_tcp.master_key(tmp_path / "old")
    assert channel_master(on_store(tmp_path / "old", postgres_url)) == before
    assert channel_master(on_store(tmp_path / "new", postgres_url)) == before


def test_a_damaged_store_master_fails_closed(tmp_path: Path, postgres_url: str) -> None:
    settings = on_store(tmp_path, postgres_url)
    store = open_store(settings)
    try:
        with store.transaction() as db:
            db.execute(
                "INSERT INTO channel_secrets (name, value, created_at) VALUES (?, ?, 0)",
                (MASTER_ROW, "abcd"),
            )
    finally:
        store.close()
    with pytest.raises(kernel_tcp.ChannelSetupError) as caught:
        channel_master(settings)
    assert "not a 32-byte key" in caught.value.message
