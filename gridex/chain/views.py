"""What the chain endpoints show: the network, outbox transactions with their decoded
instructions, balances by address, reconciliation, and the wallet's chain fields."""

from __future__ import annotations

import uuid
from decimal import Decimal

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from solders.token.state import TokenAccount
from solders.transaction import Transaction
from spl.memo.constants import MEMO_PROGRAM_ID
from spl.token.constants import ASSOCIATED_TOKEN_PROGRAM_ID, TOKEN_PROGRAM_ID
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.auth.models import Role
from gridex.auth.service import Principal
from gridex.chain import repository
from gridex.chain.backend import ChainUnavailable
from gridex.chain.models import ChainTransaction, ChainTransactionUser
from gridex.chain.node import chain_of, enabled, opened
from gridex.chain.reconcile import reconcile, token_amount
from gridex.chain.schemas import (
    BalanceOut,
    ChainTransactionDetailOut,
    ChainTransactionOut,
    InstructionOut,
    MintsOut,
    MismatchOut,
    NetworkOut,
    ReconciliationOut,
)
from gridex.chain.service import ensure_ready
from gridex.chain.tokens import unpack
from gridex.core.errors import NotFound, ValidationFailed
from gridex.core.pagination import Page, PageParams, paginate
from gridex.core.runtime import Runtime
from gridex.market.models import Epoch

_TOKEN_INSTRUCTIONS = {
    7: "mint_to",
    8: "burn",
    12: "transfer_checked",
    13: "approve_checked",
    14: "mint_to_checked",
    15: "burn_checked",
    18: "initialize_account3",
    20: "initialize_mint2",
}
_PROGRAMS = {
    TOKEN_PROGRAM_ID: "spl_token",
    ASSOCIATED_TOKEN_PROGRAM_ID: "associated_token_account",
    MEMO_PROGRAM_ID: "memo",
}


async def network(rt: Runtime) -> NetworkOut:
    if not enabled(rt):
        return NetworkOut(
            backend="off", cluster=None, slot=None, healthy=False, mints=None, platform=None
        )
    chain = await ensure_ready(rt)
    try:
        slot: int | None = await chain.backend.slot()
    except ChainUnavailable:
        slot = None
    platform = chain.platform
    return NetworkOut(
        backend=rt.settings.chain,
        cluster=chain.backend.cluster,
        slot=slot,
        healthy=slot is not None,
        mints=MintsOut(energy=str(platform.energy_mint), credit=str(platform.credit_mint)),
        platform=str(platform.authority),
    )


def _out(row: ChainTransaction, epochs: dict[uuid.UUID, Epoch]) -> ChainTransactionOut:
    epoch = epochs.get(row.epoch_id) if row.epoch_id else None
    return ChainTransactionOut(
        signature=row.signature,
        kind=row.kind,
        status=row.status,
        epoch=epoch.start if epoch else None,
        memo=row.memo,
        attempts=row.attempts,
        error=row.error,
        created_at=row.created_at,
        confirmed_at=row.confirmed_at,
    )


def _visible(query: Select[ChainTransaction], principal: Principal) -> Select[ChainTransaction]:
    """Admins see every transaction, everyone else those that concern them."""
    if principal.role is Role.admin:
        return query
    mine = select(ChainTransactionUser.transaction_id).where(
        ChainTransactionUser.user_id == principal.user.id
    )
    return query.where(ChainTransaction.id.in_(mine))


async def transactions(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    page: PageParams,
    *,
    kind: str | None,
    status: str | None,
) -> Page[ChainTransactionOut]:
    """Newest first."""
    chain_of(rt)  # 503 when the chain is off
    query = _visible(select(ChainTransaction), principal)
    if kind:
        query = query.where(ChainTransaction.kind == kind)
    if status:
        query = query.where(ChainTransaction.status == status)
    rows, total = await paginate(session, query.order_by(ChainTransaction.id.desc()), page)
    epochs = await repository.epochs(session, [r.epoch_id for r in rows if r.epoch_id])
    return Page.build([_out(r, epochs) for r in rows], total, page)


def decode(instruction: Instruction) -> InstructionOut:
    """A readable form of one instruction: program, type, accounts and amount or memo."""
    program = _PROGRAMS.get(instruction.program_id, str(instruction.program_id))
    accounts = [str(meta.pubkey) for meta in instruction.accounts]
    data = bytes(instruction.data)
    if instruction.program_id == MEMO_PROGRAM_ID:
        return InstructionOut(
            program=program, type="memo", accounts=accounts, memo=data.decode(errors="replace")
        )
    if instruction.program_id == TOKEN_PROGRAM_ID and data:
        name = _TOKEN_INSTRUCTIONS.get(data[0], f"instruction_{data[0]}")
        amount = int.from_bytes(data[1:9], "little") if data[0] in (7, 8, 12, 13, 14, 15) else None
        return InstructionOut(program=program, type=name, accounts=accounts, amount=amount)
    if instruction.program_id == ASSOCIATED_TOKEN_PROGRAM_ID:
        kind = "create_idempotent" if data[:1] == b"\x01" else "create"
        return InstructionOut(program=program, type=kind, accounts=accounts)
    return InstructionOut(program=program, type="other", accounts=accounts)


async def transaction(
    session: AsyncSession, rt: Runtime, principal: Principal, signature: str
) -> ChainTransactionDetailOut:
    chain_of(rt)
    query = _visible(
        select(ChainTransaction).where(ChainTransaction.signature == signature), principal
    )
    row = await session.scalar(query)
    if row is None:
        raise NotFound("No such chain transaction", details={"signature": signature})
    epochs = await repository.epochs(session, [row.epoch_id] if row.epoch_id else [])
    return ChainTransactionDetailOut(
        **_out(row, epochs).model_dump(),
        compute_units=row.compute_units,
        instructions=[decode(i) for i in _sent(row)],
    )


def _sent(row: ChainTransaction) -> list[Instruction]:
    """The instructions as signed and sent (with the memo added at signing), else as built.
    Only the accounts' addresses and signer flags are shown, so writability is left unset."""
    if row.signed is None:
        return unpack(row.instructions)
    message = Transaction.from_bytes(row.signed).message
    keys = message.account_keys
    return [
        Instruction(
            keys[compiled.program_id_index],
            bytes(compiled.data),
            [AccountMeta(keys[i], message.is_signer(i), False) for i in compiled.accounts],
        )
        for compiled in message.instructions
    ]


def _address(value: str) -> Pubkey:
    try:
        return Pubkey.from_string(value)
    except ValueError as exc:
        raise ValidationFailed("Not a base58 Solana address", details={"address": value}) from exc


async def balance(rt: Runtime, address: str) -> BalanceOut:
    """SOL, credit and energy of a wallet address (its associated token accounts), or of a
    token account itself (its mint's balance)."""
    chain = await ensure_ready(rt)
    owner, platform = _address(address), chain.platform
    account, credit, energy = await chain.backend.accounts(
        [owner, platform.credit_account(owner), platform.energy_account(owner)]
    )
    credit_units = token_amount(credit.data if credit else None)
    energy_units = token_amount(energy.data if energy else None)
    if account is not None and account.owner == TOKEN_PROGRAM_ID and len(account.data) == 165:
        held = TokenAccount.from_bytes(bytes(account.data))
        if held.mint == platform.credit_mint:
            credit_units = int(held.amount)
        elif held.mint == platform.energy_mint:
            energy_units = int(held.amount)
    lamports = account.lamports if account else 0
    return BalanceOut(
        address=address,
        sol=f"{Decimal(lamports) / Decimal(10**9):.9f}",
        credit=credit_units,
        energy_kwh=energy_units,
    )


async def reconciliation(session: AsyncSession, rt: Runtime) -> ReconciliationOut:
    chain = await ensure_ready(rt)
    result = await reconcile(session, chain, rt.clock.now())
    return ReconciliationOut(
        checked_at=result.checked_at,
        accounts=result.accounts,
        mismatches=[
            MismatchOut(
                account=d.account,
                ledger=d.ledger_micros,
                chain=d.chain_micros,
                difference=d.difference_micros,
            )
            for d in result.mismatches
        ],
        in_flight=result.in_flight,
    )


async def wallet_chain_fields(
    session: AsyncSession, rt: Runtime, user_id: uuid.UUID
) -> tuple[str, int | None] | None:
    """``(chain_address, energy Wh)`` for ``GET /wallet``: None before the user's custodial
    wallet exists (or with the chain off); energy None while the chain does not answer."""
    if not enabled(rt):
        return None
    found = await repository.wallets(session, [user_id])
    if user_id not in found:
        return None
    address = found[user_id].address
    try:
        chain = await ensure_ready(rt)
        (energy,) = await chain.backend.accounts(
            [chain.platform.energy_account(Pubkey.from_string(address))]
        )
    except ChainUnavailable:
        return address, None
    return address, token_amount(energy.data if energy else None)


async def health(rt: Runtime) -> str:
    """``/health``'s chain check: ``not_configured`` when off, ``idle`` while this process has
    not opened the chain (a health probe does not start it), ``ok`` when the backend answers."""
    if not enabled(rt):
        return "not_configured"
    chain = opened(rt)
    if chain is None:
        return "idle"
    try:
        await chain.backend.slot()
    except Exception:  # any failure to reach the chain degrades health, it never raises
        return "error"
    return "ok"
