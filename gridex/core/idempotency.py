"""``Idempotency-Key`` for money-moving POSTs (IETF httpapi idempotency-key draft semantics).

Use it by decorating a route (under the router decorator) with the decorator that
:func:`idempotent_for` makes; ``gridex.auth.deps.idempotent`` scopes keys per user or API key::

    @router.post("/orders", status_code=201)
    @idempotent
    async def place_order(body: OrderIn, principal: CurrentPrincipal, ...) -> OrderOut: ...

Without the header the route runs as usual. With it, keys are scoped per principal and expire
after ``GRIDEX_IDEMPOTENCY_TTL_HOURS``:

* first request: the key is *claimed* in its own short transaction (so a concurrent retry sees
  it), then the route runs; its response (status and body) is stored by an update **in the
  route's own unit of work**, so the work and the stored response commit together or not at all;
* the same key and body after completion replays the stored status and body
  (``Idempotent-Replayed: true``);
* the same key with another body (or another method or path) is ``422 IDEMPOTENCY_CONFLICT``;
* a retry while the first is still running is ``409 IDEMPOTENCY_IN_PROGRESS``;
* if the route fails, its work rolls back and the claim is released, so a retry runs again;
* a request refused before the route runs (an invalid body, authentication) claims nothing.

Because the response is stored only together with the work, a claim still ``in_progress`` after
``GRIDEX_IDEMPOTENCY_LEASE_SECONDS`` belongs to a request whose work never committed (its process
died): a retry takes it over. The completion update is conditional on the claim's token, so even
then at most one execution can commit.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar, get_type_hints

import anyio
import orjson
from fastapi import Depends, Header, Request, Response
from fastapi.encoders import jsonable_encoder
from sqlalchemy import Index, Integer, LargeBinary, String, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.db import Base, IdMixin
from gridex.core.deps import RuntimeDep, SessionDep
from gridex.core.errors import GridexError, ValidationFailed
from gridex.core.runtime import Runtime

HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, as the draft's sf-string allows


class IdempotencyConflict(GridexError):
    code, status = "IDEMPOTENCY_CONFLICT", 422
    default_message = "This Idempotency-Key was used with another request"


class IdempotencyInProgress(GridexError):
    code, status = "IDEMPOTENCY_IN_PROGRESS", 409
    default_message = "A request with this Idempotency-Key is still being processed"


class IdempotencyKey(IdMixin, Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_principal_key", "principal", "key", unique=True),)

    principal: Mapped[str] = mapped_column(String(64))  # "user:<id>" or "api_key:<id>"
    key: Mapped[str] = mapped_column(String(255))
    # SHA-256 of method, path and the canonical JSON body.
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # in_progress | completed
    claim_token: Mapped[uuid.UUID]
    claimed_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    completed_at: Mapped[datetime | None]


def fingerprint(method: str, path: str, body: bytes) -> str:
    """The request's identity: JSON bodies compare by content, not by key order or spacing."""
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS) if body else b""
    except orjson.JSONDecodeError:
        canonical = body
    return hashlib.sha256(b"%s %s\n%s" % (method.encode(), path.encode(), canonical)).hexdigest()


class Idempotency:
    """What a route knows of its key: a stored response to replay, or a claim to complete."""

    def __init__(
        self,
        *,
        request: Request,
        rt: Runtime | None = None,
        session: AsyncSession | None = None,
        record_id: uuid.UUID | None = None,
        token: uuid.UUID | None = None,
        replay: Response | None = None,
    ) -> None:
        self.request = request
        self.rt = rt
        self.session = session
        self.record_id = record_id
        self.token = token
        self.replay = replay
        self.completed = False

    @property
    def active(self) -> bool:
        return self.record_id is not None and self.replay is None

    async def complete(self, result: object) -> None:
        """Store the route's response in the route's unit of work (commits with the work)."""
        if not self.active:
            return
        assert self.session is not None
        assert self.rt is not None
        if isinstance(result, Response):
            status, body = result.status_code, bytes(result.body)
        else:
            route = self.request.scope.get("route")
            status = getattr(route, "status_code", None) or 200
            body = orjson.dumps(jsonable_encoder(result))
        outcome = await self.session.execute(
            update(IdempotencyKey)
            .where(
                IdempotencyKey.id == self.record_id,
                IdempotencyKey.claim_token == self.token,
                IdempotencyKey.status == "in_progress",
            )
            .values(
                status="completed",
                response_status=status,
                response_body=body,
                completed_at=self.rt.clock.now(),
            )
        )
        if outcome.rowcount != 1:  # type: ignore[attr-defined]
            # Our claim was taken over by a retry after the lease: let the other one win.
            raise IdempotencyInProgress()
        self.completed = True


def _replay(row: IdempotencyKey) -> Response:
    return Response(
        content=row.response_body or b"",
        status_code=row.response_status or 200,
        media_type="application/json",
        headers={"Idempotent-Replayed": "true"},
    )


async def _claim(
    rt: Runtime, principal: str, key: str, digest: str, request: Request
) -> Idempotency:
    now = rt.clock.now()
    ttl = timedelta(hours=rt.settings.idempotency_ttl_hours)
    lease = timedelta(seconds=rt.settings.idempotency_lease_seconds)
    token = uuid.uuid4()
    async with rt.db.sessionmaker() as session:
        for _ in range(3):
            record = IdempotencyKey(
                principal=principal,
                key=key,
                fingerprint=digest,
                status="in_progress",
                claim_token=token,
                claimed_at=now,
                expires_at=now + ttl,
            )
            session.add(record)
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
            else:
                return Idempotency(request=request, record_id=record.id, token=token)
            row = await session.scalar(
                select(IdempotencyKey).where(
                    IdempotencyKey.principal == principal, IdempotencyKey.key == key
                )
            )
            if row is None:
                continue  # released meanwhile: claim again
            if row.expires_at <= now:
                await session.execute(
                    delete(IdempotencyKey).where(
                        IdempotencyKey.id == row.id, IdempotencyKey.expires_at <= now
                    )
                )
                await session.commit()
                continue
            if row.fingerprint != digest:
                raise IdempotencyConflict(details={"key": key})
            if row.status == "completed":
                return Idempotency(request=request, replay=_replay(row))
            if row.claimed_at + lease > now:
                raise IdempotencyInProgress(details={"key": key})
            # An abandoned claim (its work cannot have committed): take it over.
            taken = await session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.id == row.id, IdempotencyKey.claim_token == row.claim_token)
                .values(claim_token=token, claimed_at=now)
            )
            await session.commit()
            if taken.rowcount == 1:  # type: ignore[attr-defined]
                return Idempotency(request=request, record_id=row.id, token=token)
            raise IdempotencyInProgress(details={"key": key})
    raise IdempotencyInProgress(details={"key": key})


async def _abandon(idem: Idempotency, exc: BaseException) -> None:
    """The route failed: end its work's transaction first (SQLite: it may hold the write lock
    the release needs), then free the key so that a retry runs again."""
    assert idem.session is not None
    assert idem.rt is not None
    if isinstance(exc, GridexError) and exc.persist:
        await idem.session.commit()
    else:
        await idem.session.rollback()
    await _release(idem.rt, idem)


async def _release(rt: Runtime, idem: Idempotency) -> None:
    async with rt.db.sessionmaker() as session:
        await session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.id == idem.record_id,
                IdempotencyKey.claim_token == idem.token,
                IdempotencyKey.status == "in_progress",
            )
        )
        await session.commit()


@dataclass(frozen=True, slots=True)
class IdempotencyRequest:
    """What a route needs to honour the request's key (read by :func:`idempotent_for`)."""

    request: Request
    session: AsyncSession
    rt: Runtime
    key: str | None = None


async def idempotency(
    request: Request,
    session: SessionDep,
    rt: RuntimeDep,
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="Any unique value (a UUID): a retry with the same key and body gets the "
            "first answer again instead of doing the work twice; the same key with another body "
            "is 422 IDEMPOTENCY_CONFLICT, and 409 IDEMPOTENCY_IN_PROGRESS while the first runs",
        ),
    ] = None,
) -> IdempotencyRequest:
    """A plain coroutine, not a generator dependency: the key is claimed, and freed again on
    failure, by :func:`idempotent_for` around the route itself. That spares every request the exit
    machinery FastAPI sets up for a dependency that yields, and a request whose body fails
    validation never claims its key. The key belongs to the request's principal, resolved only
    when there is a key (the route's own dependency usually has already). Declaring the header
    here documents it on every route that honours it."""
    return IdempotencyRequest(request, session, rt, key)


ScopeOf = Callable[[Request, AsyncSession, Runtime], Awaitable[str]]
"""Whose keys a request's key is among (``"user:<id>"``, ``"api_key:<id>"``): supplied by the
layer that knows principals, so that this module needs no knowledge of authentication."""


async def _begin(context: IdempotencyRequest, key: str, scope_of: ScopeOf) -> Idempotency:
    """Claim ``key`` for this request, or find the stored response to replay."""
    request, session, rt = context.request, context.session, context.rt
    if not _KEY.match(key):
        raise ValidationFailed(
            f"{HEADER} must be 1 to 255 visible ASCII characters", details={"header": HEADER}
        )
    digest = fingerprint(request.method, request.url.path, await request.body())
    scope = await scope_of(request, session, rt)
    if rt.db.is_sqlite and session.in_transaction():
        # SQLite has one writer: finish the request's (authentication) transaction so that the
        # claim's own transaction cannot wait on it.
        await session.commit()
    idem = await _claim(rt, scope, key, digest, request)
    idem.rt, idem.session = rt, session
    return idem


IdempotencyDep = Annotated[IdempotencyRequest, Depends(idempotency)]

R = TypeVar("R")


def idempotent_for(
    scope_of: ScopeOf,
) -> Callable[[Callable[..., Awaitable[R]]], Callable[..., Awaitable[R]]]:
    """A decorator that makes a POST route honour ``Idempotency-Key`` (see the module
    docstring), with keys kept apart per ``scope_of(request)``."""

    def decorate(endpoint: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        return _idempotent(endpoint, scope_of)

    return decorate


def _idempotent(
    endpoint: Callable[..., Awaitable[R]], scope_of: ScopeOf
) -> Callable[..., Awaitable[R]]:
    hints = get_type_hints(endpoint, include_extras=True)
    signature = inspect.signature(endpoint)
    params = [
        p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
    ]
    params.append(
        inspect.Parameter("idempotency_", inspect.Parameter.KEYWORD_ONLY, annotation=IdempotencyDep)
    )

    @functools.wraps(endpoint)
    async def wrapper(*args: Any, idempotency_: IdempotencyRequest, **kwargs: Any) -> Any:
        key = idempotency_.key
        if key is None:
            return await endpoint(*args, **kwargs)
        idem = await _begin(idempotency_, key, scope_of)
        if idem.replay is not None:
            return idem.replay
        try:
            result = await endpoint(*args, **kwargs)
            await idem.complete(result)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):  # a cancelled request still frees its key
                await _abandon(idem, exc)
            raise
        return result

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=params, return_annotation=hints.get("return", signature.return_annotation)
    )
    return wrapper


async def purge_expired(rt: Runtime) -> int:
    """Delete expired keys; returns how many. Safe to run from any number of workers."""
    async with rt.db.sessionmaker() as session:
        result = await session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.expires_at <= rt.clock.now())
        )
        await session.commit()
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
