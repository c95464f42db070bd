"""The API document and its explorer, as a front-end developer or a client generator meets them."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
from jsonschema import Draft202012Validator

from gridex.core.errors import GridexError


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
    header = next(p for p in webhook["parameters"] if p["in"] == "header")
    assert header["name"] == "Gridex-Signature"
    assert header["required"] is True
    assert "HMAC-SHA256" in header["description"]
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
