"""Rate limits with the ``limits`` library: in-process by default, Redis when configured.

Limits apply per principal: an anonymous caller by IP, a user by id with the limit of its role,
an API key by key. The sign-in, registration, OTP and password endpoints have a stricter limit per
IP and per account on top.

A key is limited per key only once this process has seen it authenticate
(:meth:`RateLimiter.remember_api_key`): until then a request that shows an ``X-API-Key`` counts
against its IP like any anonymous one, so made-up keys cannot each open a bucket of their own.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from gridex.core.config import Settings


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
        if settings.redis_url:
            uri = "async+" + settings.redis_url
            storage = storage_from_string(uri, implementation="redispy")
        else:
            storage = storage_from_string("async+memory://")
        assert isinstance(storage, Storage)
        self.storage: Storage = storage
        self._strategy = MovingWindowRateLimiter(storage)
        self.anonymous = parse(settings.rate_limit_anonymous)
        self.auth = parse(settings.rate_limit_auth)
        self.default = parse(settings.rate_limit_default)
        self.admin = parse(settings.rate_limit_admin)
        self.ingest = parse(settings.rate_limit_ingest)
        self._known_keys: OrderedDict[str, None] = OrderedDict()

    def remember_api_key(self, prefix: str) -> None:
        """``prefix`` belongs to a key that authenticated: limit its requests per key."""
        self._known_keys[prefix] = None
        self._known_keys.move_to_end(prefix)
        if len(self._known_keys) > KNOWN_API_KEYS:
            self._known_keys.popitem(last=False)

    def knows_api_key(self, prefix: str) -> bool:
        return prefix in self._known_keys

    async def hit(self, item: RateLimitItem, *keys: str) -> LimitState:
        allowed = await self._strategy.hit(item, *keys)
        stats = await self._strategy.get_window_stats(item, *keys)
        reset_after = 0 if allowed else max(1, math.ceil(stats.reset_time - time.time()))
        return LimitState(
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_after=reset_after,
        )

    async def check(self) -> bool:
        return bool(await self.storage.check())

    async def reset(self) -> None:
        await self.storage.reset()
        self._known_keys.clear()
