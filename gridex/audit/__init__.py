"""The audit trail: an append-only record of auth events and staff actions."""
