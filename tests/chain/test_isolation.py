"""Running programs on LiteSVM leaves the running thread's x87 floating-point state dirty; the VM
has a thread of its own so that SQLite in this process (and threads started later) computes on."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gridex.chain.jobs import mirror
from gridex.core.runtime import Runtime
from tests.chain.helpers import chain_settings
from tests.factories import make_user
from tests.ledger.helpers import fund


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, object]:
    return chain_settings(tmp_path)


def _sqlite_floats() -> tuple[object, object]:
    connection = sqlite3.connect(":memory:")
    try:
        row = connection.execute(
            "SELECT strftime('%f', '2026-03-04 11:00:00.000'), 1e-310 * 1.0"
        ).fetchone()
    finally:
        connection.close()
    return row[0], row[1]


async def test_sqlite_still_computes_after_programs_ran(runtime: Runtime) -> None:
    user = await make_user(runtime)
    await fund(runtime, user.id, 1_000_000)
    assert await mirror(runtime) > 0
    assert _sqlite_floats() == ("00.000", 1e-310)
    assert await asyncio.to_thread(_sqlite_floats) == ("00.000", 1e-310)
