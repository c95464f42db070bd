"""The ledger's service API, used by every module that moves money.

Every function runs inside the caller's unit of work (it only executes and flushes; the caller
commits), so an order and its reservation, or a trade and its capture, commit together or not at
all. All amounts are positive integer micros; the direction is in the function's name.

Every posting, a single reservation or an epoch's settlement, takes one path: the entries are
planned (``gridex.ledger.entries``: balanced legs, the accounts in lock order, the least balance
each guarded account needs) and the plan is written all or nothing
(``gridex.ledger.repository.write_plan``). On PostgreSQL that is one statement whatever the number
of entries; SQLite takes three. Two requests racing for the last funds cannot both win on either
backend: PostgreSQL checks the balances under row locks taken in account-id order, SQLite under
its single writer lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import cast

from sqlalchemy.ext.asyncio import AsyncSession

from gridex.auth.models import User
from gridex.core.errors import ValidationFailed
from gridex.core.pagination import Page, PageParams, paginate
from gridex.core.pubsub import emit
from gridex.core.runtime import Runtime
from gridex.core.units import micros_to_money, wh_to_kwh
from gridex.ledger import repository
from gridex.ledger.entries import (
    DEPOSITS,
    ESCROW,
    FEES,
    GRID,
    PAYOUTS,
    AccountRef,
    Leg,
    NewEntry,
    PostedEntry,
    PostedLeg,
    Reference,
    Transfer,
    check_balanced,
    plan_postings,
    platform_account,
    user_account,
    with_debt_allowed,
)
from gridex.ledger.errors import OutstandingDebt
from gridex.ledger.models import PLATFORM_KINDS, USER_KINDS, AccountKind, EntryType
from gridex.ledger.schemas import (
    BalancesOut,
    MovementOut,
    PostingOut,
    StatementOut,
    TransactionOut,
    TrialBalanceAccountOut,
    TrialBalanceOut,
    WalletOut,
)

# The posting vocabulary other modules use through this module.
__all__ = [
    "DEPOSITS",
    "ESCROW",
    "FEES",
    "GRID",
    "PAYOUTS",
    "AccountRef",
    "Leg",
    "NewEntry",
    "PostedEntry",
    "PostedLeg",
    "Reference",
    "Transfer",
    "WalletBalances",
    "balance_of",
    "capture",
    "charge",
    "check_balanced",
    "credit",
    "debit",
    "ensure_no_debt",
    "has_debt",
    "platform_account",
    "post_entries",
    "post_entry",
    "release",
    "reserve",
    "statements",
    "transactions",
    "transfer",
    "transfer_many",
    "trial_balance",
    "user_account",
    "wallet",
    "wallet_balances",
]

# Tries of one posting: the first; one after creating the accounts it uses for the first time;
# one more in case a concurrent transaction created one of them between the two.
_ATTEMPTS = 3


async def post_entries(
    session: AsyncSession, entries: Sequence[NewEntry], *, at: datetime
) -> list[PostedEntry]:
    """Record balanced entries at ``at``, all or nothing: the one path of every money move.

    The entries apply in the order given: a debit of a guarded account must leave it at zero or
    above at that point (the earlier entries count), unless the leg has ``allow_debt`` (a user's
    ``available`` only). When one would not, ``InsufficientFunds`` names the first such leg
    (``account``, ``user_id``, ``balance`` before it, ``required``, ``entry_index``) and nothing
    has changed: the caller may catch it and go on. An unbalanced entry raises ``UnbalancedEntry``
    before anything is written. Returns one ``PostedEntry`` per entry, in order, with the balance
    after each posting. Accounts used for the first time are created, holding no lock.
    """
    if not entries:
        return []
    plan = plan_postings(entries)
    for _ in range(_ATTEMPTS):
        written, balances = await repository.write_plan(session, plan, at)
        if written:
            return plan.posted(balances, at)
        refusal = plan.refusal(balances)
        if refusal is not None:
            raise refusal
        await repository.create_accounts(session, plan.missing(balances), at)
    raise RuntimeError("a ledger posting could not lock its accounts")  # pragma: no cover


async def post_entry(
    session: AsyncSession,
    *,
    at: datetime,
    type: EntryType | str,
    legs: Sequence[Leg],
    description: str,
    reference: Reference | None = None,
    allow_debt: bool = False,
) -> PostedEntry:
    """Record one balanced journal entry: :func:`post_entries` of one.

    ``allow_debt`` lets every ``available`` leg of the entry go below zero and is only for
    settlement charges.
    """
    if allow_debt:
        legs = with_debt_allowed(legs)
    (posted,) = await post_entries(session, [NewEntry(type, legs, description, reference)], at=at)
    return posted


async def transfer_many(
    session: AsyncSession, transfers: Sequence[Transfer], *, at: datetime
) -> list[PostedEntry]:
    """:func:`post_entries` of two-posting entries (``source`` -> ``destination``)."""
    return await post_entries(session, [t.entry() for t in transfers], at=at)


async def _post_transfer(session: AsyncSession, move: Transfer, at: datetime) -> PostedEntry:
    (posted,) = await post_entries(session, [move.entry()], at=at)
    return posted


async def transfer(
    session: AsyncSession,
    *,
    at: datetime,
    source: AccountRef,
    destination: AccountRef,
    amount_micros: int,
    type: EntryType | str = EntryType.transfer,
    description: str = "",
    reference: Reference | None = None,
    on_behalf_of: uuid.UUID | None = None,
    allow_debt: bool = False,
) -> PostedEntry:
    """Move ``amount_micros`` (positive) from ``source`` to ``destination``; ``allow_debt`` lets
    the source, a user's ``available``, go below zero."""
    move = Transfer(
        source, destination, amount_micros, type, description, reference, on_behalf_of, allow_debt
    )
    return await _post_transfer(session, move, at)


async def reserve(
    session: AsyncSession,
    *,
    at: datetime,
    user_id: uuid.UUID,
    amount_micros: int,
    reference: Reference | None = None,
    description: str = "Reservation",
    type: EntryType | str = EntryType.order_reserve,
) -> PostedEntry:
    """Hold money for an order or a withdrawal: ``available`` -> ``reserved``.

    ``InsufficientFunds`` when ``available`` is below the amount (always so while in debt).
    """
    held = user_account(user_id, AccountKind.reserved)
    move = Transfer(user_account(user_id), held, amount_micros, type, description, reference)
    return await _post_transfer(session, move, at)


async def release(
    session: AsyncSession,
    *,
    at: datetime,
    user_id: uuid.UUID,
    amount_micros: int,
    reference: Reference | None = None,
    description: str = "Release",
    type: EntryType | str = EntryType.order_release,
) -> PostedEntry:
    """Give back a hold: ``reserved`` -> ``available``."""
    held = user_account(user_id, AccountKind.reserved)
    move = Transfer(held, user_account(user_id), amount_micros, type, description, reference)
    return await _post_transfer(session, move, at)


async def capture(
    session: AsyncSession,
    *,
    at: datetime,
    user_id: uuid.UUID,
    amount_micros: int,
    reference: Reference | None = None,
    description: str = "Trade captured into escrow",
    destination: AccountRef = ESCROW,
    type: EntryType | str = EntryType.trade_capture,
) -> PostedEntry:
    """Take held money: ``reserved`` -> ``destination`` (escrow by default), tagged with the
    user so that it counts in their ``escrow_pending`` until settlement moves it on."""
    held = user_account(user_id, AccountKind.reserved)
    move = Transfer(
        held, destination, amount_micros, type, description, reference, on_behalf_of=user_id
    )
    return await _post_transfer(session, move, at)


async def credit(
    session: AsyncSession,
    *,
    at: datetime,
    user_id: uuid.UUID,
    amount_micros: int,
    source: AccountRef,
    type: EntryType | str,
    description: str,
    reference: Reference | None = None,
    on_behalf_of: uuid.UUID | None = None,
) -> PostedEntry:
    """Pay a user: platform ``source`` -> the user's ``available``."""
    move = Transfer(
        source, user_account(user_id), amount_micros, type, description, reference, on_behalf_of
    )
    return await _post_transfer(session, move, at)


async def debit(
    session: AsyncSession,
    *,
    at: datetime,
    user_id: uuid.UUID,
    amount_micros: int,
    destination: AccountRef,
    type: EntryType | str,
    description: str,
    reference: Reference | None = None,
) -> PostedEntry:
    """Take from a user's ``available`` (never below zero) to platform ``destination``."""
    move = Transfer(user_account(user_id), destination, amount_micros, type, description, reference)
    return await _post_transfer(session, move, at)


async def charge(
    session: AsyncSession,
    *,
    at: datetime,
    user_id: uuid.UUID,
    amount_micros: int,
    destination: AccountRef = GRID,
    description: str,
    reference: Reference | None = None,
    type: EntryType | str = EntryType.settlement_charge,
) -> PostedEntry:
    """A settlement charge (delivery shortfall): the only debit that may take ``available``
    below zero; the negative balance is a debt that blocks buying and withdrawing."""
    move = Transfer(
        user_account(user_id),
        destination,
        amount_micros,
        type,
        description,
        reference,
        allow_debt=True,
    )
    return await _post_transfer(session, move, at)


async def balance_of(session: AsyncSession, account: AccountRef) -> int:
    """The stored balance in micros (0 for an account not created yet)."""
    balances = await repository.account_balances(session, [account.id])
    return balances.get(account.id, 0)


async def has_debt(session: AsyncSession, user_id: uuid.UUID) -> bool:
    """Whether the user's ``available`` is below zero (a settlement charge left a debt)."""
    return await balance_of(session, user_account(user_id)) < 0


async def ensure_no_debt(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Refuse new buy orders and withdrawals while ``available`` is negative."""
    balance = await balance_of(session, user_account(user_id))
    if balance < 0:
        raise OutstandingDebt(details={"available": micros_to_money(balance)})


@dataclass(frozen=True, slots=True)
class WalletBalances:
    """A user's money in micros: ``available`` (negative while in debt), ``reserved`` (held for
    open buy orders and pending withdrawals) and ``escrow_pending`` (moved into escrow at clearing
    and not yet moved on by settlement)."""

    available_micros: int
    reserved_micros: int
    escrow_pending_micros: int


async def wallet_balances(session: AsyncSession, user_id: uuid.UUID) -> WalletBalances:
    balances = await repository.user_balances(session, user_id)
    return WalletBalances(
        available_micros=balances.get(AccountKind.available, 0),
        reserved_micros=balances.get(AccountKind.reserved, 0),
        escrow_pending_micros=await repository.escrow_pending(session, user_id, ESCROW.id),
    )


async def wallet_changed(
    session: AsyncSession,
    rt: Runtime,
    user_id: uuid.UUID,
    *,
    reason: str,
    reference: Reference,
    at: datetime,
) -> None:
    """After commit, tell the user's live sockets (``wallet_updated`` on ``user:<id>``) that a
    payment moved their money, with the balances as this transaction leaves them. Order
    reservations and settlements have their own events (``order_*``, ``settlement_completed``)."""
    balances = await wallet_balances(session, user_id)
    data = {
        "reason": reason,
        "reference_type": reference.type.value,
        "reference_id": str(reference.id),
        "available": micros_to_money(balances.available_micros),
        "reserved": micros_to_money(balances.reserved_micros),
    }
    emit(session, rt.pubsub, (f"user:{user_id}",), "wallet_updated", data, at)


# --- wallet views (used by the routes) ---------------------------------------------------------


# The wallet's chain fields come from a later domain (the chain mirror), which the ledger must
# not import: the app puts a function of this shape in ``rt.extensions[WALLET_CHAIN_VIEW]``. It
# answers (custodial address, energy tokens in Wh or None) or None when the user has no
# custodial wallet.
WalletChainView = Callable[
    [AsyncSession, Runtime, uuid.UUID], Awaitable[tuple[str, int | None] | None]
]
WALLET_CHAIN_VIEW = "ledger.wallet_chain_view"


async def wallet(session: AsyncSession, rt: Runtime, user: User) -> WalletOut:
    balances = await wallet_balances(session, user.id)
    view = cast(WalletChainView | None, rt.extensions.get(WALLET_CHAIN_VIEW))
    on_chain = await view(session, rt, user.id) if view is not None else None
    address, energy_wh = on_chain if on_chain is not None else (None, None)
    return WalletOut(
        currency=rt.settings.currency,
        available=balances.available_micros,
        reserved=balances.reserved_micros,
        escrow_pending=balances.escrow_pending_micros,
        energy_tokens_kwh=wh_to_kwh(energy_wh) if energy_wh is not None else None,
        chain_address=address,
        linked_wallet=user.wallet_address,
    )


async def transactions(
    session: AsyncSession,
    user_id: uuid.UUID,
    page: PageParams,
    *,
    entry_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[TransactionOut]:
    """The user's ledger entries, newest first, each with the user's own postings."""
    query = repository.history_query(user_id, entry_type=entry_type, since=since, until=until)
    entries, total = await paginate(session, query, page)
    postings = await repository.postings_of(session, user_id, [e.id for e in entries])
    items = []
    for entry in entries:
        mine = postings.get(entry.id, [])
        items.append(
            TransactionOut(
                id=entry.id,
                type=entry.type,
                description=entry.description,
                reference_type=entry.reference_type,
                reference_id=entry.reference_id,
                created_at=entry.created_at,
                amount=sum(p.amount_micros for p, kind in mine if kind in USER_KINDS),
                postings=[
                    PostingOut(
                        account=kind,
                        amount=p.amount_micros,
                        # A platform account's balance is not the user's business.
                        balance_after=p.balance_after_micros if kind in USER_KINDS else None,
                    )
                    for p, kind in mine
                ],
            )
        )
    return Page.build(items, total, page)


MAX_STATEMENT_DAYS = 366


async def statements(
    session: AsyncSession, rt: Runtime, user_id: uuid.UUID, first: date, last: date
) -> list[StatementOut]:
    """Daily statements from ``first`` to ``last`` (UTC days, inclusive)."""
    if last < first:
        raise ValidationFailed("`to` is before `from`")
    if (last - first).days >= MAX_STATEMENT_DAYS:
        raise ValidationFailed(f"at most {MAX_STATEMENT_DAYS} days per request")
    days = await repository.daily_statements(session, user_id, first, last)
    out = []
    for day in days:
        movements = [
            MovementOut(
                entry_id=m.entry_id,
                type=m.type,
                description=m.description,
                at=m.at,
                available=m.available_micros,
                reserved=m.reserved_micros,
                total=m.available_micros + m.reserved_micros,
            )
            for m in day.movements
        ]
        out.append(
            StatementOut(
                date=day.day,
                currency=rt.settings.currency,
                opening=_balances_out(day.opening),
                closing=_balances_out(day.closing),
                credits=sum(m.total for m in movements if m.total > 0),
                debits=-sum(m.total for m in movements if m.total < 0),
                movements=movements,
            )
        )
    return out


def _balances_out(values: dict[str, int]) -> BalancesOut:
    available = values[AccountKind.available.value]
    reserved = values[AccountKind.reserved.value]
    return BalancesOut(available=available, reserved=reserved, total=available + reserved)


async def trial_balance(session: AsyncSession, rt: Runtime) -> TrialBalanceOut:
    """Every account's balance; ``total`` is zero unless the ledger is broken."""
    accounts = await repository.all_accounts(session)
    platform = {kind.value: 0 for kind in sorted(PLATFORM_KINDS)}
    per_kind = {kind.value: 0 for kind in USER_KINDS}
    for account in accounts:
        if account.user_id is None:
            platform[account.kind] = account.balance_micros
        else:
            per_kind[account.kind] += account.balance_micros
    return TrialBalanceOut(
        currency=rt.settings.currency,
        as_of=rt.clock.now(),
        accounts=[
            TrialBalanceAccountOut(
                id=a.id, kind=a.kind, user_id=a.user_id, balance=a.balance_micros
            )
            for a in accounts
        ],
        platform=platform,
        users_available=per_kind[AccountKind.available.value],
        users_reserved=per_kind[AccountKind.reserved.value],
        total=sum(a.balance_micros for a in accounts),
    )
