"""Notifications, and the bookkeeping of the jobs that derive them from committed facts.

``fact_cursors`` and ``fact_receipts`` are shared with the alerts: a follower reads the facts
of a source (rows of another domain) from a little before the newest it handled, and a receipt
per handled fact makes each fact count once however often the window re-reads it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.db import Base, IdMixin


class Notification(IdMixin, Base):
    """One message to one user, as shown in the history (the ``in_app`` channel)."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_user_created", "user_id", "created_at"),
        Index("ix_notifications_user_read", "user_id", "read_at"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))  # the event type of the preferences
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(String(2000))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]
    read_at: Mapped[datetime | None]


class FactCursor(Base):
    """How far a fact follower has read its source: the newest fact time it handled."""

    __tablename__ = "fact_cursors"

    name: Mapped[str] = mapped_column(String(48), primary_key=True)
    position: Mapped[datetime]
    updated_at: Mapped[datetime]


class FactReceipt(Base):
    """A fact a follower has handled (``key`` is the fact's id in its source); ``at`` is the
    fact's time, receipts older than twice the look-back window are pruned."""

    __tablename__ = "fact_receipts"
    __table_args__ = (Index("ix_fact_receipts_source_at", "source", "at"),)

    source: Mapped[str] = mapped_column(String(48), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    at: Mapped[datetime]
