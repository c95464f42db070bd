"""What ``Precompiled`` relies on in SQLAlchemy's private compiled-statement parts: bind
processors applied, the statement's own literals sent, required parameters enforced, and one
compiled form per dialect. A SQLAlchemy upgrade must keep these passing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Integer, String, bindparam, literal, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.types import TypeDecorator

from gridex.core.precompiled import Precompiled
from gridex.core.runtime import Runtime


class _Shouted(TypeDecorator[str]):
    """A type whose bind processor is visible in the value stored."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else value.upper()


_STATEMENT = select(
    bindparam("word", type_=_Shouted()).label("word"),
    (literal(40, Integer()) + bindparam("n", type_=Integer())).label("total"),
)


async def _run(prepared: Precompiled, runtime: Runtime, params: dict[str, Any]) -> Any:
    async with runtime.db.engine.connect() as connection:
        return (await prepared.execute(connection, params)).one()


async def test_bind_processors_and_the_statements_own_literals_are_applied(
    runtime: Runtime,
) -> None:
    row = await _run(Precompiled(_STATEMENT), runtime, {"word": "watt", "n": 2})
    assert row.word == "WATT"  # the type's bind processor ran
    assert row.total == 42  # the literal 40 was sent with the caller's parameter


async def test_a_required_parameter_must_be_given(runtime: Runtime) -> None:
    with pytest.raises(KeyError, match="n"):
        await _run(Precompiled(_STATEMENT), runtime, {"word": "watt"})


async def test_one_compiled_form_per_dialect(runtime: Runtime) -> None:
    prepared = Precompiled(_STATEMENT)
    assert (await _run(prepared, runtime, {"word": "a", "n": 1})).total == 41
    # The same object on another backend compiles that backend's form (SQLite's placeholders
    # are "?", PostgreSQL's "$1"), and both keep working.
    other = create_async_engine("sqlite+aiosqlite://")
    try:
        async with other.connect() as connection:
            row = (await prepared.execute(connection, {"word": "b", "n": 3})).one()
    finally:
        await other.dispose()
    assert (row.word, row.total) == ("B", 43)
    assert (await _run(prepared, runtime, {"word": "c", "n": 5})).total == 45
