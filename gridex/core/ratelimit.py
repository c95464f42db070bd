"""Rate limits with the ``limits`` library: in-process by default, Redis when configured.

Limits apply per principal: an anonymous caller by IP, a user by id with the limit of its role,
an API key by key. The sign-in, registration, OTP and password endpoints have a stricter limit per
IP and per account on top.

With Redis configured and unreachable, limits fall back to this process's memory (so each worker
limits on its own) and Redis is tried again every ``REDIS_RETRY_SECONDS``: the API keeps
answering while Redis is down, and shared limits come back with it.

A key is limited per key only once this process has seen it authenticate
(:meth:`RateLimiter.remember_api_key`): until then a request that shows an ``X-API-Key`` counts
against its IP like any anonymous one, so made-up keys cannot each open a bucket of their own.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from gridex.core.config import Settings
from gridex.core.metrics import RATE_LIMIT_FALLBACKS

log = structlog.get_logger(__name__)

REDIS_RETRY_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class LimitState:
    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # seconds until the window frees a request


# How many authenticated API key prefixes a process remembers (least recently used go first).
KNOWN_API_KEYS = 100_000


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        memory = storage_from_string("async+memory://")
        assert isinstance(memory, Storage)
        self._memory_storage = memory
        self._memory = MovingWindowRateLimiter(memory)
        self._shared: MovingWindowRateLimiter | None = None
        if settings.redis_url:
            uri = "async+" + settings.redis_url
            # Short socket timeouts: an unreachable Redis must cost a request little before the
            # in-memory fallback takes over.
            storage = storage_from_string(
                uri, implementation="redispy", socket_connect_timeout=1.0, socket_timeout=1.0
            )
            assert isinstance(storage, Storage)
            self._shared = MovingWindowRateLimiter(storage)
            self.storage: Storage = storage
        else:
            self.storage = memory
        self._shared_down_until = 0.0
        self.anonymous = parse(settings.rate_limit_anonymous)
        self.auth = parse(settings.rate_limit_auth)
        self.default = parse(settings.rate_limit_default)
        self.admin = parse(settings.rate_limit_admin)
        self.ingest = parse(settings.rate_limit_ingest)
        self._known_keys: OrderedDict[str, None] = OrderedDict()

    async def hit(self, item: RateLimitItem, *keys: str) -> LimitState:
        if self._shared is None or time.monotonic() < self._shared_down_until:
            return await self._hit(self._memory, item, keys)
        try:
            state = await self._hit(self._shared, item, keys)
        except Exception as exc:  # any failure of the shared store: limit in memory meanwhile
            if not self._shared_down_until:
                log.warning("rate_limit_store_unavailable", error=str(exc)[:200])
            RATE_LIMIT_FALLBACKS.inc()
            self._shared_down_until = time.monotonic() + REDIS_RETRY_SECONDS
            return await self._hit(self._memory, item, keys)
        if self._shared_down_until:
            log.info("rate_limit_store_restored")
            self._shared_down_until = 0.0
        return state

    @staticmethod
    async def _hit(
        strategy: MovingWindowRateLimiter, item: RateLimitItem, keys: tuple[str, ...]
    ) -> LimitState:
        allowed = await strategy.hit(item, *keys)
        stats = await strategy.get_window_stats(item, *keys)
        reset_after = 0 if allowed else max(1, math.ceil(stats.reset_time - time.time()))
        return LimitState(
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_after=reset_after,
        )

    def remember_api_key(self, prefix: str) -> None:
        """``prefix`` belongs to a key that authenticated: limit its requests per key."""
        self._known_keys[prefix] = None
        self._known_keys.move_to_end(prefix)
        if len(self._known_keys) > KNOWN_API_KEYS:
            self._known_keys.popitem(last=False)

    def knows_api_key(self, prefix: str) -> bool:
        return prefix in self._known_keys

    async def check(self) -> bool:
        return bool(await self.storage.check())

    async def reset(self) -> None:
        """Forget every count (tests, and an operator clearing limits by hand)."""
        await self._memory_storage.reset()
        self._known_keys.clear()
        if self.storage is not self._memory_storage:
            try:
                await self.storage.reset()
            except Exception as exc:
                log.warning("rate_limit_store_unavailable", error=str(exc)[:200])
