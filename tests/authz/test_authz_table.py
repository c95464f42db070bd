"""Every route with an id in its path, called as other users of each role and with an API key
of each scope, answers 404 or 403 (the table and how to extend it: ``tests/authz/table.py``)."""

from __future__ import annotations

import httpx
import pytest

from gridex.app import create_app
from gridex.auth.models import Role
from gridex.auth.scopes import SCOPES
from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from tests.authz.routes import Operation, operations
from tests.authz.table import AUTHZ, SUBJECTS, Ctx
from tests.factories import signed_in
from tests.market.helpers import MARKET_SETTINGS, start_clock
from tests.meters.helpers import make_key, make_meter

# Members first and staff last: a staff call may change or delete the object.
ROLES = (Role.prosumer, Role.consumer, Role.investor, Role.operator, Role.admin)
DENIED = (403, 404)


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return dict(MARKET_SETTINGS)


def _with_ids() -> list[Operation]:
    return [op for op in operations(create_app()) if op.path_params]


def test_every_route_with_an_id_has_an_entry() -> None:
    missing = [op.key for op in _with_ids() if op.key not in AUTHZ]
    assert missing == [], (
        "These routes take an id in their path but have no entry in tests/authz/table.py; "
        'add one line each to AUTHZ there, e.g. "GET /api/v1/things/{thing_id}": '
        'owned("thing", STAFF) (and a "thing" factory in SUBJECTS), gated(ADMIN) or '
        'public("why"):\n' + "\n".join(missing)
    )
    stale = set(AUTHZ) - {op.key for op in _with_ids()}
    assert stale == set(), f"entries of tests/authz/table.py for routes that do not exist: {stale}"


async def test_other_users_and_keys_are_refused(
    client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
) -> None:
    start_clock(clock)
    others = {role: await signed_in(client, runtime, role) for role in ROLES}
    stranger = others[Role.prosumer]
    # The stranger owns a meter too, so that no refusal comes from having none.
    await make_meter(client, stranger)
    keys = {scope: await make_key(client, stranger, [scope]) for scope in sorted(SCOPES)}
    failures: list[str] = []
    for op in _with_ids():
        rule = AUTHZ[op.key]
        if rule.public is not None:
            continue
        # A victim of its own per route: an admin's call may suspend or delete them.
        ctx = Ctx(client, runtime, await signed_in(client, runtime), others[Role.admin])
        values = await SUBJECTS[rule.subject](ctx) if rule.subject else {}
        url = op.url(values)
        body = rule.body or ({} if op.method in ("POST", "PUT", "PATCH") else None)
        callers = [(f"key {scope}", headers) for scope, headers in keys.items()]
        callers += [(role.value, others[role].headers) for role in ROLES]
        for name, headers in callers:
            response = await client.request(op.method, url, json=body, headers=headers)
            role = Role(name) if name in Role.__members__ else None
            expected_allowed = role is not None and role in rule.allowed
            if response.status_code >= 500:
                failures.append(f"{op.key} as {name}: {response.status_code} {response.text}")
            elif expected_allowed == (response.status_code in DENIED):
                failures.append(
                    f"{op.key} as {name}: {response.status_code} {response.text[:150]} "
                    f"(expected {'access' if expected_allowed else '403/404'})"
                )
    assert failures == [], "\n".join(failures)
