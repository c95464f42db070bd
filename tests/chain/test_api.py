"""The chain endpoints, the wallet's chain fields, the public trade list of an epoch (its
trades hash recomputed from public data and found in the settlement memo), and 503 when off."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gridex.auth.models import Role
from gridex.core.clock import FrozenClock, utc_iso
from gridex.core.runtime import Runtime
from tests.chain.helpers import chain_settings, mirrored
from tests.factories import API, signed_in
from tests.ledger.helpers import fund
from tests.market.helpers import MARKET_SETTINGS, NEXT, close_and_clear, place, start_clock, trader
from tests.market.test_settlement_http import get_epoch, settle


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, object]:
    return {**MARKET_SETTINGS, "access_token_minutes": 60, **chain_settings(tmp_path)}


async def _get(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> Any:
    response = await client.get(f"{API}{path}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_wallet_network_transactions_balances_and_reconciliation(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    alice = await signed_in(client, runtime)
    bob = await signed_in(client, runtime)
    admin = await signed_in(client, runtime, Role.admin)
    await fund(runtime, alice.id, 1_250_000)
    before = await _get(client, "/wallet", alice.headers)
    assert (before["chain_address"], before["energy_tokens_kwh"]) == (None, None)
    await mirrored(runtime)
    await fund(runtime, bob.id, 2_000_000)
    await mirrored(runtime)

    wallet = await _get(client, "/wallet", alice.headers)
    assert wallet["chain_address"]
    assert wallet["energy_tokens_kwh"] == 0.0
    network = await _get(client, "/blockchain/network", alice.headers)
    assert network["backend"] == "litesvm"
    assert network["healthy"] is True
    assert network["slot"] > 0
    assert set(network["mints"]) == {"energy", "credit"}

    own = await _get(client, "/blockchain/transactions", alice.headers)
    assert own["total"] == 2  # her wallet's token accounts, then her credits
    assert {t["kind"] for t in own["items"]} == {"account", "mint_credit"}
    everything = await _get(client, "/blockchain/transactions?kind=mint_credit", admin.headers)
    assert everything["total"] >= 1
    assert {t["status"] for t in everything["items"]} == {"confirmed"}
    (mint,) = [t for t in own["items"] if t["kind"] == "mint_credit"]
    detail = await _get(client, f"/blockchain/transactions/{mint['signature']}", alice.headers)
    assert [(i["program"], i["type"], i["amount"]) for i in detail["instructions"]] == [
        ("spl_token", "mint_to_checked", 1_250_000),
        ("memo", "memo", None),
    ]
    # Each transaction without an epoch memo carries its outbox id, so none share a signature.
    assert detail["memo"] == detail["instructions"][1]["memo"]
    assert detail["memo"].startswith("gridex:tx=")
    hidden = await client.get(
        f"{API}/blockchain/transactions/{mint['signature']}", headers=bob.headers
    )
    assert hidden.status_code == 404

    balance = await _get(client, f"/blockchain/balance/{wallet['chain_address']}", bob.headers)
    assert balance == {
        "address": wallet["chain_address"],
        "sol": "0.000000000",
        "credit": "1.250000",
        "energy_kwh": 0.0,
    }
    account = await _get(client, f"/blockchain/accounts/{wallet['chain_address']}", alice.headers)
    assert account == balance
    bad = await client.get(f"{API}/blockchain/balance/{'0' * 40}", headers=alice.headers)
    assert bad.status_code == 422

    report = await _get(client, "/admin/chain/reconciliation", admin.headers)
    assert report["mismatches"] == []
    assert report["in_flight"] == 0
    assert report["accounts"] >= 4
    refused = await client.get(f"{API}/admin/chain/reconciliation", headers=alice.headers)
    assert refused.status_code == 403


def _recomputed(listing: dict[str, Any]) -> str:
    """The trades hash as an outside auditor computes it (the form in docs/chain.md)."""
    document = {
        "epoch": listing["epoch"],
        "trades": [
            {k: t[k] for k in ("buy_order_id", "price_micros", "quantity_wh", "sell_order_id")}
            for t in listing["trades"]
        ],
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def test_anyone_recomputes_the_trades_hash_and_finds_it_on_chain(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    operator = await signed_in(client, runtime, Role.operator)
    seller = await trader(client, runtime, kind="production", funds="0")
    buyers = [await trader(client, runtime, kind="consumption") for _ in range(2)]
    sell = await place(client, seller, side="sell", quantity_kwh=2, limit_price="0.10")
    bought = [
        await place(client, b, side="buy", quantity_kwh=1, limit_price="0.30") for b in buyers
    ]
    path = f"{API}/market/epochs/{utc_iso(NEXT)}/trades?region=north"
    early = await client.get(path)
    assert early.status_code == 409
    assert (await client.get(f"{path[:-5]}south")).status_code == 404

    assert await close_and_clear(clock, runtime, NEXT) == 1
    response = await client.get(path)  # no credentials: the list is public
    assert response.status_code == 200, response.text
    listing = response.json()
    assert listing["region"] == "north"
    assert listing["epoch"] == utc_iso(NEXT)
    assert len(listing["trades"]) == 2
    assert _recomputed(listing) == listing["trades_hash"]
    assert {t["sell_order_id"] for t in listing["trades"]} == {sell["id"]}
    assert {t["buy_order_id"] for t in listing["trades"]} == {b["id"] for b in bought}

    clock.set(NEXT + timedelta(minutes=1, seconds=900))
    assert (await settle(client, operator))["state"] == "settled"
    await mirrored(runtime)
    epoch = await get_epoch(client, operator)
    signature = epoch["clearing"]["chain_signature"]
    assert signature
    admin = await signed_in(client, runtime, Role.admin)
    memo_tx = await _get(client, f"/blockchain/transactions/{signature}", admin.headers)
    expected = f"gridex:epoch={utc_iso(NEXT)}:trades={_recomputed(listing)}"
    assert memo_tx["memo"] == expected
    assert memo_tx["epoch"] == utc_iso(NEXT)
    assert memo_tx["kind"] == "settlement"
    assert [i["memo"] for i in memo_tx["instructions"] if i["type"] == "memo"] == [expected]


@pytest.mark.parametrize("settings_overrides", [{"chain": "off"}])
async def test_chain_off_answers_503_and_wallet_stays_without_chain(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    alice = await signed_in(client, runtime)
    admin = await signed_in(client, runtime, Role.admin)
    for path in (
        "/blockchain/transactions",
        f"/blockchain/balance/{'1' * 32}",
        "/admin/chain/reconciliation",
    ):
        response = await client.get(f"{API}{path}", headers=admin.headers)
        assert response.status_code == 503, path
        error = response.json()["error"]
        assert error["code"] == "SERVICE_UNAVAILABLE"
        assert "GRIDEX_CHAIN=off" in error["message"]
    network = await _get(client, "/blockchain/network", alice.headers)
    assert network == {
        "backend": "off",
        "cluster": None,
        "slot": None,
        "healthy": False,
        "mints": None,
        "platform": None,
    }
    wallet = await _get(client, "/wallet", alice.headers)
    assert (wallet["chain_address"], wallet["energy_tokens_kwh"]) == (None, None)
    assert runtime.jobs.jobs
    assert "chain_mirror" not in {j.name for j in runtime.jobs.jobs}


async def test_health_reports_the_chain(client: httpx.AsyncClient, runtime: Runtime) -> None:
    idle = (await client.get("/health")).json()
    assert idle["checks"]["chain"] == "idle"
    assert idle["status"] == "healthy"
    alice = await signed_in(client, runtime)
    await _get(client, "/blockchain/network", alice.headers)
    assert (await client.get("/health")).json()["checks"]["chain"] == "ok"
    await fund(runtime, alice.id, 1_000)
    await mirrored(runtime)
    metrics = await client.get("/metrics")
    assert "gridex_chain_outbox_depth 0.0" in metrics.text
