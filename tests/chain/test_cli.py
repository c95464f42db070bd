"""``gridex chain verify``: exit 0 when ledger and chain agree, 1 with the difference when not."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from solders.message import Message
from solders.transaction import Transaction
from typer.testing import CliRunner

from gridex.app import build_runtime
from gridex.cli import app
from gridex.core.config import get_settings
from gridex.core.migrate import upgrade
from gridex.models import Base
from tests.chain.helpers import address_of, chain_settings, mirrored
from tests.conftest import TEST_SECRET, make_settings
from tests.factories import make_user
from tests.ledger.helpers import fund

runner = CliRunner()


def _database(tmp_path: Path, backend: str) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'gridex.db'}"
    url = os.environ.get("GRIDEX_TEST_DATABASE_URL")
    if not url:
        pytest.skip("GRIDEX_TEST_DATABASE_URL is not set")
    return url


async def _prepare(url: str, data_dir: Path) -> str:
    """A funded, mirrored user; returns the user id."""
    rt = build_runtime(make_settings(url, **chain_settings(data_dir)))
    try:
        user = await make_user(rt)
        await fund(rt, user.id, 4_000_000)
        await mirrored(rt)
        return str(user.id)
    finally:
        await rt.db.dispose()


async def _plant(url: str, data_dir: Path, user_id: str) -> None:
    """Burn 1 micro of the user's credits on chain, behind the ledger's back."""
    import uuid

    rt = build_runtime(make_settings(url, **chain_settings(data_dir)))
    try:
        chain = await mirrored(rt)
        owner = await address_of(rt, uuid.UUID(user_id))
        assert owner is not None
        blockhash = await chain.backend.blockhash()
        burn = chain.platform.burn_credit(chain.platform.credit_account(owner), 1)
        message = Message.new_with_blockhash([burn], chain.platform.authority, blockhash.hash)
        assert (
            await chain.backend.send(Transaction([chain.keypair], message, blockhash.hash))
        ).confirmed
        await chain.backend.checkpoint()
    finally:
        await rt.db.dispose()


async def _clean(url: str) -> None:
    rt = build_runtime(make_settings(url))
    async with rt.db.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(table.delete())
    await rt.db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_chain_verify_exits_non_zero_on_a_difference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    url = _database(tmp_path, backend)
    upgrade(url)
    for name, value in {
        "GRIDEX_DATABASE_URL": url,
        "GRIDEX_DATA_DIR": str(tmp_path),
        "GRIDEX_SECRET_KEY": TEST_SECRET,
        "GRIDEX_CHAIN": "litesvm",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        user_id = asyncio.run(_prepare(url, tmp_path))
        agreed = runner.invoke(app, ["chain", "verify"])
        assert agreed.exit_code == 0, agreed.output
        assert agreed.stdout.startswith("ok: ")

        asyncio.run(_plant(url, tmp_path, user_id))
        differs = runner.invoke(app, ["chain", "verify"])
        assert differs.exit_code == 1
        assert f"MISMATCH {user_id}: ledger 4000000 chain 3999999 (difference -1)" in differs.output
    finally:
        get_settings.cache_clear()
        asyncio.run(_clean(url))
