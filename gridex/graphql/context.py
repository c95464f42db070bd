"""What every resolver gets: the runtime, one database session for the operation (used by one
resolver at a time: Strawberry runs sibling fields concurrently), and the caller, authenticated
once per operation by the same service as REST."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.fastapi import BaseContext

from gridex.auth import service as auth
from gridex.auth.service import Principal
from gridex.core.errors import AuthenticationRequired, Forbidden
from gridex.core.runtime import Runtime


@dataclass
class Context(BaseContext):
    rt: Runtime
    token: str | None
    # The request came with an X-API-Key (and no access token).
    api_key: bool = False
    _session: AsyncSession | None = None
    _principal: Principal | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        super().__init__()

    @asynccontextmanager
    async def db(self) -> AsyncIterator[AsyncSession]:
        """The operation's session, for one resolver at a time."""
        async with self._lock:
            if self._session is None:
                self._session = self.rt.db.sessionmaker()
            yield self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def principal(self) -> Principal:
        """The caller: a user's access token, as REST checks it (a revoked session, a
        suspended account are refused). API keys are for devices and REST, not GraphQL."""
        if self._principal is None:
            token = self.token or _connection_token(self.connection_params)
            if not token and self.api_key:
                raise refuse_api_keys()
            if not token:
                raise AuthenticationRequired("Send an access token: Authorization: Bearer <token>")
            async with self.db() as session:
                self._principal = await auth.authenticate_bearer(session, self.rt, token)
        return self._principal


def _connection_token(params: Any) -> str | None:
    """A WebSocket client's token from its ``connection_init`` payload (``token`` or an
    ``Authorization: Bearer`` value)."""
    if not isinstance(params, dict):
        return None
    token = params.get("token")
    if isinstance(token, str):
        return token
    header = params.get("Authorization") or params.get("authorization")
    if isinstance(header, str) and header.lower().startswith("bearer "):
        return header[7:]
    return None


def refuse_api_keys() -> Forbidden:
    return Forbidden("GraphQL needs a user's access token, not an API key")
