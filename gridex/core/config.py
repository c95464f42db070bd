"""Deployment configuration, read only from ``GRIDEX_*`` environment variables and ``.env``."""

from __future__ import annotations

import ipaddress
import json
import re
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from limits import parse
from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

API_PREFIX = "/api/v1"
# Region names: lower-case letters, digits and inner hyphens (they appear in paths and topics).
REGION_NAME = r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?"
DEFAULT_SECRET_KEY = "change-me-in-production-this-is-not-a-secret"
MIN_SECRET_KEY_LENGTH = 32


class InsecureConfiguration(ValueError):
    """The configuration is not safe to serve in production."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GRIDEX_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    env: Literal["development", "test", "production"] = "development"
    secret_key: str = DEFAULT_SECRET_KEY
    data_dir: Path = Path(".")
    database_url: str = ""
    # PostgreSQL connections kept per process, and how many more may open under bursts. Keep
    # pool size x processes below the server's max_connections.
    db_pool_size: int = Field(default=20, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    # Test a pooled connection before use when it sat idle for more than db_pre_ping_idle_seconds
    # (0: before every use), so a database restart during a quiet spell costs no failed request.
    db_pre_ping: bool = True
    db_pre_ping_idle_seconds: float = Field(default=10.0, ge=0)
    # SQLite: how long a statement waits for another connection's write lock before failing.
    # Ingest transactions queue for the lock without this limit (see core.db.SQLiteWriteGate).
    sqlite_busy_timeout_ms: int = Field(default=10_000, ge=0)
    redis_url: str | None = None
    # WebSocket /ws (docs/realtime.md): messages a socket may have waiting before it is closed as
    # too slow (4429); how long a socket may take to send its auth message; how often each
    # worker re-checks that its sockets' sessions are still live (revocations also close them at
    # once through an event); how many channels one socket may hold.
    ws_send_queue: int = Field(default=256, ge=1)
    ws_auth_timeout_seconds: float = Field(default=10.0, gt=0)
    ws_session_check_seconds: float = Field(default=60.0, gt=0)
    ws_max_channels: int = Field(default=100, ge=1)
    mqtt_url: str | None = None
    smtp_url: str | None = None
    smtp_from: str = "Gridex <no-reply@gridex.local>"
    public_domain: str = "127.0.0.1:8080"
    public_url: str = "http://127.0.0.1:8080"
    chain_id: str = "localnet"
    currency: str = "USD"

    run_jobs: bool = True
    # `gridex serve --demo` turns this on: the demo community's meters and people keep trading.
    demo_simulation: bool = False
    # The regions a fresh install starts with (created on start when missing); admins add more
    # with PUT /api/v1/market/regions/{region}. Comma-separated.
    regions: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["community"])
    # Comma-separated in the environment (a JSON list works too).
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Addresses or networks of the reverse proxies whose X-Forwarded-For and X-Forwarded-Proto
    # are believed; from anyone else those headers are ignored (empty: no proxy is trusted).
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_body_bytes: int = 10 * 1024 * 1024
    log_level: str = "INFO"
    log_json: bool = True
    metrics_token: str | None = None

    access_token_minutes: int = 15
    refresh_token_days: int = 30
    otp_minutes: int = 10
    otp_max_attempts: int = 5
    wallet_nonce_minutes: int = 5
    lockout_threshold: int = 5
    lockout_minutes: int = 30
    # Argon2id cost; the defaults are the OWASP-recommended minimum for Argon2id.
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456

    rate_limit_enabled: bool = True
    rate_limit_anonymous: str = "120/minute"
    rate_limit_auth: str = "10/minute"
    rate_limit_default: str = "600/minute"
    rate_limit_admin: str = "6000/minute"
    rate_limit_ingest: str = "6000/minute"

    # --- Meters and telemetry (gridex/meters) ---------------------------------------------
    # A meter is offline after this many of its intervals pass without a reading.
    offline_after_intervals: int = Field(default=3, ge=1)
    # Readings older than this are refused (and kept in the dead-letter table).
    reading_retention_days: int = Field(default=365, ge=1)
    # How far in the future a reading's interval end may be, for device clock skew.
    reading_future_skew_seconds: int = Field(default=300, ge=0)
    # Most readings accepted in one ingest call (HTTP batch, list or one MQTT message).
    ingest_max_readings: int = Field(default=10_000, ge=1)
    # kg CO2e avoided per kWh produced locally instead of drawn from the grid.
    grid_emission_factor_kg_per_kwh: Decimal = Decimal("0.4")
    # Per region, overriding the default above (JSON object: {"north": "0.25"}).
    region_emission_factors: dict[str, Decimal] = Field(default_factory=dict)
    # MQTT consumer: a stable client id per process keeps its persistent session across
    # restarts; run several consumers on one host with distinct ids.
    mqtt_client_id: str | None = None
    # Empty (the default): a plain persistent subscription, which the broker keeps, with the
    # messages queued for it, over its own restart. A group name: an MQTT v5 shared
    # subscription across several consumers, which Mosquitto 2.0 does not keep over a restart.
    mqtt_shared_group: str = ""
    mqtt_session_expiry_seconds: int = Field(default=3600, ge=0)
    # Fixed delay before the consumer reconnects after losing the broker (no growing backoff:
    # devices come back within a second of a broker restart, and so must the consumer).
    mqtt_reconnect_seconds: float = Field(default=1.0, gt=0, le=60)
    # A command not acknowledged by its device within this many seconds is `timeout`.
    meter_command_timeout_seconds: int = Field(default=60, ge=1)

    # --- Ledger, wallet and payments (gridex/ledger, gridex/payments, core/idempotency.py) ---
    # Payment provider adapter by name; "builtin" follows Stripe's intent + signed-webhook flow.
    payment_provider: str = "builtin"
    # HMAC-SHA256 key of the `Gridex-Signature` webhook header. Empty: outside production a key
    # derived from `secret_key`; in production every webhook is refused until it is set.
    payment_webhook_secret: str = ""
    payment_webhook_tolerance_seconds: int = Field(default=300, ge=1)
    # The stripe adapter (GRIDEX_PAYMENT_PROVIDER=stripe): the secret API key (sk_...) and the
    # webhook endpoint's signing secret (whsec_...) that `Stripe-Signature` is checked with.
    stripe_api_key: str = ""
    stripe_webhook_secret: str = ""
    idempotency_ttl_hours: int = Field(default=24, ge=1)
    # A claim older than this is taken over by a retry (its work can never have committed, see
    # core/idempotency.py); keep it above the longest request.
    idempotency_lease_seconds: int = Field(default=60, ge=1)

    # --- Market (gridex/market) ----------------------------------------------------------------
    # Delivery epochs of this many minutes, aligned to UTC; must divide 60.
    epoch_minutes: int = Field(default=15, ge=1, le=60)
    # Orders are accepted for epochs starting at most this far ahead.
    market_horizon_hours: int = Field(default=24, ge=1, le=24 * 31)
    # Orders close this many seconds before their epoch starts (gate closure).
    gate_closure_seconds: int = Field(default=300, ge=0)
    # Defaults of a region without market settings: price band per kWh, fee, mechanism.
    min_price: Decimal = Decimal("0.010000")
    max_price: Decimal = Decimal("1.000000")
    fee_bps: int = Field(default=100, ge=0, le=10_000)
    market_mechanism: Literal["auction", "continuous"] = "auction"
    # How often the clearing job looks for epochs past gate closure.
    market_clearing_interval_seconds: float = Field(default=5.0, gt=0)
    # A cleared epoch counts as delivered this long after its end even if some participant's
    # meter has not reported the whole interval (settlement then uses what is in).
    settlement_grace_seconds: int = Field(default=900, ge=0)

    # --- Runtime configuration (gridex/runtimeconfig) and analytics --------------------------
    # Each process compares its runtime settings with the database's version at most this often
    # (a change published over pub/sub applies at once; this bounds a missed event).
    runtime_config_ttl_seconds: float = Field(default=2.0, ge=0)
    # Analytics answers are cached this long (in Redis when configured, shared by workers).
    analytics_cache_seconds: float = Field(default=30.0, ge=0)

    # --- Chain (gridex/chain) ---------------------------------------------------------------
    # litesvm: the SPL programs in process, state in `gridex-chain.bin` in the data dir; rpc: a
    # Solana JSON-RPC endpoint; off: no mirror, the chain endpoints answer 503.
    chain: Literal["litesvm", "rpc", "off"] = "litesvm"
    # GRIDEX_SOLANA_RPC_URL is read too, under the name the deployment guides use.
    chain_rpc_url: str = Field(
        default="http://127.0.0.1:8899",
        validation_alias=AliasChoices("GRIDEX_CHAIN_RPC_URL", "GRIDEX_SOLANA_RPC_URL"),
    )
    chain_commitment: Literal["processed", "confirmed", "finalized"] = "confirmed"
    # Requests per second to the RPC endpoint (0: no cap); public endpoints limit callers.
    chain_rpc_rate_limit: float = Field(default=0, ge=0)
    # A Solana CLI keypair file; unset: `platform-keypair.json` in the data dir.
    chain_keypair: Path | None = None
    # Secrets that sealed custodial keys before the current `secret_key` (rotation).
    chain_previous_secret_keys: list[str] = Field(default_factory=list)
    chain_outbox_interval_seconds: float = Field(default=2.0, gt=0)
    chain_outbox_batch: int = Field(default=500, ge=1)
    # A transaction the chain keeps refusing is `failed` after this many attempts.
    chain_max_attempts: int = Field(default=8, ge=1)
    chain_retry_base_seconds: float = Field(default=2.0, gt=0)
    chain_reconcile_interval_seconds: float = Field(default=300.0, gt=0)
    # The mirror re-reads journal entries this far behind the newest it has handled, so that an
    # entry whose transaction committed late is not skipped.
    chain_mirror_window_seconds: int = Field(default=3600, ge=0)

    # --- Alerts and notifications (gridex/alerts, gridex/notifications) -----------------------
    # How often the jobs that turn committed facts into alerts and notifications run: an alert
    # appears within about this long of its fact.
    alerts_interval_seconds: float = Field(default=15.0, gt=0)
    notifications_interval_seconds: float = Field(default=15.0, gt=0)
    # The fact followers re-read this far behind the newest fact they handled, so that a fact
    # whose transaction committed late is not skipped (each fact is still handled once).
    alert_lookback_seconds: int = Field(default=600, ge=0)
    # consumption_spike: a reading's consumption above `factor` x the meter's mean for that hour
    # of the day (over `profile_days`, with data on at least `profile_min_days` of them) and at
    # least `spike_min_wh` (scaled to a 15-minute interval) above it.
    alert_profile_days: int = Field(default=14, ge=1, le=90)
    alert_profile_min_days: int = Field(default=3, ge=1)
    alert_spike_factor: float = Field(default=3.0, gt=1)
    alert_spike_min_wh: int = Field(default=250, ge=0)
    # generation_drop: production below `ratio` x the meter's mean for that hour of the day,
    # where that mean is at least `min_expected_wh` (scaled to a 15-minute interval).
    alert_drop_ratio: float = Field(default=0.25, ge=0, lt=1)
    alert_drop_min_expected_wh: int = Field(default=100, ge=1)
    # voltage_out_of_range: EN 50160's 230 V +-10 %; per region as JSON,
    # e.g. GRIDEX_ALERT_VOLTAGE_RANGES='{"north": [110, 127]}'.
    alert_voltage_min: float = Field(default=207.0, gt=0)
    alert_voltage_max: float = Field(default=253.0, gt=0)
    alert_voltage_ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    # reading_rejected: this many rejected readings of one meter within the window.
    alert_rejections_threshold: int = Field(default=5, ge=1)
    alert_rejections_window_minutes: int = Field(default=60, ge=1)
    # Billing: the tax rate applied to each invoice's subtotal (0.2 = 20 %, at most 6 decimals)
    # and how many days after issue an invoice falls due.
    tax_rate: Decimal = Field(default=Decimal("0"), ge=0, lt=1)
    invoice_due_days: int = Field(default=14, ge=0, le=365)

    @model_validator(mode="after")
    def _market_settings(self) -> Settings:
        if 60 % self.epoch_minutes:
            raise ValueError("GRIDEX_EPOCH_MINUTES must divide 60")
        for name in ("min_price", "max_price"):
            price: Decimal = getattr(self, name)
            if price < 0 or price != price.quantize(Decimal("0.000001")):
                raise ValueError(f"GRIDEX_{name.upper()} must be >= 0 with at most 6 decimals")
        if self.min_price > self.max_price:
            raise ValueError("GRIDEX_MIN_PRICE is above GRIDEX_MAX_PRICE")
        if self.tax_rate != self.tax_rate.quantize(Decimal("0.000001")):
            raise ValueError("GRIDEX_TAX_RATE must have at most 6 decimals")
        return self

    @model_validator(mode="after")
    def _payment_provider(self) -> Settings:
        if self.payment_provider == "stripe" and not (
            self.stripe_api_key and self.stripe_webhook_secret
        ):
            raise ValueError(
                "GRIDEX_PAYMENT_PROVIDER=stripe needs GRIDEX_STRIPE_API_KEY and "
                "GRIDEX_STRIPE_WEBHOOK_SECRET"
            )
        return self

    @model_validator(mode="after")
    def _alert_settings(self) -> Settings:
        ranges = [(self.alert_voltage_min, self.alert_voltage_max)]
        ranges += list(self.alert_voltage_ranges.values())
        if any(low >= high for low, high in ranges):
            raise ValueError("an alert voltage range's minimum must be below its maximum")
        return self

    @field_validator("cors_origins", "trusted_proxies", "regions", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("regions")
    @classmethod
    def _valid_region_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(REGION_NAME, name):
                raise ValueError(
                    f"{name!r} is not a region name (lower-case letters, digits and hyphens)"
                )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    @field_validator(
        "rate_limit_anonymous",
        "rate_limit_auth",
        "rate_limit_default",
        "rate_limit_admin",
        "rate_limit_ingest",
    )
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        parse(value)  # raises ValueError on a malformed limits string
        return value

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'gridex.db'}"
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def check_production_safety(self) -> None:
        """Refuse to serve production traffic with a default or short secret key, or without a
        mail transport (the one-time codes would otherwise be written to the log)."""
        if self.env != "production":
            return
        if self.secret_key == DEFAULT_SECRET_KEY:
            raise InsecureConfiguration(
                "GRIDEX_SECRET_KEY is the built-in default; set a random secret of at least "
                f"{MIN_SECRET_KEY_LENGTH} characters (e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))'`)"
            )
        if len(self.secret_key) < MIN_SECRET_KEY_LENGTH:
            raise InsecureConfiguration(
                f"GRIDEX_SECRET_KEY is {len(self.secret_key)} characters long; production needs at "
                f"least {MIN_SECRET_KEY_LENGTH}"
            )
        if not self.smtp_url:
            raise InsecureConfiguration(
                "GRIDEX_SMTP_URL is not set; without a mail transport sign-in codes would be "
                "written to the log, so production needs one (smtp://, smtp+starttls:// or "
                "smtps://)"
            )


@lru_cache
def get_settings() -> Settings:
    return Settings()
