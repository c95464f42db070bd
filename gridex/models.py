"""Every domain's tables, imported in one place for Alembic and ``create_all``."""

from gridex.admin.models import AuditLog
from gridex.auth.models import ApiKey, AuthSession, OtpCode, RefreshToken, WalletNonce
from gridex.core.db import Base
from gridex.core.jobs import JobLease
from gridex.notifications.models import EmailOutbox
from gridex.users.models import User

__all__ = [
    "ApiKey",
    "AuditLog",
    "AuthSession",
    "Base",
    "EmailOutbox",
    "JobLease",
    "OtpCode",
    "RefreshToken",
    "User",
    "WalletNonce",
]
