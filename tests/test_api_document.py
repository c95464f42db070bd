"""The API document and its explorer, as a front-end developer or a client generator meets them."""

from __future__ import annotations

import re
from collections import Counter

import httpx


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
