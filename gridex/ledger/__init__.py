"""Double-entry ledger, wallets, statements and revenue shares."""
