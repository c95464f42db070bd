"""A short-lived cache of analytics answers: in process, or in Redis (``GRIDEX_REDIS_URL``) so
that every worker shares what one of them computed.

Answers are JSON; the key names the figure, its parameters and the runtime configuration's
version (an emission factor changed by an admin is never served from before the change). A
cache failure (Redis down) only costs the computation: the answer is computed and returned.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog

from gridex.core.runtime import Runtime

log = structlog.get_logger(__name__)

CACHE = "analytics.cache"
_PREFIX = "gridex:analytics:"
_MAX_ENTRIES = 10_000


class AnswerCache:
    """``get`` / ``put`` of JSON-able answers with a TTL."""

    def __init__(self, redis_url: str | None) -> None:
        self._memory: dict[str, tuple[float, bytes]] = {}
        self._redis: Any = None
        if redis_url:
            from redis.asyncio import Redis  # optional at runtime, as for pub/sub

            self._redis = Redis.from_url(redis_url)

    @property
    def backend(self) -> str:
        return "redis" if self._redis is not None else "memory"

    async def get(self, key: str) -> Any | None:
        if self._redis is not None:
            try:
                raw = await self._redis.get(_PREFIX + key)
            except Exception as exc:
                log.warning("analytics_cache_unavailable", error=str(exc)[:200])
                return None
            return None if raw is None else orjson.loads(raw)
        found = self._memory.get(key)
        if found is None:
            return None
        expires, raw = found
        if expires < time.monotonic():
            self._memory.pop(key, None)
            return None
        return orjson.loads(raw)

    async def put(self, key: str, value: Any, ttl_seconds: float) -> None:
        raw = orjson.dumps(value)
        if self._redis is not None:
            try:
                await self._redis.set(_PREFIX + key, raw, px=max(1, int(ttl_seconds * 1000)))
            except Exception as exc:
                log.warning("analytics_cache_unavailable", error=str(exc)[:200])
            return
        if len(self._memory) >= _MAX_ENTRIES:
            now = time.monotonic()
            self._memory = {k: v for k, v in self._memory.items() if v[0] >= now}
            if len(self._memory) >= _MAX_ENTRIES:
                self._memory.clear()
        self._memory[key] = (time.monotonic() + ttl_seconds, raw)

    async def clear(self) -> None:
        self._memory.clear()
        if self._redis is not None:
            keys = [k async for k in self._redis.scan_iter(match=_PREFIX + "*")]
            if keys:
                await self._redis.delete(*keys)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


def cache_of(rt: Runtime) -> AnswerCache:
    cache = rt.extensions.get(CACHE)
    if not isinstance(cache, AnswerCache):
        cache = AnswerCache(rt.settings.redis_url)
        rt.extensions[CACHE] = cache
    return cache


def cache_key(name: str, version: int, params: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    return f"{name}:v{version}:{digest}"


async def cached(
    rt: Runtime,
    name: str,
    version: int,
    params: dict[str, Any],
    compute: Callable[[], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """The answer of ``compute`` for ``params``, from the cache while it is fresh."""
    ttl = rt.settings.analytics_cache_seconds
    if ttl <= 0:
        return await compute()
    cache = cache_of(rt)
    key = cache_key(name, version, params)
    hit = await cache.get(key)
    if hit is not None:
        return dict(hit)
    answer = await compute()
    await cache.put(key, answer, ttl)
    return answer
