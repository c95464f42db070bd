"""A speed trick for the hot path's largest statements: compiled once, run by position.

What it buys: the order-entry statement (``gridex.market.repository.order_context``) saved
0.1-0.2 ms of SQLAlchemy cache-key computation per order, measured with ``bench/orders.py`` on
PostgreSQL (32 clients, one worker), more than the database takes to run it.

What it costs: it reads private parts of SQLAlchemy's compiled statement (``positiontup``,
``binds``, ``_bind_processors``, ``construct_params(_check=False)``). That is why
``pyproject.toml`` pins SQLAlchemy to one exact version, and ``tests/core/test_precompiled.py``
pins the behaviour relied on: bind processors applied, the statement's own literals sent,
required parameters enforced, one compiled form per dialect. A new SQLAlchemy version must pass
that test before the pin moves.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

_REQUIRED = object()  # a parameter the caller must give


class Precompiled:
    """A Core statement compiled once per dialect and executed with ``exec_driver_sql``.

    ``connection.execute(statement)`` finds the compiled form in SQLAlchemy's cache, but first
    computes the statement's cache key by walking its whole tree, on every execution: for the few
    large statements of the hot paths that costs more than the database takes to run them. This
    compiles once, remembers the positional order of the bound parameters, the values of the
    statement's own literals and each parameter's bind processor, and then only builds the
    parameter tuple. Rows come back as the driver returns them (no result processors): use it
    for statements whose columns need none on the dialect at hand.
    """

    __slots__ = ("_forms", "_statement")

    def __init__(self, statement: Any) -> None:
        self._statement = statement
        self._forms: dict[str, tuple[str, tuple[tuple[str, Any, Any], ...]]] = {}

    @property
    def statement(self) -> Any:
        return self._statement

    def _form(self, dialect: Dialect) -> tuple[str, tuple[tuple[str, Any, Any], ...]]:
        form = self._forms.get(dialect.name)
        if form is None:
            compiled = self._statement.compile(dialect=dialect)
            names = compiled.positiontup
            if names is None:
                raise TypeError(f"{dialect.name} does not use positional parameters")
            literals = compiled.construct_params(_check=False)
            processors = compiled._bind_processors
            binds = tuple(
                (
                    name,
                    _REQUIRED if compiled.binds[name].required else literals.get(name),
                    processors.get(name),
                )
                for name in names
            )
            form = self._forms[dialect.name] = (compiled.string, binds)
        return form

    async def execute(self, connection: AsyncConnection, params: dict[str, Any]) -> Any:
        sql, binds = self._form(connection.dialect)
        values = []
        for name, literal, processor in binds:
            value = params[name] if literal is _REQUIRED or name in params else literal
            values.append(value if processor is None or value is None else processor(value))
        return await connection.exec_driver_sql(sql, tuple(values))
