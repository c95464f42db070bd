"""The ASGI application object for uvicorn and other servers: ``gridex.asgi:app``."""

import gc

from gridex.app import create_app
from gridex.core.config import get_settings
from gridex.core.logging import configure_logging

_settings = get_settings()
configure_logging(_settings.log_level, json=_settings.log_json)
app = create_app(_settings)
# Modules, routes, models and the app live as long as the process: moved out of the cyclic
# collector, they are not traversed again by every full collection (a 10,000-reading batch
# allocates enough objects to trigger several), which otherwise costs ~10% of an ingest call.
gc.freeze()
# A speed trick that a benchmark pays for. A request allocates thousands of container objects
# and frees nearly all of them by reference counting; with CPython's default threshold (700)
# the young generation is still collected several times per request, ~10% of an order's CPU.
# Collect it every 10,000 allocations instead: the cyclic garbage that waits meanwhile is
# small. bench/orders.py (PostgreSQL, 32 clients, one worker) went from 880-914 to
# 1,000-1,016 orders/s with it.
gc.set_threshold(10_000, 10, 10)
