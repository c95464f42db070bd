"""Invariants of the energy arithmetic, and the answer cache shared through Redis."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridex.analytics.cache import AnswerCache
from gridex.analytics.service import energy_groups

START = datetime(2026, 1, 30, tzinfo=UTC)
hours = st.lists(
    st.tuples(st.integers(0, 24 * 70), st.integers(0, 10**7), st.integers(0, 10**7)),
    max_size=200,
    unique_by=lambda h: h[0],
)


@given(hours, st.sampled_from(["day", "month"]))
def test_energy_balances_per_hour_and_per_group(
    raw: list[tuple[int, int, int]], group: str
) -> None:
    series = sorted((START + timedelta(hours=h), c, p) for h, c, p in raw)
    total, groups = energy_groups(series, group)  # type: ignore[arg-type]
    assert total.consumed_wh == sum(c for _, c, _ in series)
    assert total.produced_wh == sum(p for _, _, p in series)
    assert total.self_wh == sum(min(c, p) for _, c, p in series)
    assert total.self_wh + total.imported_wh == total.consumed_wh
    assert total.self_wh + total.exported_wh == total.produced_wh
    assert min(total.imported_wh, total.exported_wh) >= 0
    assert sum(g.self_wh for g in groups.values()) == total.self_wh
    assert sum(g.consumed_wh for g in groups.values()) == total.consumed_wh
    for start in groups:
        assert start.hour == 0
        assert group == "day" or start.day == 1


async def test_memory_cache_expires() -> None:
    cache = AnswerCache(None)
    await cache.put("k", {"a": 1}, ttl_seconds=60)
    assert await cache.get("k") == {"a": 1}
    await cache.put("gone", {"a": 2}, ttl_seconds=-1)
    assert await cache.get("gone") is None


@pytest.mark.skipif(not os.environ.get("GRIDEX_TEST_REDIS_URL"), reason="needs Redis")
async def test_workers_share_answers_through_redis() -> None:
    url = os.environ["GRIDEX_TEST_REDIS_URL"]
    one, two = AnswerCache(url), AnswerCache(url)
    key = f"test:{uuid.uuid4().hex}"
    try:
        assert await two.get(key) is None
        await one.put(key, {"consumed_kwh": 1.5}, ttl_seconds=30)
        assert await two.get(key) == {"consumed_kwh": 1.5}
        assert two.backend == "redis"
    finally:
        await one.close()
        await two.close()
