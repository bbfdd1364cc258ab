"""Rate limits and create retries shared through the store: two servers (two store objects on
one store, SQLite or PostgreSQL) draw on one bucket per key and see each other's creates."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from jupyter_sandbox.backends.store import Store
from jupyter_sandbox.server.errors import QuotaExceededError
from jupyter_sandbox.server.shared_limits import SharedCreateLedger, SharedRateLimiter


def test_servers_draw_on_one_bucket_per_key(open_store: Callable[[], Store]) -> None:
    one = SharedRateLimiter(3, open_store())
    two = SharedRateLimiter(3, open_store())
    one.check("key-a", now=100.0)
    two.check("key-a", now=100.0)
    one.check("key-a", now=100.0)
    with pytest.raises(QuotaExceededError) as caught:
        two.check("key-a", now=100.0)
    assert caught.value.should_retry
    assert 19 < caught.value.retry_after <= 20
    two.check("key-b", now=100.0)  # another key has its own bucket
    two.check("key-a", now=120.5)  # a token came back for everyone
    with pytest.raises(QuotaExceededError):
        one.check("key-a", now=120.5)
    for _ in range(3):
        one.check("key-a", now=250.0)  # full again
    with pytest.raises(QuotaExceededError):
        two.check("key-a", now=200.0)  # a server whose clock is behind refills nothing
    SharedRateLimiter(0, open_store()).check("key-a")  # off


def test_a_retry_on_another_server_finds_the_first_create(open_store: Callable[[], Store]) -> None:
    async def scenario() -> tuple[str | None, str | None, bool]:
        first, second = SharedCreateLedger(open_store()), SharedCreateLedger(open_store())
        key = first.fingerprint("p", {"name": "slow"})
        attempt = await first.start(key, "p")
        seen = await second.find(key)
        assert seen is not None
        assert seen.remote
        assert not seen.done.is_set()  # still in flight over there
        async with anyio.create_task_group() as group:

            async def finish() -> None:
                await anyio.sleep(0.1)
                await first.finish(key, "p", attempt, "cntr_slow")

            group.start_soon(finish)
            await second.wait(seen)
        again = await second.find(key)  # a later retry: the success is remembered
        assert again is not None
        failed = await first.start(other := first.fingerprint("p", {"name": "x"}), "p")
        await first.finish(other, "p", failed, None)
        return seen.container_id, again.container_id, await second.find(other) is None

    assert anyio.run(scenario) == ("cntr_slow", "cntr_slow", True)


def test_an_attempt_of_a_dead_server_is_forgotten(open_store: Callable[[], Store]) -> None:
    async def scenario() -> str | None:
        dead = SharedCreateLedger(open_store())
        alive = SharedCreateLedger(open_store(), stale_after=0.3)
        key = dead.fingerprint("p", {"name": "n"})
        await dead.start(key, "p")  # and never finishes
        seen = await alive.find(key)
        assert seen is not None
        with anyio.fail_after(10):
            await alive.wait(seen)  # until its row goes stale
        assert await alive.find(key) is None
        return seen.container_id

    assert anyio.run(scenario) is None
