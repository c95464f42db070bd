"""Delivery and settlement of cleared epochs, and re-settlement after reading corrections.

``cleared -> delivered``: once the epoch's interval has ended and every participant's meters in
the region have readings covering it, or once ``GRIDEX_SETTLEMENT_GRACE_SECONDS`` have passed
since its end (:func:`deliver_due`).

``delivered -> settled`` (:func:`settle_epoch`), in one transaction: each trade's escrowed value
goes to the seller minus the fee (to ``fees``), with the part attributed to meters with revenue
shares passed on to the share holders; each participant's metered energy is checked against what
it traded (a seller's shortfall is charged at the grid import price, a buyer's unconsumed energy
credited at the feed-in price, both against ``grid``); trades become ``settled`` and the epoch
gets its settlement record. The rules themselves are pure functions in
:mod:`gridex.market.settlement.rules`.

A correction of a reading that an already settled epoch used (``meter_reading_corrections``)
re-runs that epoch's delivery check and posts only the difference (:func:`resettle_epoch`);
:func:`process_corrections` is the durable driver: it remembers handled corrections in
``market_settlement_corrections``.

Every claim is a conditional update of the epoch's state, so several workers can run these jobs
at once: a second claim matches no row and writes nothing.
"""

from gridex.market.settlement.corrections import (
    process_correction,
    process_corrections,
    resettle_epoch,
)
from gridex.market.settlement.delivery import deliver_due, deliverable, grace, mark_delivered
from gridex.market.settlement.metering import readings_complete
from gridex.market.settlement.settle import settle_due, settle_epoch

__all__ = [
    "deliver_due",
    "deliverable",
    "grace",
    "mark_delivered",
    "process_correction",
    "process_corrections",
    "readings_complete",
    "resettle_epoch",
    "settle_due",
    "settle_epoch",
]
