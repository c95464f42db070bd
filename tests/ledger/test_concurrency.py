"""Two requests racing for the last funds cannot both win, on either backend."""

from __future__ import annotations

import asyncio

import httpx

from gridex.core.runtime import Runtime
from gridex.ledger import service as ledger
from gridex.ledger.errors import InsufficientFunds
from tests.factories import API, make_user, signed_in
from tests.ledger.helpers import balances, fund, verify

ATTEMPTS = 20
EACH = 10_000_000
FITS = 7


async def _reserve_in_own_session(rt: Runtime, user_id: object, start: asyncio.Event) -> bool:
    await start.wait()
    async with rt.db.sessionmaker() as session:
        try:
            await ledger.reserve(session, at=rt.clock.now(), user_id=user_id, amount_micros=EACH)  # type: ignore[arg-type]
            # Hold the lock a moment so that the others really queue behind it.
            await asyncio.sleep(0.005)
            await session.commit()
        except InsufficientFunds:
            await session.rollback()
            return False
    return True


async def test_parallel_reservations_only_the_ones_that_fit_win(runtime: Runtime) -> None:
    """20 concurrent reservations of 10 against 75.5 in separate sessions (connections): exactly
    7 succeed. PostgreSQL serialises them on the account's row lock with the conditional update
    re-checked after the wait; SQLite on its single writer lock."""
    user = await make_user(runtime)
    await fund(runtime, user.id, FITS * EACH + EACH // 2)
    start = asyncio.Event()
    tasks = [
        asyncio.create_task(_reserve_in_own_session(runtime, user.id, start))
        for _ in range(ATTEMPTS)
    ]
    await asyncio.sleep(0.05)
    start.set()
    results = await asyncio.gather(*tasks)
    assert sum(results) == FITS
    money = await balances(runtime, user.id)
    assert money.available_micros == EACH // 2
    assert money.reserved_micros == FITS * EACH
    report = await verify(runtime)
    assert report.ok, report.problems


async def test_parallel_withdrawals_over_http(client: httpx.AsyncClient, runtime: Runtime) -> None:
    alice = await signed_in(client, runtime)
    await fund(runtime, alice.id, 3 * EACH)
    responses = await asyncio.gather(
        *(
            client.post(
                f"{API}/wallet/withdrawals",
                json={"amount": "10", "destination": "IBAN"},
                headers=alice.headers,
            )
            for _ in range(8)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 3 + [409] * 5
    money = await balances(runtime, alice.id)
    assert (money.available_micros, money.reserved_micros) == (0, 3 * EACH)
    assert (await verify(runtime)).ok


async def test_same_idempotency_key_in_parallel_runs_once(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    alice = await signed_in(client, runtime)
    await fund(runtime, alice.id, 10 * EACH)
    headers = alice.headers | {"Idempotency-Key": "race"}
    responses = await asyncio.gather(
        *(
            client.post(
                f"{API}/wallet/withdrawals",
                json={"amount": "10", "destination": "IBAN"},
                headers=headers,
            )
            for _ in range(6)
        )
    )
    codes = [r.status_code for r in responses]
    assert set(codes) <= {201, 409}
    assert 201 in codes
    assert all(
        r.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
        for r in responses
        if r.status_code == 409
    )
    assert (await balances(runtime, alice.id)).reserved_micros == EACH
