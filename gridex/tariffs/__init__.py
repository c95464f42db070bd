"""Tariffs: each region's grid import price with time-of-use bands, its feed-in price, their
history by ``effective_from``, and admins' temporary overrides. :func:`service.price_at` and
:func:`service.price_segments` are the one answer to "which price is in force", for every caller.
"""
