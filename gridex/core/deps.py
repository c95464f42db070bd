"""The dependency vocabulary of routes: the runtime and one unit of work per request."""

from __future__ import annotations

from contextlib import AsyncExitStack
from types import TracebackType
from typing import Annotated

from anyio import CancelScope
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


# Where FastAPI keeps the exit stack it closes when the endpoint returns, before the response is
# sent (the stack of function-scoped dependencies).
_FUNCTION_STACK = "fastapi_function_astack"


class _UnitOfWork:
    """Ends a request's session when FastAPI closes the function's exit stack: commit when the
    route returned, roll back when it raised (commit when a ``GridexError`` says ``persist``)."""

    __slots__ = ("session",)

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def __call__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        session = self.session
        # Shielded as FastAPI shields a dependency's exit: a client that disconnects must not
        # leave the transaction half-ended.
        with CancelScope(shield=True):
            try:
                if exc is None or (isinstance(exc, GridexError) and exc.persist):
                    await session.commit()
                else:
                    await session.rollback()
            finally:
                await session.close()
        return False  # the route's exception, if any, propagates


async def get_session(request: Request) -> AsyncSession:
    """One unit of work per request: commit when the route returns, roll back when it raises.

    Services only flush. The commit happens when FastAPI closes the function's exit stack, before
    the response is sent, so a client never sees a success that was not stored. A plain coroutine
    that registers its exit there, not a generator dependency: that spares every request the
    generator, context-manager and cancel-scope wrapping FastAPI puts around a dependency that
    yields.
    """
    runtime: Runtime = request.app.state.runtime
    session = runtime.db.sessionmaker()
    stack: AsyncExitStack | None = request.scope.get(_FUNCTION_STACK)
    if stack is None:  # not inside a FastAPI route: nothing would end the session
        await session.close()
        raise RuntimeError("get_session is a route dependency")
    stack.push_async_exit(_UnitOfWork(session))
    return session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
