"""The dependency vocabulary of routes: the runtime and one unit of work per request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.errors import GridexError
from gridex.core.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    """The process's runtime. A coroutine on purpose: FastAPI runs a plain ``def`` dependency
    in its thread pool, a thread hand-off on every request for a dictionary lookup."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One unit of work per request: commit when the route returns, roll back when it raises.

    Services only flush. The commit happens before the response is sent, so a client never sees a
    success that was not stored.
    """
    runtime: Runtime = request.app.state.runtime
    async with runtime.db.sessionmaker() as session:
        try:
            yield session
        except GridexError as exc:
            if exc.persist:
                await session.commit()
            else:
                await session.rollback()
            raise
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
