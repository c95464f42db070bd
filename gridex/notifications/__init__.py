"""Email outbox now; in-app notifications and WebSocket fan-out build on it."""
