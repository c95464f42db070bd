"""The platform's addresses and the instructions the mirror sends: pure functions of public
keys and amounts (no I/O), shared by every backend.

Layout on chain: two mints (credit, 6 decimals; energy, 3 decimals) whose mint authority is the
platform keypair; the platform's ``escrow`` and ``fees`` credit token accounts, at addresses
derived from the platform key with a seed (so they need no keypair of their own); and per user
the associated token accounts of both mints, owned by the user's custodial keypair with the
platform as delegate. The delegation lets the platform alone sign every mirror transaction: the
custodial key signs once, when its token accounts are created.

**Lanes.** Solana runs transactions that write the same account one after the other, so one
escrow account would serialise every settlement transaction. The platform's settlement accounts
are therefore split into ``LANES`` lanes: lane ``k`` has its own escrow and fees credit accounts,
its own energy pool (an energy token account the epoch's delivered energy is minted into), and
its own fee payer (a keypair derived from the platform's). A buyer's money always goes through
the lane of the buyer (:func:`lane_of`), so each lane's escrow holds exactly what its buyers
still owe sellers and never goes below zero. Lane 0's escrow and fees are the original
``gridex-escrow`` and ``gridex-fees`` accounts.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from functools import lru_cache

from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountWithSeedParams, create_account_with_seed
from spl.memo.constants import MEMO_PROGRAM_ID
from spl.token import instructions as spl
from spl.token import models as params
from spl.token.constants import TOKEN_PROGRAM_ID

CREDIT_DECIMALS = 6  # 1 base unit = 1 micro of the currency
ENERGY_DECIMALS = 3  # 1 base unit = 1 Wh
MINT_SIZE = 82
TOKEN_ACCOUNT_SIZE = 165
U64_MAX = 2**64 - 1

# Seeds of the platform's seed-derived accounts (each at most 32 bytes).
SEEDS = {
    "credit_mint": "gridex-credit-mint",
    "energy_mint": "gridex-energy-mint",
    "escrow": "gridex-escrow",
    "fees": "gridex-fees",
}
LANES = 8


def lane_of(user_id: str | uuid.UUID) -> int:
    """The settlement lane of a buyer: a stable function of the user id."""
    return uuid.UUID(str(user_id)).int % LANES


def _lane_seed(name: str, lane: int) -> str:
    """Lane 0 of escrow and fees is the original account; the other lanes and every energy
    pool have a seed of their own."""
    if name in ("escrow", "fees") and lane == 0:
        return SEEDS[name]
    return f"gridex-{name}-{lane}"


def lane_payer(platform_keypair: Keypair, lane: int) -> Keypair:
    """Lane ``lane``'s fee payer: a keypair derived from the platform's secret, so the same
    platform key always gives the same payers and none of them is stored."""
    seed = hashlib.sha256(bytes(platform_keypair)[:32] + f"gridex-lane-{lane}".encode()).digest()
    return Keypair.from_seed(seed)


@dataclass(frozen=True, slots=True)
class Platform:
    """The platform's public addresses, all derived from its key."""

    authority: Pubkey
    credit_mint: Pubkey
    energy_mint: Pubkey
    escrow: Pubkey
    fees: Pubkey
    # Per lane: escrow and fees credit accounts, the energy pool (lane 0's escrow and fees are
    # ``escrow`` and ``fees``).
    escrows: tuple[Pubkey, ...] = ()
    fee_accounts: tuple[Pubkey, ...] = ()
    energy_pools: tuple[Pubkey, ...] = ()

    @classmethod
    def of(cls, authority: Pubkey) -> Platform:
        derived = {
            name: Pubkey.create_with_seed(authority, seed, TOKEN_PROGRAM_ID)
            for name, seed in SEEDS.items()
        }

        def lanes(name: str) -> tuple[Pubkey, ...]:
            return tuple(
                Pubkey.create_with_seed(authority, _lane_seed(name, k), TOKEN_PROGRAM_ID)
                for k in range(LANES)
            )

        return cls(
            authority,
            **derived,
            escrows=lanes("escrow"),
            fee_accounts=lanes("fees"),
            energy_pools=lanes("energy-pool"),
        )

    def records(self) -> dict[str, str]:
        """What is recorded in the database on first start (``chain_records``)."""
        return {
            "platform": str(self.authority),
            "credit_mint": str(self.credit_mint),
            "energy_mint": str(self.energy_mint),
            "escrow": str(self.escrow),
            "fees": str(self.fees),
        }

    def credit_account(self, owner: Pubkey) -> Pubkey:
        return associated_account(owner, self.credit_mint)

    def energy_account(self, owner: Pubkey) -> Pubkey:
        return associated_account(owner, self.energy_mint)

    # --- setup ------------------------------------------------------------------------------

    def _seeded(
        self, name: str, space: int, lamports: int, to: Pubkey | None = None, seed: str = ""
    ) -> Instruction:
        return create_account_with_seed(
            CreateAccountWithSeedParams(
                from_pubkey=self.authority,
                to_pubkey=to or getattr(self, name),
                base=self.authority,
                seed=seed or SEEDS[name],
                lamports=lamports,
                space=space,
                owner=TOKEN_PROGRAM_ID,
            )
        )

    def lane_accounts(self) -> list[tuple[str, int, Pubkey, Pubkey]]:
        """(seed name, lane, address, mint) of every lane account beyond lane 0's escrow and
        fees, which :meth:`create_mints` makes."""
        out = []
        for name, addresses, mint in (
            ("escrow", self.escrows, self.credit_mint),
            ("fees", self.fee_accounts, self.credit_mint),
            ("energy-pool", self.energy_pools, self.energy_mint),
        ):
            for lane, address in enumerate(addresses):
                if name == "energy-pool" or lane:
                    out.append((name, lane, address, mint))
        return out

    def create_lane_account(
        self, name: str, lane: int, address: Pubkey, mint: Pubkey, account_rent: int
    ) -> list[Instruction]:
        """One lane's token account, owned by the platform."""
        return [
            self._seeded(name, TOKEN_ACCOUNT_SIZE, account_rent, address, _lane_seed(name, lane)),
            spl.initialize_account3(
                params.InitializeAccount3Params(
                    program_id=TOKEN_PROGRAM_ID, account=address, mint=mint, owner=self.authority
                )
            ),
        ]

    def create_mints(self, mint_rent: int, account_rent: int) -> list[Instruction]:
        """Both mints and the escrow and fee accounts, in one transaction."""
        out = []
        for name, decimals in (("credit_mint", CREDIT_DECIMALS), ("energy_mint", ENERGY_DECIMALS)):
            out.append(self._seeded(name, MINT_SIZE, mint_rent))
            out.append(
                spl.initialize_mint2(
                    params.InitializeMint2Params(
                        decimals=decimals,
                        program_id=TOKEN_PROGRAM_ID,
                        mint=getattr(self, name),
                        mint_authority=self.authority,
                    )
                )
            )
        for name in ("escrow", "fees"):
            out.append(self._seeded(name, TOKEN_ACCOUNT_SIZE, account_rent))
            out.append(
                spl.initialize_account3(
                    params.InitializeAccount3Params(
                        program_id=TOKEN_PROGRAM_ID,
                        account=getattr(self, name),
                        mint=self.credit_mint,
                        owner=self.authority,
                    )
                )
            )
        return out

    def open_wallet(self, owner: Pubkey) -> list[Instruction]:
        """A user's two token accounts (the platform pays the rent) and the platform's
        delegation over them; ``owner`` signs."""
        out = []
        for mint, decimals in (
            (self.credit_mint, CREDIT_DECIMALS),
            (self.energy_mint, ENERGY_DECIMALS),
        ):
            out.append(spl.create_idempotent_associated_token_account(self.authority, owner, mint))
            out.append(
                spl.approve_checked(
                    params.ApproveCheckedParams(
                        program_id=TOKEN_PROGRAM_ID,
                        source=spl.get_associated_token_address(owner, mint),
                        mint=mint,
                        delegate=self.authority,
                        owner=owner,
                        amount=U64_MAX,
                        decimals=decimals,
                    )
                )
            )
        return out

    # --- movements (the platform signs each as authority, owner or delegate) -----------------

    def mint_credit(self, account: Pubkey, micros: int) -> Instruction:
        return _token(_MINT_TO_CHECKED, micros, CREDIT_DECIMALS, account, self.credit_mint, self)

    def mint_energy(self, account: Pubkey, wh: int) -> Instruction:
        return _token(_MINT_TO_CHECKED, wh, ENERGY_DECIMALS, account, self.energy_mint, self)

    def burn_credit(self, account: Pubkey, micros: int) -> Instruction:
        return _token(_BURN_CHECKED, micros, CREDIT_DECIMALS, account, self.credit_mint, self)

    def burn_energy(self, account: Pubkey, wh: int) -> Instruction:
        return _token(_BURN_CHECKED, wh, ENERGY_DECIMALS, account, self.energy_mint, self)

    def transfer_credit(self, source: Pubkey, dest: Pubkey, micros: int) -> Instruction:
        return _token(
            _TRANSFER_CHECKED, micros, CREDIT_DECIMALS, source, self.credit_mint, self, dest
        )

    def transfer_energy(self, source: Pubkey, dest: Pubkey, wh: int) -> Instruction:
        return _token(_TRANSFER_CHECKED, wh, ENERGY_DECIMALS, source, self.energy_mint, self, dest)

    def memo(self, text: str) -> Instruction:
        """A Memo signed by the platform. spl's ``create_memo`` marks its signer writable, which
        would make the platform account a writable account of every transaction with a memo
        (every settlement transaction, across lanes); the Memo program only needs the signature."""
        return Instruction(
            MEMO_PROGRAM_ID,
            text.encode(),
            [AccountMeta(self.authority, is_signer=True, is_writable=False)],
        )


@lru_cache(maxsize=200_000)
def associated_account(owner: Pubkey, mint: Pubkey) -> Pubkey:
    """The associated token account of ``owner`` for ``mint`` (cached: the derivation searches
    for a program address, about 20 us, and the mirror asks for the same few many times)."""
    return spl.get_associated_token_address(owner, mint)


# The three token instructions the mirror sends by the thousand, encoded here directly: the same
# bytes as spl.token.instructions' builders (tests/chain/test_tokens.py checks it) at 2.6 us
# instead of 42 us each, since those validate a pydantic model per call. Layout: a one-byte tag,
# the amount as u64 little-endian, the mint's decimals as one byte.
_TRANSFER_CHECKED, _MINT_TO_CHECKED, _BURN_CHECKED = 12, 14, 15


def _token(
    tag: int,
    amount: int,
    decimals: int,
    account: Pubkey,
    mint: Pubkey,
    platform: Platform,
    dest: Pubkey | None = None,
) -> Instruction:
    data = bytes((tag,)) + amount.to_bytes(8, "little") + bytes((decimals,))
    authority = AccountMeta(platform.authority, is_signer=True, is_writable=False)
    if tag == _TRANSFER_CHECKED:
        assert dest is not None
        metas = [
            AccountMeta(account, is_signer=False, is_writable=True),
            AccountMeta(mint, is_signer=False, is_writable=False),
            AccountMeta(dest, is_signer=False, is_writable=True),
        ]
    elif tag == _MINT_TO_CHECKED:
        metas = [
            AccountMeta(mint, is_signer=False, is_writable=True),
            AccountMeta(account, is_signer=False, is_writable=True),
        ]
    else:
        metas = [
            AccountMeta(account, is_signer=False, is_writable=True),
            AccountMeta(mint, is_signer=False, is_writable=True),
        ]
    return Instruction(TOKEN_PROGRAM_ID, data, [*metas, authority])


def pack(instructions: list[Instruction]) -> bytes:
    """Instructions as stored in the outbox: each length-prefixed, in solders' binary form."""
    out = bytearray()
    for instruction in instructions:
        raw = bytes(instruction)
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def unpack(data: bytes) -> list[Instruction]:
    out, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        out.append(Instruction.from_bytes(data[at + 4 : at + 4 + size]))
        at += 4 + size
    return out
