"""The chain mirror's service: first start, custodial wallets, and the journal follower that
turns ledger entries into outbox transactions (see :mod:`gridex.chain.mirror` for the rules)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from solders.instruction import Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.chain import repository
from gridex.chain.keys import Sealed
from gridex.chain.mirror import (
    ESCROW,
    LANE_TYPES,
    RESETTLEMENT_TYPE,
    SETTLEMENT_TYPES,
    Delivery,
    JournalItem,
    Planner,
    TxPlan,
    delivered_by_trade,
    holder_of,
    platform_lane,
    split,
)
from gridex.chain.models import (
    ChainRecord,
    ChainTransaction,
    ChainTransactionUser,
    ChainWallet,
    TxKind,
)
from gridex.chain.node import Chain, chain_of
from gridex.chain.tokens import MINT_SIZE, TOKEN_ACCOUNT_SIZE, Platform, lane_of, pack
from gridex.core.clock import utc_iso
from gridex.core.db import insert_or_ignore
from gridex.core.runtime import Runtime
from gridex.ledger.models import AccountKind, EntryType, JournalEntry, ReferenceType
from gridex.market.models import Epoch

# SOL the platform keeps for fees and rent where the cluster can fund it (LiteSVM).
_FEE_PAYER_LAMPORTS = 1_000 * 10**9
# SOL each lane's fee payer gets from the platform, topped up when below half of it (a lane's
# transaction has two signatures, 10,000 lamports of fees: 1 SOL pays for 100,000 of them).
_LANE_PAYER_LAMPORTS = 10**9
_LANE_ACCOUNTS_PER_TX = 4
_JOURNAL_PAGE = 20_000


class ChainMisconfigured(RuntimeError):
    """The chain records in the database do not match this platform keypair."""


async def ensure_ready(rt: Runtime) -> Chain:
    """The runtime's chain with its mints and platform accounts in place (made on first
    start and recorded in ``chain_records``; later starts check the records match)."""
    chain = chain_of(rt)
    if chain.ready:
        return chain
    async with chain.lock:
        if chain.ready:
            return chain
        wanted = chain.platform.records()
        async with rt.db.sessionmaker() as session:
            recorded = await repository.records(session)
            for name, value in recorded.items():
                if wanted.get(name) != value:
                    raise ChainMisconfigured(
                        f"chain record {name} is {value}, this platform keypair gives "
                        f"{wanted.get(name)}: was GRIDEX_CHAIN_KEYPAIR changed?"
                    )
            await _create_platform_accounts(chain)
            now = rt.clock.now()
            missing = [
                {"name": name, "value": value, "created_at": now}
                for name, value in wanted.items()
                if name not in recorded
            ]
            if missing:
                await session.execute(insert_or_ignore(session, ChainRecord), missing)
            await session.commit()
        chain.ready = True
    return chain


async def _create_platform_accounts(chain: Chain) -> None:
    """The mints, the lanes' token accounts and the lanes' fee payers' SOL, whatever of them is
    missing (a deployment made before lanes existed gets them on its next start)."""
    backend, platform = chain.backend, chain.platform
    await backend.ensure_funded(platform.authority, _FEE_PAYER_LAMPORTS)
    account_rent = await backend.rent_exempt(TOKEN_ACCOUNT_SIZE)
    batches: list[list[Instruction]] = []
    (mint,) = await backend.accounts([platform.credit_mint])
    if mint is None:
        batches.append(platform.create_mints(await backend.rent_exempt(MINT_SIZE), account_rent))
    lanes = platform.lane_accounts()
    found = await backend.accounts([address for _, _, address, _ in lanes])
    missing = [
        platform.create_lane_account(name, lane, address, mint_of, account_rent)
        for (name, lane, address, mint_of), account in zip(lanes, found, strict=True)
        if account is None
    ]
    for at in range(0, len(missing), _LANE_ACCOUNTS_PER_TX):
        batches.append([i for pair in missing[at : at + _LANE_ACCOUNTS_PER_TX] for i in pair])
    for instructions in batches:
        await _platform_send(chain, instructions, "creating the platform accounts")
    if batches:
        await backend.checkpoint()
    await fund_lane_payers(chain)


async def _platform_send(chain: Chain, instructions: list[Instruction], what: str) -> None:
    blockhash = await chain.backend.blockhash()
    message = Message.new_with_blockhash(instructions, chain.platform.authority, blockhash.hash)
    result = await chain.backend.send(Transaction([chain.keypair], message, blockhash.hash))
    if not result.confirmed:
        raise ChainMisconfigured(f"{what} failed: {result.error}")


async def fund_lane_payers(chain: Chain) -> int:
    """Top up, from the platform's SOL, each lane's fee payer that holds less than half of
    ``_LANE_PAYER_LAMPORTS``; returns how many were topped up. Runs on start and with every
    reconciliation."""
    payers = [payer.pubkey() for payer in chain.lane_payers]
    balances = await chain.backend.accounts(payers)
    top_ups = [
        transfer(
            TransferParams(
                from_pubkey=chain.platform.authority,
                to_pubkey=payer,
                lamports=_LANE_PAYER_LAMPORTS - (account.lamports if account else 0),
            )
        )
        for payer, account in zip(payers, balances, strict=True)
        if (account.lamports if account else 0) < _LANE_PAYER_LAMPORTS // 2
    ]
    if top_ups:
        await _platform_send(chain, top_ups, "funding the lanes' fee payers")
        await chain.backend.checkpoint()
    return len(top_ups)


# --- wallets ----------------------------------------------------------------------------------


async def wallet_addresses(
    session: AsyncSession, chain: Chain, user_ids: Sequence[uuid.UUID], now: datetime
) -> tuple[dict[uuid.UUID, Pubkey], list[uuid.UUID]]:
    """Each user's custodial address, creating the keypairs that do not exist yet (sealed
    before they are stored); returns the addresses and the users whose wallet is new."""
    found = await repository.wallets(session, user_ids)
    created = []
    for user_id in sorted(set(user_ids) - set(found)):
        keypair, sealed = chain.vault.new_keypair(user_id)
        wallet = ChainWallet(
            user_id=user_id,
            address=str(keypair.pubkey()),
            sealed_seed=sealed.data,
            key_id=sealed.key_id,
            created_at=now,
        )
        session.add(wallet)
        found[user_id] = wallet
        created.append(user_id)
    await session.flush()
    return {u: Pubkey.from_string(w.address) for u, w in found.items()}, created


# --- the journal follower ---------------------------------------------------------------------


async def _journal_items(
    session: AsyncSession, entries: list[JournalEntry]
) -> tuple[list[JournalItem], dict[uuid.UUID, Epoch]]:
    """The entries as the planner reads them, with trades' epochs and delivered energy."""
    postings = await repository.postings_by_entry(session, [e.id for e in entries])
    trade_ids = [
        uuid.UUID(e.reference_id)
        for e in entries
        if e.reference_type == ReferenceType.trade.value and e.reference_id
    ]
    trades = await repository.trades(session, trade_ids)
    epoch_ids = {t.epoch_id for t in trades.values()} | {
        uuid.UUID(e.reference_id)
        for e in entries
        if (e.type in SETTLEMENT_TYPES or e.type == RESETTLEMENT_TYPE)
        and e.reference_type == ReferenceType.epoch.value
        and e.reference_id
    }
    epochs = await repository.epochs(session, epoch_ids)
    deliveries: dict[uuid.UUID, dict[uuid.UUID, Delivery]] = {}
    for epoch_id in epochs:
        epoch_trades, by_seller = await repository.epoch_delivery(session, epoch_id)
        delivered = delivered_by_trade(
            ((t.id, t.seller_id, t.seq, t.quantity_wh) for t in epoch_trades), by_seller
        )
        deliveries[epoch_id] = {
            t.id: Delivery(t.id, str(t.seller_id), str(t.buyer_id), delivered[t.id], first=False)
            for t in sorted(epoch_trades, key=lambda t: t.seq)
        }
    items = [_item(entry, postings.get(entry.id, []), trades, deliveries) for entry in entries]
    return items, epochs


def _moves(postings: list[repository.EntryPosting]) -> tuple[dict[str, int], int]:
    """An entry's postings summed per chain holder, and the entry's lane: escrow moves in the
    lane of the buyer it moves for, and the fees an entry takes go to the lane of its escrow."""
    escrow = AccountKind.escrow.value
    lane = next(
        (lane_of(p.on_behalf_of) for p in postings if p.kind == escrow and p.on_behalf_of), 0
    )
    moves: dict[str, int] = {}
    for posting in postings:
        holder = holder_of(posting.kind, posting.owner, lane)
        if holder is not None:
            moves[holder] = moves.get(holder, 0) + posting.amount_micros
    return moves, lane


def _item(
    entry: JournalEntry,
    postings: list[repository.EntryPosting],
    trades: dict[uuid.UUID, repository.TradeParties],
    deliveries: dict[uuid.UUID, dict[uuid.UUID, Delivery]],
) -> JournalItem:
    """``deliveries``: per epoch, each trade's delivered energy as it stands now."""
    moves, lane = _moves(postings)
    settles = entry.type in SETTLEMENT_TYPES or entry.type == RESETTLEMENT_TYPE
    if not settles or not entry.reference_id:
        return JournalItem(entry.id, entry.type, moves)
    reference = uuid.UUID(entry.reference_id)
    if entry.reference_type == ReferenceType.epoch.value:
        if entry.type != RESETTLEMENT_TYPE:
            return JournalItem(entry.id, entry.type, moves, reference)
        # A re-settlement re-checks the energy of every trade of its epoch.
        recheck = tuple(deliveries[reference].values())
        return JournalItem(entry.id, entry.type, moves, reference, recheck)
    trade = trades.get(reference)
    if trade is None or entry.type == RESETTLEMENT_TYPE:
        return JournalItem(entry.id, entry.type, moves)
    in_lane = lane if entry.type in LANE_TYPES else None
    if entry.type != EntryType.settlement_payout.value:
        return JournalItem(entry.id, entry.type, moves, trade.epoch_id, lane=in_lane)
    now = deliveries[trade.epoch_id][reference]
    first = Delivery(now.trade_id, now.seller, now.buyer, now.wh, first=True)
    return JournalItem(entry.id, entry.type, moves, trade.epoch_id, (first,), in_lane)


def settlement_memo(epoch: Epoch) -> str:
    """``gridex:epoch=<start ISO>:trades=<trades_hash>``, the memo of an epoch's settlement."""
    return f"gridex:epoch={utc_iso(epoch.start)}:trades={epoch.trades_hash or ''}"


async def mirror_journal(rt: Runtime) -> int:
    """Turn the next ledger entries into outbox transactions; returns how many entries it
    handled (0 when the mirror is caught up). One transaction of the database per page."""
    chain = await ensure_ready(rt)
    window = timedelta(seconds=rt.settings.chain_mirror_window_seconds)
    async with rt.db.sessionmaker() as session:
        entries = await repository.unmirrored_entries(session, window, _JOURNAL_PAGE)
        if not entries:
            return 0
        items, epochs = await _journal_items(session, entries)
        names = {h for item in items for h in item.moves} | {
            h for item in items for d in item.deliveries for h in (d.seller, d.buyer)
        }
        stored = await repository.holders(session, names)
        planner = Planner({name: h.ledger_micros for name, h in stored.items()})
        planner.energy.update({name: h.energy_wh for name, h in stored.items()})
        delivered = await repository.trade_energy(
            session, {d.trade_id for item in items for d in item.deliveries}
        )
        planner.trade_energy.update(delivered)
        for item in items:
            planner.add(item)
        plans = planner.result()
        await _enqueue(session, chain, plans, epochs, rt.clock.now())
        await repository.save_holders(
            session,
            {name: (planner.balances.get(name, 0), planner.energy.get(name, 0)) for name in names},
        )
        await repository.save_trade_energy(
            session,
            {t: wh for t, wh in planner.trade_energy.items() if delivered.get(t) != wh},
        )
        await repository.mark_mirrored(session, entries)
        await repository.prune_mirrored(session, window)
        await session.commit()
    return len(entries)


def _plan_instructions(
    plan: TxPlan, platform: Platform, addresses: dict[uuid.UUID, Pubkey]
) -> list[Instruction]:
    """A plan's instructions: credits minted, moved, burned; then energy minted to each
    seller and moved on to its buyers (the memo, if any, is added by the caller)."""

    def owner(holder: str) -> Pubkey:
        return addresses[uuid.UUID(holder)]

    def credit(holder: str) -> Pubkey:
        found = platform_lane(holder)
        if found is None:
            return platform.credit_account(owner(holder))
        name, lane = found
        return (platform.escrows if name == ESCROW else platform.fee_accounts)[lane]

    out = [platform.mint_energy(platform.energy_pools[k], wh) for k, wh in plan.pools.items()]
    transfers, mints, burns = split(dict(plan.credits))
    out += [platform.mint_credit(credit(h), amount) for h, amount in mints]
    out += [platform.transfer_credit(credit(s), credit(d), a) for s, d, a in transfers]
    out += [platform.burn_credit(credit(h), amount) for h, amount in burns]
    delivered: dict[str, int] = {}
    for (seller, _), wh in sorted(plan.energy.items()):
        if wh > 0:
            delivered[seller] = delivered.get(seller, 0) + wh
    # A seller's delivered energy: from its lane's pool (minted ahead), or minted here.
    if plan.lane is not None:
        pool = platform.energy_pools[plan.lane]
        out += [
            platform.transfer_energy(pool, platform.energy_account(owner(s)), wh)
            for s, wh in sorted(delivered.items())
        ]
    else:
        out += [
            platform.mint_energy(platform.energy_account(owner(s)), wh)
            for s, wh in sorted(delivered.items())
        ]
    out += [
        platform.transfer_energy(
            platform.energy_account(owner(s)), platform.energy_account(owner(b)), wh
        )
        for (s, b), wh in sorted(plan.energy.items())
        if wh > 0
    ]
    # A re-settlement that found less delivered: the excess is burned from the buyer.
    out += [
        platform.burn_energy(platform.energy_account(owner(b)), -wh)
        for (_, b), wh in sorted(plan.energy.items())
        if wh < 0
    ]
    return out


async def _enqueue(
    session: AsyncSession,
    chain: Chain,
    plans: list[TxPlan],
    epochs: dict[uuid.UUID, Epoch],
    now: datetime,
) -> None:
    """Outbox rows: first the setup of every new wallet, then one per plan, in order."""
    users = sorted({uuid.UUID(u) for plan in plans for u in plan.users})
    addresses, created = await wallet_addresses(session, chain, users, now)
    platform = chain.platform
    rows: list[dict[str, object]] = []
    involved: list[list[uuid.UUID]] = []
    for user_id in created:
        setup = pack(platform.open_wallet(addresses[user_id]))
        rows.append({"kind": TxKind.account.value, "instructions": setup, "signers": str(user_id)})
        involved.append([user_id])
    seen: dict[bytes, int] = {}
    for plan in plans:
        instructions = _plan_instructions(plan, platform, addresses)
        transfers = len(instructions)
        memo = None
        if plan.epoch_id is not None and plan.epoch_id in epochs:
            memo = settlement_memo(epochs[plan.epoch_id])
            instructions.append(platform.memo(memo))
        packed = pack(instructions)
        if memo is not None and packed in seen:
            # Two settlement transactions with the same movements (one payout each of the same
            # amounts between the same holders) would sign to the same signature, which the
            # chain takes for one transaction: a second memo tells them apart.
            seen[packed] += 1
            instructions.append(platform.memo(f"gridex:part={seen[packed]}"))
            packed = pack(instructions)
        seen.setdefault(packed, 0)
        rows.append(
            {
                "kind": plan.kind.value,
                "instructions": packed,
                "epoch_id": plan.epoch_id,
                "memo": memo,
                "transfers": transfers,
                "lane": plan.lane,
            }
        )
        involved.append(sorted(uuid.UUID(u) for u in plan.users))
    if not rows:
        return
    defaults = {"signers": "", "epoch_id": None, "memo": None, "transfers": 0, "lane": None}
    ids = await session.scalars(
        insert(ChainTransaction).returning(ChainTransaction.id, sort_by_parameter_order=True),
        [{**defaults, **row, "next_attempt_at": now, "created_at": now} for row in rows],
    )
    links = [
        {"transaction_id": tx_id, "user_id": user}
        for tx_id, users_of in zip(ids, involved, strict=True)
        for user in users_of
    ]
    if links:
        await session.execute(insert_or_ignore(session, ChainTransactionUser), links)


async def reseal_keys(rt: Runtime) -> int:
    """Key rotation: seal every custodial seed sealed under a previous secret with the current
    one (``GRIDEX_CHAIN_PREVIOUS_SECRET_KEYS`` must still list the old secrets); returns how
    many were resealed. The address, and so every token account, stays the same."""
    vault = chain_of(rt).vault
    resealed = 0
    async with rt.db.sessionmaker() as session:
        for wallet in await repository.wallets_to_reseal(session, vault.key_id):
            keypair = vault.open(wallet.user_id, Sealed(wallet.sealed_seed, wallet.key_id))
            sealed = vault.seal(wallet.user_id, bytes(keypair)[:32])
            wallet.sealed_seed, wallet.key_id = sealed.data, sealed.key_id
            resealed += 1
        await session.commit()
    return resealed
