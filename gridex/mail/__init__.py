"""Email: an outbox written in the caller's transaction, delivered by SMTP or the log."""
