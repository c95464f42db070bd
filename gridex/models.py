"""Every domain's tables, imported in one place for Alembic and ``create_all``."""

from gridex.alerts.models import Alert, MeterWatch
from gridex.audit.models import AuditLog
from gridex.auth.models import ApiKey, AuthSession, OtpCode, RefreshToken, User, WalletNonce
from gridex.billing.models import BillingCycle, Dispute, Invoice, InvoiceLine, InvoicePayment
from gridex.chain.models import (
    ChainHolder,
    ChainMismatch,
    ChainRecord,
    ChainTransaction,
    ChainTransactionUser,
    ChainWallet,
    MirroredEntry,
)
from gridex.core.db import Base
from gridex.core.idempotency import IdempotencyKey
from gridex.core.jobs import JobLease
from gridex.ledger.models import (
    Installation,
    InstallationShare,
    JournalEntry,
    LedgerAccount,
    Posting,
)
from gridex.mail.models import EmailOutbox
from gridex.market.models import (
    Epoch,
    MarketOrder,
    RegionSettings,
    SettlementCorrection,
    SettlementPosition,
    Trade,
)
from gridex.meters.models import (
    Meter,
    MeterCommand,
    MeterReading,
    MeterRollup,
    MeterStatusEvent,
    ReadingCorrection,
    RejectedReading,
)
from gridex.notifications.models import FactCursor, FactReceipt, Notification
from gridex.payments.models import PaymentEvent, PaymentIntent, Refund, Withdrawal
from gridex.regions.models import Region
from gridex.runtimeconfig.models import RuntimeConfigVersion, RuntimeSetting
from gridex.tariffs.models import TariffOverride, TariffSchedule

__all__ = [
    "Alert",
    "ApiKey",
    "AuditLog",
    "AuthSession",
    "Base",
    "BillingCycle",
    "ChainHolder",
    "ChainMismatch",
    "ChainRecord",
    "ChainTransaction",
    "ChainTransactionUser",
    "ChainWallet",
    "Dispute",
    "EmailOutbox",
    "Epoch",
    "FactCursor",
    "FactReceipt",
    "IdempotencyKey",
    "Installation",
    "InstallationShare",
    "Invoice",
    "InvoiceLine",
    "InvoicePayment",
    "JobLease",
    "JournalEntry",
    "LedgerAccount",
    "MarketOrder",
    "Meter",
    "MeterCommand",
    "MeterReading",
    "MeterRollup",
    "MeterStatusEvent",
    "MeterWatch",
    "MirroredEntry",
    "Notification",
    "OtpCode",
    "PaymentEvent",
    "PaymentIntent",
    "Posting",
    "ReadingCorrection",
    "RefreshToken",
    "Refund",
    "Region",
    "RegionSettings",
    "RejectedReading",
    "RuntimeConfigVersion",
    "RuntimeSetting",
    "SettlementCorrection",
    "SettlementPosition",
    "TariffOverride",
    "TariffSchedule",
    "Trade",
    "User",
    "WalletNonce",
    "Withdrawal",
]
