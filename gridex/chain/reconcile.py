"""Reconciliation: every user's and platform account's ledger balance, under the
no-negative rule of :mod:`gridex.chain.mirror`, against its token balance on chain."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from solders.pubkey import Pubkey
from solders.token.state import TokenAccount
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.chain import repository
from gridex.chain.mirror import ESCROW, FEES, on_chain
from gridex.chain.models import ChainMismatch
from gridex.chain.node import Chain
from gridex.ledger.models import USER_KINDS, AccountKind, LedgerAccount


@dataclass(frozen=True, slots=True)
class Difference:
    account: str  # a user id, or "escrow" / "fees"
    ledger_micros: int
    chain_micros: int

    @property
    def difference_micros(self) -> int:
        return self.chain_micros - self.ledger_micros


@dataclass
class Reconciliation:
    checked_at: datetime
    accounts: int = 0
    mismatches: list[Difference] = field(default_factory=list)
    # Transactions not confirmed yet: differences may only be the mirror's lag.
    in_flight: int = 0

    @property
    def ok(self) -> bool:
        return not self.mismatches


async def _ledger_balances(session: AsyncSession) -> dict[str, int]:
    """Per user ``available + reserved``; the platform's ``escrow`` and ``fees``."""
    users = await session.execute(
        select(LedgerAccount.user_id, func.sum(LedgerAccount.balance_micros))
        .where(LedgerAccount.kind.in_([k.value for k in USER_KINDS]))
        .group_by(LedgerAccount.user_id)
    )
    out = {str(user): int(total) for user, total in users}
    platform = await session.execute(
        select(LedgerAccount.kind, LedgerAccount.balance_micros).where(
            LedgerAccount.kind.in_([AccountKind.escrow.value, AccountKind.fees.value])
        )
    )
    for kind, balance in platform:
        out[ESCROW if kind == AccountKind.escrow.value else FEES] = int(balance)
    out.setdefault(ESCROW, 0)
    out.setdefault(FEES, 0)
    return out


def token_amount(data: bytes | None) -> int:
    return 0 if not data else int(TokenAccount.from_bytes(bytes(data)).amount)


async def reconcile(
    session: AsyncSession, chain: Chain, now: datetime, *, record: bool = True
) -> Reconciliation:
    """Compare ledger and chain; with ``record``, store each difference as a
    ``chain_mismatch`` when the outbox is empty (a difference then is not the mirror's lag)."""
    ledger = await _ledger_balances(session)
    user_ids = [uuid.UUID(h) for h in ledger if h not in (ESCROW, FEES)]
    wallets = await repository.wallets(session, user_ids)
    # The platform's escrow and fees are the sums of their lanes' accounts.
    addresses: list[tuple[str, Pubkey]] = [
        *((ESCROW, address) for address in chain.platform.escrows),
        *((FEES, address) for address in chain.platform.fee_accounts),
    ]
    for user_id, wallet in wallets.items():
        owner = Pubkey.from_string(wallet.address)
        addresses.append((str(user_id), chain.platform.credit_account(owner)))
    accounts = await chain.backend.accounts([address for _, address in addresses])
    on_chain_now: dict[str, int] = {}
    for (name, _), account in zip(addresses, accounts, strict=True):
        amount = token_amount(account.data if account else None)
        on_chain_now[name] = on_chain_now.get(name, 0) + amount
    result = Reconciliation(checked_at=now, accounts=len(ledger))
    for holder, balance in sorted(ledger.items()):
        expected = on_chain(holder, balance)
        actual = on_chain_now.get(holder, 0)
        if expected != actual:
            result.mismatches.append(Difference(holder, expected, actual))
    result.in_flight = await repository.outbox_depth(session)
    if record and result.in_flight == 0 and result.mismatches:
        session.add_all(
            ChainMismatch(
                account=d.account,
                ledger_micros=d.ledger_micros,
                chain_micros=d.chain_micros,
                found_at=now,
            )
            for d in result.mismatches
        )
        await session.flush()
    return result
