"""Key custody: the platform keypair file is private, custodial seeds are sealed (never
stored or logged in clear), open only for their own user, and survive a secret rotation."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import select

from gridex.app import build_runtime
from gridex.chain.jobs import mirror
from gridex.chain.keys import KEYPAIR_FILE, KeyUnavailable, KeyVault, Sealed, load_platform_keypair
from gridex.chain.models import ChainRecord, ChainWallet
from gridex.chain.node import chain_of
from gridex.chain.service import reseal_keys
from gridex.core.runtime import Runtime
from tests.chain.helpers import chain_settings
from tests.conftest import TEST_SECRET, make_settings
from tests.factories import make_user
from tests.ledger.helpers import fund


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, object]:
    return chain_settings(tmp_path)


def test_platform_keypair_is_created_private_and_reused(tmp_path: Path) -> None:
    first = load_platform_keypair(tmp_path, None)
    path = tmp_path / KEYPAIR_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_platform_keypair(tmp_path, None).pubkey() == first.pubkey()
    assert load_platform_keypair(tmp_path / "elsewhere", path).pubkey() == first.pubkey()
    with pytest.raises(FileNotFoundError):
        load_platform_keypair(tmp_path, tmp_path / "missing.json")


def test_sealed_seeds_open_for_their_user_and_after_rotation() -> None:
    vault = KeyVault("first-secret-that-is-long-enough-000000")
    alice, bob = uuid.uuid4(), uuid.uuid4()
    keypair, sealed = vault.new_keypair(alice)
    assert vault.open(alice, sealed).pubkey() == keypair.pubkey()
    with pytest.raises(InvalidTag):
        vault.open(bob, sealed)  # a seed moved onto another user's row does not open
    rotated = KeyVault(
        "second-secret-that-is-long-enough-00000", ["first-secret-that-is-long-enough-000000"]
    )
    assert rotated.needs_reseal(sealed)
    assert rotated.open(alice, sealed).pubkey() == keypair.pubkey()
    with pytest.raises(KeyUnavailable):
        KeyVault("unrelated-secret-that-is-long-enough-0000").open(alice, sealed)
    resealed = rotated.seal(alice, bytes(keypair)[:32])
    assert not rotated.needs_reseal(resealed)
    assert rotated.open(alice, Sealed(resealed.data, resealed.key_id)) == keypair


async def test_keys_are_never_stored_or_logged_in_clear(
    runtime: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = await make_user(runtime)
    await fund(runtime, user.id, 1_000_000)
    await mirror(runtime)
    chain = chain_of(runtime)
    async with runtime.db.sessionmaker() as session:
        wallet = await session.get(ChainWallet, user.id)
        records = {r.name: r.value for r in await session.scalars(select(ChainRecord))}
    assert wallet is not None
    keypair = chain.vault.open(user.id, Sealed(wallet.sealed_seed, wallet.key_id))
    seed, platform_secret = bytes(keypair)[:32], bytes(chain.keypair)[:32]
    assert str(keypair.pubkey()) == wallet.address
    assert records["platform"] == str(chain.keypair.pubkey())
    assert seed not in wallet.sealed_seed
    # Nothing secret in the snapshot, the database dump of the outbox, or the logs.
    snapshot = (tmp_path / "gridex-chain.bin").read_bytes()
    captured = capsys.readouterr()
    for secret in (seed, platform_secret):
        assert secret not in snapshot
        assert secret.hex() not in captured.out + captured.err
        assert str(list(secret))[1:-1] not in captured.out + captured.err


async def test_rotation_reseals_every_custodial_key(runtime: Runtime, tmp_path: Path) -> None:
    user = await make_user(runtime)
    await fund(runtime, user.id, 1_000)
    await mirror(runtime)
    new_secret = "a-new-secret-key-that-is-long-enough-for-production"
    rotated = build_runtime(
        make_settings(
            runtime.settings.database_url,
            **chain_settings(tmp_path),
            secret_key=new_secret,
            chain_previous_secret_keys=[TEST_SECRET],
        )
    )
    try:
        assert await reseal_keys(rotated) == 1
        assert await reseal_keys(rotated) == 0
    finally:
        await rotated.db.dispose()
    async with runtime.db.sessionmaker() as session:
        wallet = await session.get(ChainWallet, user.id)
    assert wallet is not None
    fresh = KeyVault(new_secret)
    assert wallet.key_id == fresh.key_id
    opened = fresh.open(user.id, Sealed(wallet.sealed_seed, wallet.key_id))
    assert str(opened.pubkey()) == wallet.address
