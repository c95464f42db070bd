from __future__ import annotations

import httpx

from gridex.core.runtime import Runtime
from tests.factories import API, signed_in


async def test_patch_me_updates_profile_but_never_role(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await signed_in(client, runtime)
    updated = await client.patch(
        f"{API}/me",
        json={"first_name": "Ana", "phone": "+44 20 7946 0000", "metadata": {"roof": "south"}},
        headers=account.headers,
    )
    assert updated.status_code == 200
    assert updated.json()["first_name"] == "Ana"
    assert updated.json()["metadata"] == {"roof": "south"}

    for field, value in (("role", "admin"), ("status", "active"), ("email", "x@example.org")):
        response = await client.patch(f"{API}/me", json={field: value}, headers=account.headers)
        assert response.status_code == 422, field
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    me = await client.get(f"{API}/me", headers=account.headers)
    assert me.json()["role"] == "prosumer"


async def test_preferences_round_trip_and_validation(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await signed_in(client, runtime)
    defaults = await client.get(f"{API}/me/preferences", headers=account.headers)
    assert defaults.json() == {"notifications": {}, "locale": "en", "timezone": "UTC"}
    prefs = {
        "notifications": {"trade_executed": ["email", "in_app"], "device_offline": ["email"]},
        "locale": "en-GB",
        "timezone": "Europe/London",
    }
    saved = await client.put(f"{API}/me/preferences", json=prefs, headers=account.headers)
    assert saved.status_code == 200
    again = await client.get(f"{API}/me/preferences", headers=account.headers)
    assert again.json() == prefs
    bad = await client.put(
        f"{API}/me/preferences",
        json={**prefs, "timezone": "Mars/Olympus"},
        headers=account.headers,
    )
    assert bad.status_code == 422
    bad_channel = await client.put(
        f"{API}/me/preferences",
        json={**prefs, "notifications": {"trade_executed": ["pigeon"]}},
        headers=account.headers,
    )
    assert bad_channel.status_code == 422
    unchanged = await client.get(f"{API}/me/preferences", headers=account.headers)
    assert unchanged.json() == prefs


async def test_activity_lists_own_events_only(client: httpx.AsyncClient, runtime: Runtime) -> None:
    account = await signed_in(client, runtime)
    other = await signed_in(client, runtime)
    await client.patch(f"{API}/me", json={"first_name": "Zed"}, headers=account.headers)
    activity = await client.get(f"{API}/me/activity", headers=account.headers)
    assert activity.status_code == 200
    actions = [item["action"] for item in activity.json()["items"]]
    assert "auth.login" in actions
    assert "user.profile_updated" in actions
    assert all(item["actor_id"] in (str(account.id), None) for item in activity.json()["items"])
    other_actions = await client.get(f"{API}/me/activity", headers=other.headers)
    assert "user.profile_updated" not in [i["action"] for i in other_actions.json()["items"]]
    entry = activity.json()["items"][0]
    assert entry["request_id"]
