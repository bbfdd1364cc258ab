"""Per-key request rate, per-project live-sandbox quota, and safe retries of `create`.

Retried creates: the openai SDK retries a POST after a timeout, a connection error, 409, 429
or 5xx, and sends no Idempotency-Key, only `X-Stainless-Retry-Count: n`. A create whose
response was lost would start a second sandbox. So every create is remembered for a short
window by (project, canonical JSON body); a request with a retry count above 0 that matches
one in flight waits for it, and one that matches a success returns that container instead of
starting another. First attempts (count 0 or no header) always create: two identical
intentional creates are two sandboxes. A failed attempt is forgotten, so its retry creates.
Limit: the memory is per process and lost on restart; servers sharing a PostgreSQL store keep
both the buckets and the attempts in it instead (`shared_limits.py`).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from jupyter_sandbox.server.errors import QuotaExceededError


class RateLimiter:
    """A token bucket per API key: `per_minute` requests a minute, bursts of that many."""

    def __init__(self, per_minute: int) -> None:
        self._rate = per_minute / 60.0
        self._capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key_id: str, now: float | None = None) -> None:
        """Take one token, or raise QuotaExceededError saying when one is free."""
        if self._rate <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key_id, (self._capacity, now))
            tokens, wait = self.take(tokens, last, now)
            self._buckets[key_id] = (tokens, now)
        if wait is not None:
            raise self.refusal(wait)

    async def acheck(self, key_id: str) -> None:
        """`check` for the event loop (a shared limiter asks its store in a worker thread)."""
        self.check(key_id)

    def take(self, tokens: float, last: float, now: float) -> tuple[float, float | None]:
        """A bucket of `tokens` at `last`, refilled to `now`, less one token: (tokens left,
        None), or (tokens, seconds until one is free) when it holds less than one."""
        tokens = min(self._capacity, tokens + max(0.0, now - last) * self._rate)
        if tokens < 1.0:
            return tokens, (1.0 - tokens) / self._rate
        return tokens - 1.0, None

    def refusal(self, wait: float) -> QuotaExceededError:
        """The 429 for a key that must wait `wait` seconds."""
        return QuotaExceededError(
            f"Rate limit reached: {int(self._capacity)} requests per minute for this "
            f"API key. Try again in {math.ceil(wait)} s.",
            retry_after=wait,
            should_retry=True,
            code="rate_limit_exceeded",
        )


@dataclass
class Attempt:
    """One create in flight or done: the container id once it succeeded."""

    started: float
    done: anyio.Event = field(default_factory=anyio.Event)
    container_id: str | None = None
    finished: float | None = None
    record_id: str | None = None
    """Its row in a shared store (`SharedCreateLedger`), if any."""
    remote: bool = False
    """Made by another server: known only from the store."""


class CreateLedger:
    """Creates of the last `window` seconds, and the live-sandbox quota per project."""

    def __init__(self, window: float = 300.0) -> None:
        self._window = window
        self._attempts: dict[str, list[Attempt]] = {}
        self._in_flight: dict[str, int] = {}

    @staticmethod
    def fingerprint(project: str, body: dict[str, Any]) -> str:
        """Stable digest of who asked and what."""
        canonical = json.dumps([project, body], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def _prune(self, now: float) -> None:
        for key in list(self._attempts):
            kept = [
                a
                for a in self._attempts[key]
                if a.finished is None or now - a.finished < self._window
            ]
            if kept:
                self._attempts[key] = kept
            else:
                del self._attempts[key]

    def earlier(self, fingerprint: str) -> Attempt | None:
        """The oldest remembered attempt with this fingerprint (in flight or succeeded)."""
        self._prune(time.monotonic())
        attempts = self._attempts.get(fingerprint)
        return attempts[0] if attempts else None

    def begin(self, fingerprint: str, project: str) -> Attempt:
        """Record a create that is starting."""
        attempt = Attempt(started=time.monotonic())
        self._attempts.setdefault(fingerprint, []).append(attempt)
        self._in_flight[project] = self._in_flight.get(project, 0) + 1
        return attempt

    def end(
        self, fingerprint: str, project: str, attempt: Attempt, container_id: str | None
    ) -> None:
        """Record how a create ended; a failure is forgotten (its retry must create)."""
        attempt.container_id = container_id
        attempt.finished = time.monotonic()
        self._in_flight[project] -= 1
        if not self._in_flight[project]:
            del self._in_flight[project]
        if container_id is None:
            attempts = self._attempts.get(fingerprint, [])
            if attempt in attempts:
                attempts.remove(attempt)
            if not attempts:
                self._attempts.pop(fingerprint, None)
        attempt.done.set()

    def in_flight(self, project: str) -> int:
        """Creates of this project still running."""
        return self._in_flight.get(project, 0)

    # The route's calls: a shared ledger also reads and writes its store (in worker threads).

    async def find(self, fingerprint: str) -> Attempt | None:
        """`earlier`, for the event loop."""
        return self.earlier(fingerprint)

    async def wait(self, attempt: Attempt) -> None:
        """Until the attempt has ended (`attempt.container_id` then says how)."""
        await attempt.done.wait()

    async def start(self, fingerprint: str, project: str) -> Attempt:
        """`begin`, for the event loop."""
        return self.begin(fingerprint, project)

    async def finish(
        self, fingerprint: str, project: str, attempt: Attempt, container_id: str | None
    ) -> None:
        """`end`, for the event loop."""
        self.end(fingerprint, project, attempt, container_id)
