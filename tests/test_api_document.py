"""The API document and its explorer, as a front-end developer or a client generator meets them."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from jsonschema import Draft202012Validator

from gridex.app import create_app
from gridex.auth.models import Role
from gridex.core.errors import GridexError
from gridex.core.runtime import Runtime
from tests.factories import API, signed_in


async def test_the_explorer_pages_load_everything_from_gridex_itself(
    client: httpx.AsyncClient,
) -> None:
    for page in ("/docs", "/redoc"):
        response = await client.get(page)
        assert response.status_code == 200
        html = response.text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets, page
        for asset in assets:
            assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
            fetched = await client.get(asset)
            assert fetched.status_code == 200, asset
            assert len(fetched.content) > 1000, asset
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "https:" not in csp


async def test_operations_have_stable_unique_ids_and_timestamps_say_date_time(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    assert "login" in ids
    assert "place_order" in ids
    assert not any(i.endswith(("_get", "_post", "_put", "_patch", "_delete")) for i in ids)
    user_out = spec["components"]["schemas"]["UserOut"]["properties"]
    assert user_out["created_at"]["format"] == "date-time"


async def test_errors_are_documented_in_their_real_shape(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    error = spec["components"]["schemas"]["ErrorOut"]
    assert set(error["properties"]) == {"error", "request_id"}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if not path.startswith("/api/"):
                continue
            for status in ("401", "404", "422", "429"):
                schema = op["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path)


# --- quality rules every operation is held to, including routes added later ------------------

_CODE = re.compile(r"`([A-Z][A-Z0-9_]+)`")
# Names of timestamp fields and parameters (`expires_in` is seconds, not a time).
_TIMESTAMP = re.compile(
    r"(_at|_since|_until|^timestamp|^start|^end|^from|^to|^since|^until|^after|^before"
    r"|^epoch|gate_closure)$"
)


def _known_codes() -> set[str]:
    def subclasses(cls: type[GridexError]) -> Iterator[type[GridexError]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    codes = {GridexError.code} | {cls.code for cls in subclasses(GridexError)}
    # Per-reading refusals of ingest (in its 200 body) and framework answers.
    return codes | {"READING_CONFLICT", "METHOD_NOT_ALLOWED"}


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


async def _spec(client: httpx.AsyncClient) -> dict[str, Any]:
    spec: dict[str, Any] = (await client.get("/openapi.json")).json()
    return spec


async def test_every_operation_is_described_and_each_error_names_its_codes(
    client: httpx.AsyncClient,
) -> None:
    spec = await _spec(client)
    known = _known_codes()
    for method, path, op in _operations(spec):
        where = f"{method} {path}"
        assert (op.get("description") or "").strip(), f"{where} has no description (docstring)"
        for status, response in op["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            media = response["content"]["application/json"]
            assert media["schema"] == {"$ref": "#/components/schemas/ErrorOut"}, (where, status)
            codes = _CODE.findall(response["description"])
            assert codes, f"{where} {status} names no error code"
            assert set(codes) <= known, (where, status, set(codes) - known)
            for name, example in media.get("examples", {}).items():
                assert example["value"]["error"]["code"] == name, (where, status)


async def test_each_route_documents_the_domain_codes_it_answers(
    client: httpx.AsyncClient,
) -> None:
    spec = await _spec(client)
    by_id = {op["operationId"]: op for _, _, op in _operations(spec)}

    def codes(operation: str, status: str) -> set[str]:
        return set(_CODE.findall(by_id[operation]["responses"][status]["description"]))

    assert {"GATE_CLOSED", "INSUFFICIENT_FUNDS", "NO_ELIGIBLE_METER", "SELF_TRADE"} <= codes(
        "place_order", "409"
    )
    assert {"VALIDATION_ERROR", "PRICE_OUT_OF_BOUNDS", "EXCEEDS_CAPACITY"} <= codes(
        "place_order", "422"
    )
    assert {"IDEMPOTENCY_IN_PROGRESS"} <= codes("place_order", "409")
    assert codes("login", "401") == {"INVALID_CREDENTIALS"}
    assert codes("login", "423") == {"ACCOUNT_LOCKED"}
    assert {"EMAIL_NOT_VERIFIED", "ACCOUNT_SUSPENDED"} <= codes("login", "403")
    assert codes("request_withdrawal", "409") >= {"INSUFFICIENT_FUNDS"}
    assert codes("webhook", "400") == {"INVALID_SIGNATURE"}
    assert codes("register_meter", "409") == {"CONFLICT"}
    assert "UNKNOWN_REGION" in codes("register", "422")


# Operations that answer only the codes every route may (401, 403 for an API key where a user's
# token is needed, 422 VALIDATION_ERROR for a malformed request, 429, 500, 503), with why.
GENERIC_ONLY = {
    "recent_trades": "the public tape of any region, empty for one without trades",
    "list_regions": "every region there is",
    "validate": "the credential's own claims",
    "logout": "ends the caller's own session",
    "logout_all": "ends the caller's own sessions",
    "get_me": "the caller's own account",
    "get_preferences": "the caller's own preferences",
    "put_preferences": "the body's schema is the only rule",
    "my_activity": "the caller's own audit trail",
    "list_api_keys": "the caller's own keys",
    "get_wallet": "the caller's own balances",
    "list_transactions": "the caller's own entries, filtered",
    "list_topups": "the caller's own top-ups",
    "list_withdrawals": "the caller's own withdrawals",
    "list_installations": "the installations the caller may see, filtered",
    "get_network": "says `backend: off` rather than refusing when the chain is off",
    "list_alerts": "the alerts the caller may see, filtered",
    "alerts_summary": "the caller's own view of unresolved alerts",
    "list_notifications": "the caller's own notifications",
    "unread_notifications_count": "the caller's own count",
    "read_all_notifications": "marks the caller's own notifications",
    "get_notification_preferences": "the caller's own preferences",
    "put_notification_preferences": "the body's schema is the only rule",
    "send_test_notification": "to the caller, on the channels the body's schema allows",
    "list_invoices": "the invoices the caller may see, filtered",
    "list_invoice_payments": "the caller's own payments",
    "health": "answers its own body, also with 503",
    "live": "always 200 while the process serves",
}


def _coded(op: dict[str, Any], status: str) -> set[str]:
    """The codes a route documents itself under ``status`` (``raises``: one example each)."""
    response = op["responses"].get(status, {})
    return set(response.get("content", {}).get("application/json", {}).get("examples", {}))


def _checks_role_or_scope(dependant: Dependant) -> bool:
    """Whether a route's dependencies include ``require_role`` or ``require_scope``."""
    for dependency in dependant.dependencies:
        name = getattr(dependency.call, "__qualname__", "")
        if name.startswith(("require_role.", "require_scope.")):
            return True
        if _checks_role_or_scope(dependency):
            return True
    return False


async def test_every_route_names_the_codes_it_answers(client: httpx.AsyncClient) -> None:
    """A route added without its codes fails here with what to add. Read its service path for
    the ``GridexError`` subclasses it raises and list them with ``responses=raises(...)``."""
    spec = await _spec(client)
    missing: list[str] = []
    for method, path, op in _operations(spec):
        where, operation = f"{method} {path}", op["operationId"]
        own = set().union(*(_coded(op, s) for s in op["responses"] if s.startswith(("4", "5"))))
        if operation in GENERIC_ONLY:
            assert not own, f"{where} documents {own}: take {operation!r} out of GENERIC_ONLY"
        elif not own:
            missing.append(
                f"{where} names none of its own error codes: give it responses=raises(...) with "
                "the errors its service raises (NotFound, Forbidden, Conflict, ...), or, if it "
                f"answers only the codes every route may, add {operation!r} to GENERIC_ONLY"
            )
        for name in re.findall(r"\{(\w+_id)\}", path):
            if "NOT_FOUND" not in _coded(op, "404"):
                missing.append(
                    f"{where} takes {{{name}}} but does not document 404 NOT_FOUND: add NotFound "
                    "to its responses=raises(...)"
                )
    assert missing == []
    assert set(GENERIC_ONLY) <= {op["operationId"] for _, _, op in _operations(spec)}


async def test_routes_for_some_roles_or_scopes_document_403(runtime: Runtime) -> None:
    app = create_app(runtime=runtime)
    by_id = {op["operationId"]: (m, p, op) for m, p, op in _operations(app.openapi())}
    checked: list[str] = []
    missing: list[str] = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not _checks_role_or_scope(route.dependant):
            continue
        method, path, op = by_id[route.name]
        checked.append(route.name)
        if "FORBIDDEN" not in _coded(op, "403"):
            missing.append(
                f"{method} {path} lets only some roles or API key scopes through but does not "
                "document 403 FORBIDDEN: add Forbidden to its responses=raises(...)"
            )
    assert missing == []
    assert {"audit_logs", "put_region", "list_users"} <= set(checked)


@pytest.mark.parametrize("settings_overrides", [{"chain": "off"}])
async def test_refusals_met_in_use_are_the_documented_ones(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Real refusals of reads and admin views, each found in its operation's document."""
    spec = await _spec(client)
    by_id = {op["operationId"]: op for _, _, op in _operations(spec)}
    user = await signed_in(client, runtime, Role.consumer)
    nobody = "00000000-0000-4000-8000-000000000000"
    cases = [
        ("get_order", f"/market/orders/{nobody}", 404, "NOT_FOUND"),
        ("get_meter", f"/meters/{nobody}", 404, "NOT_FOUND"),
        ("get_installation", f"/installations/{nobody}", 404, "NOT_FOUND"),
        ("revoke_api_key", f"/me/api-keys/{nobody}", 404, "NOT_FOUND"),
        ("get_epoch_trades", "/market/epochs/2026-01-01T00:00:00Z/trades?region=north", 404, None),
        ("get_epoch", "/market/epochs/2026-01-01T00:07:00Z", 422, "VALIDATION_ERROR"),
        ("get_region", "/market/regions/nowhere", 404, "NOT_FOUND"),
        ("audit_logs", "/admin/audit-logs", 403, "FORBIDDEN"),
        ("list_users", "/users", 403, "FORBIDDEN"),
        ("trial_balance", "/admin/ledger/trial-balance", 403, "FORBIDDEN"),
        ("list_chain_transactions", "/blockchain/transactions", 503, "SERVICE_UNAVAILABLE"),
        ("get_balance", f"/blockchain/balance/{'1' * 32}", 503, "SERVICE_UNAVAILABLE"),
    ]
    for operation, path, status, code in cases:
        method = "DELETE" if operation == "revoke_api_key" else "GET"
        response = await client.request(method, f"{API}{path}", headers=user.headers)
        assert response.status_code == status, (operation, response.text)
        answered = response.json()["error"]["code"]
        assert answered == (code or "NOT_FOUND"), (operation, response.text)
        assert answered in _coded(by_id[operation], str(status)), (operation, status, answered)


async def test_every_timestamp_says_date_time(client: httpx.AsyncClient) -> None:
    spec = await _spec(client)
    untyped: list[str] = []

    def check(name: str, schema: dict[str, Any], where: str) -> None:
        text = json.dumps(schema)
        # A clock time of day (a tariff band's `start`) says so: `HH:MM` in its description.
        clock_time = "HH:MM" in str(schema.get("description", ""))
        time_like = _TIMESTAMP.search(name) and '"string"' in text
        if time_like and '"date' not in text and not clock_time:
            untyped.append(f"{where}.{name}")

    for name, schema in spec["components"]["schemas"].items():
        for prop, prop_schema in schema.get("properties", {}).items():
            check(prop, prop_schema, name)
    for method, path, op in _operations(spec):
        for parameter in op.get("parameters", []):
            check(parameter["name"], parameter["schema"], f"{method} {path}")
    # `to` of the email outbox is a recipient address, not a time.
    assert untyped == ["GET /api/v1/admin/outbox.to"]


async def test_every_reference_resolves_and_every_example_is_valid(
    client: httpx.AsyncClient,
) -> None:
    spec = await _spec(client)
    text = json.dumps(spec)
    assert "#/$defs/" not in text
    for ref in set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text)):
        assert ref in spec["components"]["schemas"], ref

    checked = 0
    for method, path, op in _operations(spec):
        media_types = [*op.get("requestBody", {}).get("content", {}).values()]
        media_types += [m for r in op["responses"].values() for m in r.get("content", {}).values()]
        for media in media_types:
            if "schema" not in media:
                continue
            validator = Draft202012Validator({**media["schema"], "components": spec["components"]})
            for name, example in media.get("examples", {}).items():
                errors = [e.message for e in validator.iter_errors(example["value"])]
                assert errors == [], (method, path, name)
                checked += 1
    assert checked > 20

    body = spec["paths"]["/api/v1/meters/{meter_id}/readings"]["post"]["requestBody"]
    assert "oneOf" in body["content"]["application/json"]["schema"]
    assert "ReadingIn" in spec["components"]["schemas"]
    assert "BatchReadingIn" in spec["components"]["schemas"]


async def test_files_and_the_signed_webhook_are_documented(client: httpx.AsyncClient) -> None:
    spec = await _spec(client)
    paths = spec["paths"]
    export = paths["/api/v1/meters/{meter_id}/export/green-button"]["get"]
    assert "application/atom+xml" in export["responses"]["200"]["content"]
    imported = paths["/api/v1/meters/{meter_id}/import/green-button"]["post"]
    assert list(imported["requestBody"]["content"]) == ["application/atom+xml"]
    users = paths["/api/v1/users/export.csv"]["get"]
    assert "text/csv" in users["responses"]["200"]["content"]

    webhook = paths["/api/v1/payments/webhook"]["post"]
    # The built-in provider signs with Gridex-Signature, Stripe with Stripe-Signature: one of the
    # two is required, so neither is on its own.
    headers = {p["name"]: p for p in webhook["parameters"] if p["in"] == "header"}
    assert set(headers) == {"Gridex-Signature", "Stripe-Signature"}
    assert "HMAC-SHA256" in headers["Gridex-Signature"]["description"]
    assert (
        "One of this and `Stripe-Signature` is required"
        in headers["Gridex-Signature"]["description"]
    )
    event = webhook["requestBody"]["content"]["application/json"]["schema"]
    assert {"id", "type", "data"} <= set(event["properties"])


async def test_routes_that_honour_idempotency_keys_document_the_header(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    honouring = {
        (path, method)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if any(
            p["in"] == "header" and p["name"] == "Idempotency-Key"
            for p in operation.get("parameters", [])
        )
    }
    assert ("/api/v1/market/orders", "post") in honouring
    assert ("/api/v1/wallet/topups", "post") in honouring
    assert ("/api/v1/admin/withdrawals/{withdrawal_id}/approve", "post") in honouring
    assert ("/api/v1/market/orders", "get") not in honouring
