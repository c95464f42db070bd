"""A reading whose metadata is too deep or too large is rejected alone; the batch's others land."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from gridex.meters.models import RejectedReading
from tests.factories import API, signed_in
from tests.meters.helpers import at_now, make_key, make_meter, reading

NESTED = '{"a":' * 1000 + "{}" + "}" * 1000
LARGE = json.dumps({"blob": "x" * 20_000})


@pytest.mark.parametrize("bad", [NESTED, LARGE], ids=["nested", "large"])
async def test_one_bad_metadata_costs_only_its_reading(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, bad: str
) -> None:
    now = at_now(clock)
    account = await signed_in(client, runtime)
    meter = await make_meter(client, account)
    key = await make_key(client, account, ["readings:write"])
    good = {"meter_serial": meter["serial"], **reading(now - timedelta(minutes=15))}
    spoilt = json.dumps({"meter_serial": meter["serial"], **reading(now), "metadata": None})
    spoilt = spoilt.replace('"metadata": null', f'"metadata": {bad}')
    body = f'{{"readings": [{spoilt}, {json.dumps(good)}]}}'
    response = await client.post(
        f"{API}/readings/batch", content=body, headers={**key, "content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == 1
    assert [(r["index"], r["code"], r["reason"]) for r in result["rejected"]] == [
        (0, "VALIDATION_ERROR", "malformed")
    ]
    async with runtime.db.sessionmaker() as session:
        [dead] = await session.scalars(select(RejectedReading))
    assert "metadata" in dead.message
