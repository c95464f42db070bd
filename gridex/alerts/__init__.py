"""Alerts: conditions of meters, money, settlement and the chain mirror, raised from committed
facts, one open alert per type and subject, with an acknowledge/resolve lifecycle."""
