"""Double-entry ledger, wallets, statements and revenue shares (DESIGN.md section 6)."""
