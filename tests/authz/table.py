"""The authorisation table: every route with an id in its path, and who besides the owner of
the object it names may reach it. ``tests/authz/test_authz_table.py`` builds the object for
each entry (owned by one prosumer, the victim), then calls the route as another user of every
role and with an API key of every scope (owned by another prosumer): everyone not in
``allowed`` must get 404 or 403 (an object of someone else is answered as if it did not exist:
404), and everyone in ``allowed``
must get something else. A route with a path parameter missing from ``AUTHZ`` fails the test.

To add a route: one line in ``AUTHZ``, keyed "METHOD /api/v1/path/{param}" exactly as the
OpenAPI document writes it, with

* ``owned(subject, allowed)`` for an object that belongs to a user: ``subject`` names a
  factory in ``SUBJECTS`` that creates the victim's object and returns the path values (add one
  when the route names a new kind of object: an ``async def`` taking ``Ctx`` and returning
  ``{"param": "value", ...}``);
* ``gated(allowed)`` for a route that is closed by role, not by owner (region telemetry,
  clearing an epoch): its path gets well-formed stand-in values;
* ``public(reason)`` for a path parameter that names no owned object (an epoch, a region's
  public settings, a chain address): not called, the reason says why.

``allowed`` is a set of roles from ``MEMBERS``/``STAFF``/``ADMIN``/``NOBODY`` below.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from gridex.alerts.models import AlertType, Severity, SubjectKind
from gridex.alerts.service import Condition, raise_alert
from gridex.auth.models import Role
from gridex.chain.models import ChainTransaction, ChainTransactionUser
from gridex.core.runtime import Runtime
from gridex.meters.models import CommandStatus, MeterCommand
from tests.factories import API, Account
from tests.ledger.helpers import fund
from tests.market.helpers import NEXT, TRADER_KW, place
from tests.meters.helpers import NOW, make_meter, reading

REGION = "north"  # the victims' and their meters' region
PERIOD = "2026-02"  # a billed month: it has ended at the tests' NOW

NOBODY: frozenset[Role] = frozenset()
ADMIN = frozenset({Role.admin})
STAFF = frozenset({Role.operator, Role.admin})
MEMBERS = frozenset({Role.prosumer, Role.consumer, Role.investor})


@dataclass(frozen=True)
class Rule:
    subject: str | None  # a key of SUBJECTS; None: stand-in path values
    allowed: frozenset[Role] = NOBODY  # other users' roles that may reach the object
    public: str | None = None  # why the route names no owned object (then it is not called)
    body: dict[str, object] | None = None  # a valid body, so that only access can refuse


def owned(
    subject: str, allowed: frozenset[Role] = NOBODY, body: dict[str, object] | None = None
) -> Rule:
    return Rule(subject, allowed, body=body)


def gated(allowed: frozenset[Role]) -> Rule:
    return Rule(None, allowed)


def public(reason: str) -> Rule:
    return Rule(None, public=reason)


AUTHZ: dict[str, Rule] = {
    # market
    "GET /api/v1/market/orders/{order_id}": owned("order"),
    "PATCH /api/v1/market/orders/{order_id}": owned("order", body={"quantity_kwh": 0.5}),
    "DELETE /api/v1/market/orders/{order_id}": owned("order"),
    "GET /api/v1/market/epochs/{epoch}": public("an epoch is market-wide data"),
    "GET /api/v1/market/epochs/{epoch}/trades": public("a cleared epoch's trades are public"),
    "POST /api/v1/market/epochs/{epoch}/clear": gated(STAFF),
    "POST /api/v1/market/epochs/{epoch}/settle": gated(STAFF),
    "GET /api/v1/market/regions/{region}": public("a region's market settings are public"),
    "PUT /api/v1/market/regions/{region}": gated(ADMIN),
    # me and users
    "DELETE /api/v1/me/api-keys/{key_id}": owned("api_key"),
    "GET /api/v1/users/{user_id}": owned("user", STAFF),
    "PATCH /api/v1/users/{user_id}": owned("user", ADMIN),
    "DELETE /api/v1/users/{user_id}": owned("user", ADMIN),
    "PUT /api/v1/users/{user_id}/role": owned("user", ADMIN),
    "POST /api/v1/users/{user_id}/suspend": owned("user", ADMIN),
    "POST /api/v1/users/{user_id}/activate": owned("user", ADMIN),
    "GET /api/v1/users/{user_id}/activity": owned("user", STAFF),
    "GET /api/v1/departments/{name}": public("a department's summary is public"),
    # meters
    "GET /api/v1/meters/{meter_id}": owned("meter", STAFF),
    "PATCH /api/v1/meters/{meter_id}": owned("meter", STAFF),
    "DELETE /api/v1/meters/{meter_id}": owned("meter", ADMIN),
    "PUT /api/v1/meters/{meter_id}/status": owned("meter", STAFF),
    "POST /api/v1/meters/{meter_id}/assign": owned("meter", ADMIN),
    "POST /api/v1/meters/{meter_id}/unassign": owned("meter", ADMIN),
    "GET /api/v1/meters/{meter_id}/readings": owned("meter", STAFF),
    "POST /api/v1/meters/{meter_id}/readings": owned("meter"),
    "PUT /api/v1/meters/{meter_id}/readings/{timestamp}": owned(
        "reading",
        STAFF,
        body={"energy_consumed_kwh": 0.2, "energy_produced_kwh": 0, "reason": "meter swap"},
    ),
    "GET /api/v1/meters/{meter_id}/latest": owned("reading", STAFF),
    "GET /api/v1/meters/{meter_id}/stats": owned("meter", STAFF),
    "GET /api/v1/meters/{meter_id}/analytics": owned("meter", STAFF),
    "GET /api/v1/meters/{meter_id}/compare": owned("meter", STAFF),
    "POST /api/v1/meters/{meter_id}/commands": owned("meter", STAFF),
    "GET /api/v1/meters/{meter_id}/commands/{command_id}": owned("command", STAFF),
    "GET /api/v1/meters/{meter_id}/export/green-button": owned("meter", STAFF),
    "POST /api/v1/meters/{meter_id}/import/green-button": owned("meter", STAFF),
    "GET /api/v1/telemetry/regions/{region}/stats": gated(STAFF),
    "GET /api/v1/telemetry/regions/{region}/top-consumers": gated(STAFF),
    "GET /api/v1/telemetry/regions/{region}/realtime": gated(STAFF),
    # payments, wallet, installations
    "POST /api/v1/admin/payments/{payment_id}/complete": owned("payment", STAFF),
    "POST /api/v1/admin/payments/{payment_id}/refund": owned("payment", STAFF),
    "POST /api/v1/admin/withdrawals/{withdrawal_id}/approve": owned("withdrawal", STAFF),
    "POST /api/v1/admin/withdrawals/{withdrawal_id}/reject": owned("withdrawal", STAFF),
    "GET /api/v1/installations/{installation_id}": owned("installation", STAFF),
    "PUT /api/v1/installations/{installation_id}": owned("installation", STAFF),
    # chain
    "GET /api/v1/blockchain/transactions/{signature}": owned("chain_transaction", ADMIN),
    "GET /api/v1/blockchain/accounts/{address}": public("balances on chain are public"),
    "GET /api/v1/blockchain/balance/{address}": public("balances on chain are public"),
    # tariffs
    "GET /api/v1/tariffs/current/{region}": public("a region's tariff is public"),
    "DELETE /api/v1/tariffs/overrides/{override_id}": owned("override", ADMIN),
    # billing
    "GET /api/v1/billing/invoices/{invoice_id}": owned("invoice", STAFF),
    "GET /api/v1/billing/invoices/{invoice_id}/pdf": owned("invoice", STAFF),
    "POST /api/v1/billing/invoices/{invoice_id}/pay": owned("invoice"),
    "POST /api/v1/billing/invoices/{invoice_id}/dispute": owned(
        "invoice", body={"reason": "the reading of 10 February is wrong"}
    ),
    "POST /api/v1/billing/cycles/{period}/generate": owned("invoice", STAFF),
    "POST /api/v1/billing/disputes/{dispute_id}/resolve": owned(
        "dispute", STAFF, body={"resolution": "the reading was right"}
    ),
    # alerts (operators see their region's, admins all) and notifications
    "GET /api/v1/alerts/{alert_id}": owned("alert", STAFF),
    "POST /api/v1/alerts/{alert_id}/acknowledge": owned("alert", STAFF),
    "POST /api/v1/alerts/{alert_id}/resolve": owned("alert", STAFF),
    "POST /api/v1/notifications/{notification_id}/read": owned("notification"),
}


# --- the objects ---------------------------------------------------------------------------


@dataclass
class Ctx:
    client: httpx.AsyncClient
    rt: Runtime
    victim: Account  # a prosumer who owns the objects
    admin: Account
    made: dict[str, dict[str, str]] = field(default_factory=dict)

    async def post(self, path: str, account: Account, json: object) -> dict[str, Any]:
        response = await self.client.post(f"{API}{path}", json=json, headers=account.headers)
        assert response.status_code in (200, 201, 202), (path, response.text)
        body: dict[str, Any] = response.json()
        return body


async def _meter(ctx: Ctx) -> dict[str, str]:
    meter = await make_meter(ctx.client, ctx.victim, capacity_kw=TRADER_KW)
    return {"meter_id": meter["id"], "timestamp": "2026-03-04T12:00:00Z"}


async def _reading(ctx: Ctx) -> dict[str, str]:
    values = await _meter(ctx)
    await ctx.post(f"/meters/{values['meter_id']}/readings", ctx.victim, reading(NOW))
    return values


async def _command(ctx: Ctx) -> dict[str, str]:
    values = await _meter(ctx)
    command_id = uuid.uuid4()
    async with ctx.rt.db.sessionmaker() as session:
        # Written directly: creating one through the API needs an MQTT broker.
        session.add(
            MeterCommand(
                id=command_id,
                meter_id=uuid.UUID(values["meter_id"]),
                command="reboot",
                params={},
                status=CommandStatus.pending,
                deadline=NOW,
                created_by_id=ctx.victim.id,
                created_at=NOW,
            )
        )
        await session.commit()
    return {**values, "command_id": str(command_id)}


async def _order(ctx: Ctx) -> dict[str, str]:
    await _meter(ctx)
    order = await place(
        ctx.client, ctx.victim, side="sell", quantity_kwh=1, limit_price="0.5", epoch=NEXT
    )
    return {"order_id": str(order["id"])}


async def _api_key(ctx: Ctx) -> dict[str, str]:
    created = await ctx.post("/me/api-keys", ctx.victim, {"name": "k", "scopes": ["meters:read"]})
    return {"key_id": str(created["id"])}


async def _user(ctx: Ctx) -> dict[str, str]:
    return {"user_id": str(ctx.victim.id)}


async def _payment(ctx: Ctx) -> dict[str, str]:
    intent = await ctx.post("/wallet/topups", ctx.victim, {"amount": "5"})
    return {"payment_id": str(intent["id"])}


async def _withdrawal(ctx: Ctx) -> dict[str, str]:
    await fund(ctx.rt, ctx.victim.id, 5_000_000)
    made = await ctx.post("/wallet/withdrawals", ctx.victim, {"amount": "1", "destination": "x"})
    return {"withdrawal_id": str(made["id"])}


async def _installation(ctx: Ctx) -> dict[str, str]:
    meter = await _meter(ctx)
    body = {
        "meter_id": meter["meter_id"],
        "shares": [{"user_id": str(ctx.victim.id), "percent": 80}],
        "platform_percent": 20,
    }
    made = await ctx.post("/installations", ctx.admin, body)
    return {"installation_id": str(made["id"])}


async def _chain_transaction(ctx: Ctx) -> dict[str, str]:
    signature = uuid.uuid4().hex * 2
    async with ctx.rt.db.sessionmaker() as session:
        tx = ChainTransaction(
            kind="mint_credit",
            status="confirmed",
            instructions=b"",
            signature=signature,
            next_attempt_at=NOW,
            created_at=NOW,
        )
        session.add(tx)
        await session.flush()
        session.add(ChainTransactionUser(transaction_id=tx.id, user_id=ctx.victim.id))
        await session.commit()
    return {"signature": signature}


async def _override(ctx: Ctx) -> dict[str, str]:
    body = {
        "region": REGION,
        "import_price": "0.55",
        "reason": "grid emergency",
        "expires_at": "2026-03-05T12:00:00Z",
    }
    made = await ctx.post("/tariffs/overrides", ctx.admin, body)
    return {"override_id": str(made["id"])}


async def _invoice(ctx: Ctx) -> dict[str, str]:
    """The victim's February invoice: a reading in February, then the month billed."""
    meter = await _meter(ctx)
    february = NOW.replace(month=2, day=10)
    await ctx.post(f"/meters/{meter['meter_id']}/readings", ctx.victim, reading(february, 2.0))
    generate = f"/billing/cycles/{PERIOD}/generate?region={REGION}"
    await ctx.post(generate, ctx.admin, None)
    page = await ctx.client.get(f"{API}/billing/invoices", headers=ctx.victim.headers)
    (invoice,) = page.json()["items"]
    return {"invoice_id": str(invoice["id"]), "period": PERIOD}


async def _dispute(ctx: Ctx) -> dict[str, str]:
    invoice_id = (await _invoice(ctx))["invoice_id"]
    body = {"reason": "the reading of 10 February is wrong"}
    made = await ctx.post(f"/billing/invoices/{invoice_id}/dispute", ctx.victim, body)
    return {"dispute_id": str(made["id"])}


async def _alert(ctx: Ctx) -> dict[str, str]:
    condition = Condition(
        AlertType.low_balance,
        Severity.critical,
        SubjectKind.user,
        str(ctx.victim.id),
        "in debt",
        user_id=ctx.victim.id,
        region=REGION,
    )
    async with ctx.rt.db.sessionmaker() as session:
        alert = await raise_alert(session, ctx.rt, condition)
        await session.commit()
    assert alert is not None
    return {"alert_id": str(alert.id)}


async def _notification(ctx: Ctx) -> dict[str, str]:
    sent = await ctx.post("/notifications/test", ctx.victim, {"channels": ["in_app"]})
    return {"notification_id": str(sent["notification"]["id"])}


SUBJECTS: dict[str, Callable[[Ctx], Awaitable[dict[str, str]]]] = {
    "meter": _meter,
    "reading": _reading,
    "command": _command,
    "order": _order,
    "api_key": _api_key,
    "user": _user,
    "payment": _payment,
    "withdrawal": _withdrawal,
    "installation": _installation,
    "chain_transaction": _chain_transaction,
    "override": _override,
    "invoice": _invoice,
    "dispute": _dispute,
    "alert": _alert,
    "notification": _notification,
}

__all__ = ["AUTHZ", "SUBJECTS", "Ctx", "Rule"]
