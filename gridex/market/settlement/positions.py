"""The read side of settlement: each member's stored position per settled epoch, with the money
the ledger moved for it (``GET /market/settlements``).

One page is four queries whatever its size: the positions with their epochs, the count, the
page's trades, and the ledger postings on the members' own accounts of those epochs and trades.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.auth.models import Role
from gridex.auth.service import Principal
from gridex.core.errors import Forbidden
from gridex.core.pagination import Page, PageParams
from gridex.ledger.models import JournalEntry, LedgerAccount, Posting, ReferenceType
from gridex.market.models import Epoch, SettlementPosition, Trade
from gridex.market.schemas import MemberSettlementOut


def positions_query(
    *,
    user_id: uuid.UUID | None,
    region: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Select[SettlementPosition, Epoch]:
    query = select(SettlementPosition, Epoch).join(Epoch, Epoch.id == SettlementPosition.epoch_id)
    if user_id is not None:
        query = query.where(SettlementPosition.user_id == user_id)
    if region is not None:
        query = query.where(Epoch.region == region)
    if since is not None:
        query = query.where(Epoch.start >= since)
    if until is not None:
        query = query.where(Epoch.start < until)
    return query.order_by(Epoch.start.desc(), Epoch.region, SettlementPosition.user_id)


async def settlements(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
    *,
    user_id: uuid.UUID | None,
    region: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Page[MemberSettlementOut]:
    """Members see their own settlements (naming another member is 403); operators and admins
    every member's, or one's with ``user_id``."""
    staff = principal.user.role in (Role.admin, Role.operator)
    if not staff:
        if user_id is not None and user_id != principal.user.id:
            raise Forbidden("Only operators see other members' settlements")
        user_id = principal.user.id
    return await list_positions(
        session, page, user_id=user_id, region=region, since=since, until=until
    )


async def list_positions(
    session: AsyncSession,
    page: PageParams,
    *,
    user_id: uuid.UUID | None,
    region: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Page[MemberSettlementOut]:
    """Members' settlements per epoch, latest epoch first (``user_id`` None: every member)."""
    query = positions_query(user_id=user_id, region=region, since=since, until=until)
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = (await session.execute(query.limit(page.per_page).offset(page.offset))).all()
    if not rows:
        return Page.build([], int(total or 0), page)
    epochs = {epoch.id: epoch for _, epoch in rows}
    users = {position.user_id for position, _ in rows}
    moved = await _ledger_of(session, list(epochs.values()), users)
    items = []
    for position, epoch in rows:
        key = (epoch.id, position.user_id)
        own = moved.get(key, _Moved())
        items.append(
            MemberSettlementOut(
                epoch=epoch.start,
                region=epoch.region,
                user_id=position.user_id,
                sold_kwh=position.sold_wh,
                bought_kwh=position.bought_wh,
                delivered_kwh=position.exported_wh,
                consumed_kwh=position.imported_wh,
                shortfall_kwh=max(0, position.sold_wh - position.exported_wh),
                unconsumed_kwh=max(0, position.bought_wh - position.imported_wh),
                proceeds=own.proceeds,
                fee=position.fees_micros,
                revenue_shares=own.shares,
                shortfall_charge=position.charged_micros,
                feed_in_credit=position.credited_micros,
                purchases=own.purchases,
                net=(
                    own.proceeds
                    + own.shares
                    + position.credited_micros
                    - position.charged_micros
                    - own.purchases
                ),
                grid_import_price=epoch.settlement_import_price_micros,
                feed_in_price=epoch.settlement_feed_in_price_micros,
                settled_at=epoch.settled_at,
                entries=sorted(own.entries, key=lambda e: e.bytes),
            )
        )
    return Page.build(items, int(total or 0), page)


class _Moved:
    __slots__ = ("entries", "proceeds", "purchases", "shares")

    def __init__(self) -> None:
        self.proceeds = 0
        self.shares = 0
        self.purchases = 0
        self.entries: set[uuid.UUID] = set()


async def _ledger_of(
    session: AsyncSession, epochs: list[Epoch], users: set[uuid.UUID]
) -> dict[tuple[uuid.UUID, uuid.UUID], _Moved]:
    """Per (epoch, member): the ledger entries of the epoch with a posting for the member (those
    referencing the epoch, and those referencing one of its trades: posted when it cleared or
    settled), what payouts and revenue shares put on the member's own account, and what it
    paid for its purchases."""
    epoch_ids = {str(e.id): e.id for e in epochs}
    trades = {
        t.id: t
        for t in await session.scalars(
            select(Trade).where(
                Trade.epoch_id.in_(epoch_ids.values()),
                or_(Trade.buyer_id.in_(users), Trade.seller_id.in_(users)),
            )
        )
    }
    # A share holder's revenue shares reference trades it is no party to; they are posted at
    # the epoch's settlement (or re-settlement) instant.
    instants = {
        t for e in epochs for t in (e.settled_at, e.settlement_adjusted_at) if t is not None
    }
    rows = (
        await session.execute(
            select(
                JournalEntry.id,
                JournalEntry.type,
                JournalEntry.reference_type,
                JournalEntry.reference_id,
                Posting.user_id,
                Posting.amount_micros,
                LedgerAccount.user_id,
                LedgerAccount.kind,
            )
            .join(Posting, Posting.entry_id == JournalEntry.id)
            .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
            .where(
                Posting.user_id.in_(users),
                or_(
                    (JournalEntry.reference_type == ReferenceType.epoch)
                    & JournalEntry.reference_id.in_(list(epoch_ids)),
                    (JournalEntry.reference_type == ReferenceType.trade)
                    & or_(
                        JournalEntry.reference_id.in_([str(t) for t in trades]),
                        Posting.created_at.in_(instants),
                    ),
                ),
            )
        )
    ).all()
    unknown = {uuid.UUID(r[3]) for r in rows if r[2] == ReferenceType.trade} - set(trades)
    if unknown:
        trades.update(
            (t.id, t)
            for t in await session.scalars(
                select(Trade).where(Trade.id.in_(unknown), Trade.epoch_id.in_(epoch_ids.values()))
            )
        )
    out: dict[tuple[uuid.UUID, uuid.UUID], _Moved] = defaultdict(_Moved)
    for entry_id, kind, ref_type, ref_id, user, amount, owner, account_kind in rows:
        if user is None or ref_id is None:
            continue
        if ref_type == ReferenceType.epoch:
            epoch = epoch_ids[ref_id]
        else:
            trade = trades.get(uuid.UUID(ref_id))
            if trade is None:  # a trade of another epoch posted at the same instant
                continue
            epoch = trade.epoch_id
        moved = out[(epoch, user)]
        moved.entries.add(entry_id)
        if owner == user and account_kind == "available":
            if kind == "settlement_payout":
                moved.proceeds += int(amount)
            elif kind == "revenue_share":
                moved.shares += int(amount)
    for trade in trades.values():
        if trade.buyer_id in users and trade.epoch_id in epoch_ids.values():
            out[(trade.epoch_id, trade.buyer_id)].purchases += trade.value_micros
    return out
