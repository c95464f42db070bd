from __future__ import annotations

from datetime import timedelta

import httpx

from gridex.core.clock import FrozenClock
from gridex.core.runtime import Runtime
from tests.factories import API, Wallet, signed_in


async def _challenge(client: httpx.AsyncClient, wallet: Wallet) -> dict[str, str]:
    response = await client.post(
        f"{API}/auth/wallet/challenge", json={"wallet_address": wallet.address}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_challenge_message_is_sign_in_with_solana(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    wallet = Wallet()
    challenge = await _challenge(client, wallet)
    lines = challenge["message"].split("\n")
    assert lines[0] == "127.0.0.1:8080 wants you to sign in with your Solana account:"
    assert lines[1] == wallet.address
    fields = dict(line.split(": ", 1) for line in lines if ": " in line)
    assert fields["Version"] == "1"
    assert fields["Nonce"] == challenge["nonce"]
    assert fields["URI"] == "http://127.0.0.1:8080"
    assert fields["Chain ID"] == "localnet"
    assert fields["Expiration Time"] == challenge["expires_at"]
    assert fields["Issued At"].endswith("Z")


async def test_sign_in_creates_wallet_user_once(client: httpx.AsyncClient) -> None:
    wallet = Wallet()
    first_ids = []
    for _ in range(2):
        challenge = await _challenge(client, wallet)
        response = await client.post(
            f"{API}/auth/wallet/verify",
            json={
                "wallet_address": wallet.address,
                "signature": wallet.sign(challenge["message"]),
                "message": challenge["message"],
            },
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["user"]["wallet_address"] == wallet.address
        assert body["user"]["email"] is None
        first_ids.append(body["user"]["id"])
        me = await client.get(
            f"{API}/me", headers={"Authorization": f"Bearer {body['access_token']}"}
        )
        assert me.status_code == 200
    assert first_ids[0] == first_ids[1]


async def test_wrong_signature_and_tampered_message(client: httpx.AsyncClient) -> None:
    wallet, thief = Wallet(), Wallet()
    challenge = await _challenge(client, wallet)
    forged = await client.post(
        f"{API}/auth/wallet/verify",
        json={
            "wallet_address": wallet.address,
            "signature": thief.sign(challenge["message"]),
            "message": challenge["message"],
        },
    )
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "INVALID_SIGNATURE"

    tampered = challenge["message"].replace("Version: 1", "Version: 2")
    response = await client.post(
        f"{API}/auth/wallet/verify",
        json={
            "wallet_address": wallet.address,
            "signature": wallet.sign(tampered),
            "message": tampered,
        },
    )
    assert response.status_code == 401

    # The nonce was not spent by the failures: the real signature still works once.
    ok = await client.post(
        f"{API}/auth/wallet/verify",
        json={
            "wallet_address": wallet.address,
            "signature": wallet.sign(challenge["message"]),
            "message": challenge["message"],
        },
    )
    assert ok.status_code == 200


async def test_replayed_and_expired_nonce(client: httpx.AsyncClient, clock: FrozenClock) -> None:
    wallet = Wallet()
    challenge = await _challenge(client, wallet)
    body = {
        "wallet_address": wallet.address,
        "signature": wallet.sign(challenge["message"]),
        "message": challenge["message"],
    }
    assert (await client.post(f"{API}/auth/wallet/verify", json=body)).status_code == 200
    replay = await client.post(f"{API}/auth/wallet/verify", json=body)
    assert replay.status_code == 401
    assert replay.json()["error"]["code"] == "INVALID_SIGNATURE"

    late = await _challenge(client, wallet)
    clock.advance(timedelta(minutes=6))
    expired = await client.post(
        f"{API}/auth/wallet/verify",
        json={
            "wallet_address": wallet.address,
            "signature": wallet.sign(late["message"]),
            "message": late["message"],
        },
    )
    assert expired.status_code == 401


async def test_bad_address_is_a_validation_error(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{API}/auth/wallet/challenge", json={"wallet_address": "1" * 40})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_link_and_unlink_wallet(client: httpx.AsyncClient, runtime: Runtime) -> None:
    account = await signed_in(client, runtime)
    other = await signed_in(client, runtime)
    wallet = Wallet()
    challenge = await _challenge(client, wallet)
    link = {
        "wallet_address": wallet.address,
        "signature": wallet.sign(challenge["message"]),
        "message": challenge["message"],
    }
    linked = await client.post(f"{API}/me/wallet", json=link, headers=account.headers)
    assert linked.status_code == 200
    assert linked.json()["wallet_address"] == wallet.address

    again = await _challenge(client, wallet)
    taken = await client.post(
        f"{API}/me/wallet",
        json={
            "wallet_address": wallet.address,
            "signature": wallet.sign(again["message"]),
            "message": again["message"],
        },
        headers=other.headers,
    )
    assert taken.status_code == 409

    # Signing in with the linked wallet reaches the same account.
    sign_in = await _challenge(client, wallet)
    response = await client.post(
        f"{API}/auth/wallet/verify",
        json={
            "wallet_address": wallet.address,
            "signature": wallet.sign(sign_in["message"]),
            "message": sign_in["message"],
        },
    )
    assert response.json()["user"]["id"] == str(account.id)

    unlinked = await client.delete(f"{API}/me/wallet", headers=account.headers)
    assert unlinked.status_code == 200
    assert unlinked.json()["wallet_address"] is None
    assert (await client.delete(f"{API}/me/wallet", headers=account.headers)).status_code == 404
