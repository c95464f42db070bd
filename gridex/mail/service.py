"""Email: queued in the caller's transaction, delivered by SMTP or recorded in the log."""

from __future__ import annotations

import asyncio
import smtplib
from datetime import timedelta
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import structlog
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridex.core.clock import Clock
from gridex.core.config import Settings
from gridex.core.db import Database
from gridex.mail.models import EmailOutbox

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 8
DELIVERED_BODY = ""


def queue_email(
    session: AsyncSession,
    settings: Settings,
    clock: Clock,
    *,
    to: str,
    subject: str,
    body: str,
    kind: str,
) -> EmailOutbox:
    """Add an email to the outbox in the caller's unit of work.

    With ``GRIDEX_SMTP_URL`` it waits as ``pending`` for the delivery job; without, the outbox row
    and a log line are the delivery (``logged``), which is how a laptop install reads its OTP codes.
    """
    now = clock.now()
    email = EmailOutbox(
        to_address=to,
        subject=subject,
        body=body,
        kind=kind,
        status="pending" if settings.smtp_url else "logged",
        created_at=now,
        next_attempt_at=now if settings.smtp_url else None,
    )
    session.add(email)
    if not settings.smtp_url:
        log.info("email_logged", to=to, subject=subject, kind=kind, body=body)
    return email


def _send_smtp(smtp_url: str, sender: str, email: EmailOutbox) -> None:
    url = urlsplit(smtp_url)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = email.to_address
    message["Subject"] = email.subject
    message.set_content(email.body)
    port = url.port or (465 if url.scheme == "smtps" else 25)
    smtp_class = smtplib.SMTP_SSL if url.scheme == "smtps" else smtplib.SMTP
    with smtp_class(url.hostname or "localhost", port, timeout=15) as client:
        if url.scheme == "smtp+starttls":
            client.starttls()
        if url.username:
            client.login(unquote(url.username), unquote(url.password or ""))
        client.send_message(message)


async def deliver_pending(db: Database, settings: Settings, clock: Clock, limit: int = 50) -> int:
    """Send due ``pending`` emails over SMTP; back off on failure, give up after a few tries."""
    if not settings.smtp_url:
        return 0
    sent = 0
    async with db.sessionmaker() as session:
        now = clock.now()
        due = await session.scalars(
            select(EmailOutbox)
            .where(EmailOutbox.status == "pending", EmailOutbox.next_attempt_at <= now)
            .order_by(EmailOutbox.created_at)
            .limit(limit)
        )
        for email in due:
            email.attempts += 1
            try:
                await asyncio.to_thread(_send_smtp, settings.smtp_url, settings.smtp_from, email)
            except (OSError, smtplib.SMTPException) as exc:
                email.last_error = str(exc)[:500]
                if email.attempts >= MAX_ATTEMPTS:
                    email.status = "failed"
                else:
                    email.next_attempt_at = now + timedelta(seconds=30 * 2**email.attempts)
                log.warning("email_failed", to=email.to_address, attempts=email.attempts)
            else:
                email.status, email.sent_at, email.last_error = "sent", clock.now(), None
                # Delivered: the body (one-time codes, reset links) is not kept.
                email.body = DELIVERED_BODY
                sent += 1
            await session.commit()
    return sent


def outbox_query(*, status: str | None = None, to: str | None = None) -> Select[EmailOutbox]:
    """The outbox newest first, optionally by status and recipient."""
    query = select(EmailOutbox).order_by(EmailOutbox.created_at.desc(), EmailOutbox.id)
    if status:
        query = query.where(EmailOutbox.status == status)
    if to:
        query = query.where(EmailOutbox.to_address == to.lower())
    return query
