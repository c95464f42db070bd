"""A small Solana JSON-RPC endpoint served from LiteSVM on loopback, for the ``rpc`` backend's
tests: it answers the methods the backend calls with the real programs behind them, and can be
told to fail the next requests with HTTP 503 (an endpoint that is down or overloaded)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.rpc.responses import (
    GetBalanceResp,
    GetBlockHeightResp,
    GetLatestBlockhashResp,
    GetMinimumBalanceForRentExemptionResp,
    GetMultipleAccountsResp,
    GetSignatureStatusesResp,
    GetSlotResp,
    RequestAirdropResp,
    RpcBlockhash,
    RpcResponseContext,
    SendTransactionResp,
)
from solders.signature import Signature
from solders.transaction import Transaction
from solders.transaction_metadata import FailedTransactionMetadata
from solders.transaction_status import TransactionConfirmationStatus, TransactionStatus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class RpcDouble:
    def __init__(self) -> None:
        # The VM on a thread of its own, as the litesvm backend does (see gridex.chain.litesvm):
        # running programs leaves the thread's x87 state dirty.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rpc-double")
        self.svm = self._thread.submit(LiteSVM).result()
        self.landed: set[Signature] = set()
        self.fail_next = 0  # answer this many next requests with HTTP 503
        self.calls: list[str] = []
        self.url = ""

    def _slot(self) -> int:
        return int(self.svm.get_clock().slot)

    def _context(self) -> RpcResponseContext:
        return RpcResponseContext(self._slot())

    def _land(self, signature: Signature) -> None:
        self.landed.add(signature)
        self.svm.warp_to_slot(self._slot() + 1)

    def _send(self, params: list[Any]) -> str:
        tx = Transaction.from_bytes(base64.b64decode(params[0]))
        result = self.svm.send_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            # A preflight failure, as a validator reports it.
            error = {
                "code": -32002,
                "message": f"Transaction simulation failed: {result.err()}",
                "data": {"err": None, "logs": [], "accounts": None, "unitsConsumed": 0},
            }
            return json.dumps({"jsonrpc": "2.0", "error": error, "id": 0})
        self._land(tx.signatures[0])
        return SendTransactionResp(tx.signatures[0]).to_json()

    def _statuses(self, params: list[Any]) -> str:
        found = [
            TransactionStatus(
                self._slot(), None, None, None, TransactionConfirmationStatus.Finalized
            )
            if Signature.from_string(s) in self.landed
            else None
            for s in params[0]
        ]
        return GetSignatureStatusesResp(found, self._context()).to_json()

    def _airdrop(self, params: list[Any]) -> str:
        result = self.svm.airdrop(Pubkey.from_string(params[0]), int(params[1]))
        signature = result.signature()
        self._land(signature)
        return RequestAirdropResp(signature).to_json()

    def answer(self, method: str, params: list[Any]) -> str:
        if method == "getLatestBlockhash":
            blockhash = RpcBlockhash(self.svm.latest_blockhash(), self._slot() + 150)
            return GetLatestBlockhashResp(blockhash, self._context()).to_json()
        if method == "getBlockHeight":
            return GetBlockHeightResp(self._slot()).to_json()
        if method == "getSlot":
            return GetSlotResp(self._slot()).to_json()
        if method == "getMinimumBalanceForRentExemption":
            value = self.svm.minimum_balance_for_rent_exemption(int(params[0]))
            return GetMinimumBalanceForRentExemptionResp(value).to_json()
        if method == "sendTransaction":
            return self._send(params)
        if method == "getSignatureStatuses":
            return self._statuses(params)
        if method == "getMultipleAccounts":
            accounts = [self.svm.get_account(Pubkey.from_string(a)) for a in params[0]]
            return GetMultipleAccountsResp(accounts, self._context()).to_json()
        if method == "getBalance":
            balance = self.svm.get_balance(Pubkey.from_string(params[0])) or 0
            return GetBalanceResp(balance, self._context()).to_json()
        if method == "requestAirdrop":
            return self._airdrop(params)
        error = {"code": -32601, "message": f"Method not found: {method}"}
        return json.dumps({"jsonrpc": "2.0", "error": error, "id": 0})

    async def endpoint(self, request: Request) -> Response:
        body = await request.json()
        self.calls.append(body["method"])
        if self.fail_next:
            self.fail_next -= 1
            return Response("overloaded", status_code=503)
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(
            self._thread, self.answer, body["method"], body.get("params") or []
        )
        raw = json.loads(answer)
        raw["id"] = body["id"]
        return Response(json.dumps(raw), media_type="application/json")


@asynccontextmanager
async def serving() -> AsyncIterator[RpcDouble]:
    """The double on a free loopback port for the duration of the block."""
    double = RpcDouble()
    app = Starlette(routes=[Route("/", double.endpoint, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):  # at most 5 s to bind
        if server.started:
            break
        await asyncio.sleep(0.01)
    else:
        raise RuntimeError("the JSON-RPC double did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    double.url = f"http://127.0.0.1:{port}"
    try:
        yield double
    finally:
        server.should_exit = True
        await task
        double._thread.shutdown(wait=True)
