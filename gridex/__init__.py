"""Gridex: a peer-to-peer energy exchange for community and campus microgrids."""

__version__ = "0.1.0"
