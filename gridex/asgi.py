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
