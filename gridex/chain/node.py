"""The process's connection to the chain: backend, platform keypair, addresses and key vault.

One per process, made on first use (:func:`chain_of`) and kept on the runtime; ``GRIDEX_CHAIN=off``
makes every use raise ``ChainDisabled`` (503 ``SERVICE_UNAVAILABLE``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from solders.keypair import Keypair

from gridex.chain.backend import ChainBackend
from gridex.chain.keys import KeyVault, load_platform_keypair
from gridex.chain.litesvm import LiteSVMBackend
from gridex.chain.rpc import RpcBackend
from gridex.chain.tokens import LANES, Platform, lane_payer
from gridex.core.config import Settings
from gridex.core.errors import ServiceUnavailable
from gridex.core.runtime import Runtime

_EXTENSION = "chain"


class ChainDisabled(ServiceUnavailable):
    default_message = "The chain mirror is disabled on this deployment (GRIDEX_CHAIN=off)"


@dataclass
class Chain:
    settings: Settings
    backend: ChainBackend
    keypair: Keypair
    platform: Platform
    vault: KeyVault
    # Serialises this process's chain writers (the outbox job and bootstrap).
    lock: asyncio.Lock
    # Fee payers of the settlement lanes (see gridex.chain.tokens), derived from ``keypair``.
    lane_payers: tuple[Keypair, ...] = ()
    # Mints and platform accounts checked (or made) in this process.
    ready: bool = False


def open_chain(settings: Settings) -> Chain:
    """Load (or create) the platform keypair and start the configured backend."""
    if settings.chain == "off":
        raise ChainDisabled()
    keypair = load_platform_keypair(settings.data_dir, settings.chain_keypair)
    payers = tuple(lane_payer(keypair, lane) for lane in range(LANES))
    backend: ChainBackend
    if settings.chain == "litesvm":
        backend = LiteSVMBackend(
            settings.data_dir, fee_payers=[keypair.pubkey(), *(p.pubkey() for p in payers)]
        )
    else:
        backend = RpcBackend(
            settings.chain_rpc_url,
            cluster=settings.chain_id,
            commitment=settings.chain_commitment,
            rate_limit=settings.chain_rpc_rate_limit,
        )
    return Chain(
        settings=settings,
        backend=backend,
        keypair=keypair,
        platform=Platform.of(keypair.pubkey()),
        vault=KeyVault(settings.secret_key, settings.chain_previous_secret_keys),
        lock=asyncio.Lock(),
        lane_payers=payers,
    )


def chain_of(rt: Runtime) -> Chain:
    """The runtime's chain, opened on first use; ``ChainDisabled`` when it is off."""
    chain = rt.extensions.get(_EXTENSION)
    if chain is None:
        chain = rt.extensions[_EXTENSION] = open_chain(rt.settings)
    assert isinstance(chain, Chain)
    return chain


def opened(rt: Runtime) -> Chain | None:
    """The runtime's chain if this process has opened it already."""
    chain = rt.extensions.get(_EXTENSION)
    return chain if isinstance(chain, Chain) else None


def enabled(rt: Runtime) -> bool:
    return rt.settings.chain != "off"


async def close_chain(rt: Runtime) -> None:
    chain = rt.extensions.pop(_EXTENSION, None)
    if isinstance(chain, Chain):
        await chain.backend.close()
