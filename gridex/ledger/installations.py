"""Installations: revenue shares of a meter (host / investors / platform), and how to split.

Percentages are stored as basis points (4500 = 45%) that sum to exactly 10000 with the
platform's part. ``meter_id`` references a meter (not deleted when the installation is written).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.audit.service import record
from gridex.auth.models import STAFF_ROLES, User
from gridex.auth.service import Principal
from gridex.core.errors import Conflict, NotFound, ValidationFailed
from gridex.core.pagination import Page, PageParams, paginate
from gridex.core.runtime import Runtime
from gridex.ledger.models import Installation, InstallationShare
from gridex.ledger.schemas import InstallationIn, InstallationOut, ShareOut
from gridex.meters.models import Meter

WHOLE_BP = 10_000


@dataclass(frozen=True, slots=True)
class Split:
    """Micros per user and for the platform; they sum to the amount split."""

    users: dict[uuid.UUID, int]
    platform_micros: int


def split_revenue(
    amount_micros: int, shares: Sequence[tuple[uuid.UUID, int]], platform_bp: int
) -> Split:
    """Split ``amount_micros`` by basis points, exactly: each part is rounded down and the
    leftover micros go to the platform, so nothing is created or lost (pure, no I/O)."""
    if sum(bp for _, bp in shares) + platform_bp != WHOLE_BP:
        raise ValueError("shares and platform must sum to 10000 basis points")
    users = {user: amount_micros * bp // WHOLE_BP for user, bp in shares}
    return Split(users, amount_micros - sum(users.values()))


async def _out(session: AsyncSession, installation: Installation) -> InstallationOut:
    shares = await session.scalars(
        select(InstallationShare)
        .where(InstallationShare.installation_id == installation.id)
        .order_by(InstallationShare.share_bp.desc(), InstallationShare.user_id)
    )
    return InstallationOut(
        id=installation.id,
        meter_id=installation.meter_id,
        shares=[ShareOut(user_id=s.user_id, percent=s.share_bp) for s in shares],
        platform_percent=installation.platform_bp,
        created_at=installation.created_at,
        updated_at=installation.updated_at,
    )


def _visible(principal: Principal) -> Select[Installation]:
    query = select(Installation)
    if principal.role not in STAFF_ROLES:
        query = query.where(
            Installation.id.in_(
                select(InstallationShare.installation_id).where(
                    InstallationShare.user_id == principal.user.id
                )
            )
        )
    return query


async def list_installations(
    session: AsyncSession, principal: Principal, page: PageParams, meter_id: uuid.UUID | None
) -> Page[InstallationOut]:
    """Staff see every installation; others those they hold a share of."""
    query = _visible(principal)
    if meter_id is not None:
        query = query.where(Installation.meter_id == meter_id)
    rows, total = await paginate(
        session, query.order_by(Installation.created_at, Installation.id), page
    )
    return Page.build([await _out(session, r) for r in rows], total, page)


async def get_installation(
    session: AsyncSession, principal: Principal, installation_id: uuid.UUID
) -> InstallationOut:
    row = await session.scalar(_visible(principal).where(Installation.id == installation_id))
    if row is None:
        raise NotFound("No such installation")
    return await _out(session, row)


async def _validate(session: AsyncSession, data: InstallationIn) -> None:
    total = data.total_bp()
    if total != WHOLE_BP:
        raise ValidationFailed(
            "shares and platform_percent must sum to 100",
            details={"sum_percent": float(total) / 100},
        )
    meter = await session.scalar(
        select(Meter.id).where(Meter.id == data.meter_id, Meter.deleted_at.is_(None))
    )
    if meter is None:
        raise ValidationFailed("unknown meter", details={"meter_id": str(data.meter_id)})
    ids = [s.user_id for s in data.shares]
    found = set(await session.scalars(select(User.id).where(User.id.in_(ids))))
    missing = [str(i) for i in ids if i not in found]
    if missing:
        raise ValidationFailed("unknown user in shares", details={"user_ids": missing})


async def _meter_taken(
    session: AsyncSession, meter_id: uuid.UUID, other_than: uuid.UUID | None
) -> None:
    query = select(func.count()).where(Installation.meter_id == meter_id)
    if other_than is not None:
        query = query.where(Installation.id != other_than)
    if await session.scalar(query):
        raise Conflict(
            "This meter already has an installation", details={"meter_id": str(meter_id)}
        )


async def _write_shares(
    session: AsyncSession,
    actor: Principal,
    installation: Installation,
    data: InstallationIn,
    action: str,
) -> InstallationOut:
    """Add the shares of ``data`` to a flushed installation (with none left), audit ``action``
    at the installation's ``updated_at``, and return it as written."""
    session.add_all(
        InstallationShare(installation_id=installation.id, user_id=s.user_id, share_bp=s.percent)
        for s in data.shares
    )
    await session.flush()
    record(
        session,
        at=installation.updated_at,
        action=action,
        actor_id=actor.user.id,
        subject_type="installation",
        subject_id=installation.id,
        details=data.model_dump(mode="json"),
    )
    return await _out(session, installation)


async def create_installation(
    session: AsyncSession, rt: Runtime, actor: Principal, data: InstallationIn
) -> InstallationOut:
    await _validate(session, data)
    await _meter_taken(session, data.meter_id, None)
    now = rt.clock.now()
    installation = Installation(
        meter_id=data.meter_id,
        platform_bp=data.platform_percent,
        created_by=actor.user.id,
        created_at=now,
        updated_at=now,
    )
    session.add(installation)
    await session.flush()
    return await _write_shares(session, actor, installation, data, "installation.created")


async def update_installation(
    session: AsyncSession,
    rt: Runtime,
    actor: Principal,
    installation_id: uuid.UUID,
    data: InstallationIn,
) -> InstallationOut:
    installation = await session.get(Installation, installation_id)
    if installation is None:
        raise NotFound("No such installation")
    await _validate(session, data)
    await _meter_taken(session, data.meter_id, installation.id)
    installation.meter_id = data.meter_id
    installation.platform_bp = data.platform_percent
    installation.updated_at = rt.clock.now()
    await session.execute(
        delete(InstallationShare).where(InstallationShare.installation_id == installation.id)
    )
    return await _write_shares(session, actor, installation, data, "installation.updated")


async def shares_of_meter(
    session: AsyncSession, meter_id: uuid.UUID
) -> tuple[list[tuple[uuid.UUID, int]], int] | None:
    """For settlement: ``([(user_id, bp), ...], platform_bp)`` of a meter, or None."""
    installation = await session.scalar(
        select(Installation).where(Installation.meter_id == meter_id)
    )
    if installation is None:
        return None
    rows = await session.execute(
        select(InstallationShare.user_id, InstallationShare.share_bp)
        .where(InstallationShare.installation_id == installation.id)
        .order_by(InstallationShare.user_id)
    )
    return [(u, bp) for u, bp in rows], installation.platform_bp
