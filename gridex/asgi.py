"""The ASGI application object for uvicorn and other servers: ``gridex.asgi:app``."""

from gridex.app import create_app
from gridex.core.config import get_settings
from gridex.core.logging import configure_logging

_settings = get_settings()
configure_logging(_settings.log_level, json=_settings.log_json)
app = create_app(_settings)
