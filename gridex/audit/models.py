from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.db import Base, IdMixin


class AuditLog(IdMixin, Base):
    """An append-only record of every auth event and every state-changing staff action."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_actor_at", "actor_id", "at"),
        Index("ix_audit_log_subject_at", "subject_type", "subject_id", "at"),
    )

    at: Mapped[datetime] = mapped_column(index=True)
    actor_id: Mapped[uuid.UUID | None]
    actor_type: Mapped[str] = mapped_column(String(16))  # user | api_key | system | anonymous
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject_type: Mapped[str | None] = mapped_column(String(32))
    subject_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16), default="success")  # success | failure
    ip: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
