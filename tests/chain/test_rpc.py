"""The ``rpc`` backend against a JSON-RPC endpoint served from LiteSVM on loopback: the same
mirror as on LiteSVM, retries while the endpoint answers 503, refusals reported."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from solders.keypair import Keypair
from solders.message import Message
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from gridex.chain.backend import ChainUnavailable
from gridex.chain.node import chain_of
from gridex.chain.rpc import RpcBackend
from gridex.core.runtime import Runtime
from tests.chain.helpers import chain_settings, mirrored, reconciled, tokens
from tests.chain.rpc_double import RpcDouble, serving
from tests.factories import make_user
from tests.ledger.helpers import fund


@pytest.fixture
async def double() -> AsyncIterator[RpcDouble]:
    async with serving() as served:
        yield served


@pytest.fixture
def settings_overrides(tmp_path: Path, double: RpcDouble) -> dict[str, object]:
    return {**chain_settings(tmp_path), "chain": "rpc", "chain_rpc_url": double.url}


async def test_the_mirror_runs_over_json_rpc(runtime: Runtime, double: RpcDouble) -> None:
    user = await make_user(runtime)
    await fund(runtime, user.id, 2_500_000)
    chain = await mirrored(runtime)
    assert chain.backend.name == "rpc"
    assert await tokens(runtime, user.id) == (2_500_000, 0)
    assert (await reconciled(runtime)).ok
    assert {"requestAirdrop", "sendTransaction", "getSignatureStatuses"} <= set(double.calls)
    # The endpoint is overloaded for a moment: the backend retries with backoff.
    double.fail_next = 2
    await fund(runtime, user.id, 500_000)
    await mirrored(runtime)
    assert await tokens(runtime, user.id) == (3_000_000, 0)
    assert chain_of(runtime) is chain


async def test_retries_then_unavailable_and_refusals(double: RpcDouble) -> None:
    backend = RpcBackend(double.url, cluster="test", backoff_seconds=0.01, attempts=3)
    try:
        double.fail_next = 2
        assert await backend.slot() >= 0  # the third try answers
        double.fail_next = 3
        with pytest.raises(ChainUnavailable):
            await backend.slot()
        payer = Keypair()
        blockhash = await backend.blockhash()
        # A transfer from an account that has nothing: refused in preflight.
        message = Message.new_with_blockhash(
            [
                transfer(
                    TransferParams(from_pubkey=payer.pubkey(), to_pubkey=payer.pubkey(), lamports=1)
                )
            ],
            payer.pubkey(),
            blockhash.hash,
        )
        refused = await backend.send(Transaction([payer], message, blockhash.hash))
        assert not refused.confirmed
        assert refused.error
        await backend.ensure_funded(payer.pubkey(), 10**9)
        (account,) = await backend.accounts([payer.pubkey()])
        assert account is not None
        assert account.lamports == 10**9
    finally:
        await backend.close()


def test_the_rpc_endpoint_is_read_under_either_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from gridex.core.config import Settings

    monkeypatch.setenv("GRIDEX_SOLANA_RPC_URL", "https://api.devnet.solana.com")
    assert Settings(_env_file=None).chain_rpc_url == "https://api.devnet.solana.com"  # type: ignore[call-arg]
    monkeypatch.delenv("GRIDEX_SOLANA_RPC_URL")
    monkeypatch.setenv("GRIDEX_CHAIN_RPC_URL", "http://127.0.0.1:18899")
    assert Settings(_env_file=None).chain_rpc_url == "http://127.0.0.1:18899"  # type: ignore[call-arg]
