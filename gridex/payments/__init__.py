"""Top-ups through a payment provider adapter, refunds and withdrawals."""
