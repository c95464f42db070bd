"""Real time: the WebSocket endpoint ``/ws`` and the per-worker hub that fans pub/sub events out
to its sockets (docs/realtime.md)."""
