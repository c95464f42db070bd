from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.db import Base, IdMixin


class EmailOutbox(IdMixin, Base):
    """Every email Gridex sends, written in the same transaction as its cause.

    Without SMTP the row is the delivery (status ``logged``); with SMTP a job sends ``pending`` rows
    and retries, so an SMTP outage loses nothing.
    """

    __tablename__ = "email_outbox"

    to_address: Mapped[str] = mapped_column(String(254), index=True)
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | sent | failed | logged
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
