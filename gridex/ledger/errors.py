"""Errors of the ledger, wallet and payments domain (the codes of the HTTP error contract)."""

from __future__ import annotations

from gridex.core.errors import GridexError


class InsufficientFunds(GridexError):
    code, status, default_message = "INSUFFICIENT_FUNDS", 409, "Insufficient funds"


class OutstandingDebt(InsufficientFunds):
    default_message = "Your available balance is negative; repay the debt first"


class UnbalancedEntry(Exception):
    """A programming error: an entry whose postings do not sum to zero (never reaches a client
    as anything but a 500)."""
