"""Market tables: region settings, epochs (with their clearing record), orders and trades.

Units: ``*_wh`` columns are integer watt-hours (> 0 for quantities); ``*_price_micros`` columns
are integer micros of the deployment currency per kWh; ``*_micros`` money columns are integer
micros. An order's fills are the trades that name it; nothing else stores them.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Enum, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gridex.core.db import Base, IdMixin


class Mechanism(enum.StrEnum):
    auction = "auction"
    continuous = "continuous"


class EpochState(enum.StrEnum):
    open = "open"  # accepting orders until gate closure
    closed = "closed"  # gate closure passed, not cleared yet
    cleared = "cleared"  # trades final, money in escrow
    delivered = "delivered"  # interval over, readings in (or grace passed): settlement's input
    settled = "settled"


class Side(enum.StrEnum):
    buy = "buy"
    sell = "sell"


class OrderType(enum.StrEnum):
    limit = "limit"
    market = "market"


class OrderStatus(enum.StrEnum):
    open = "open"
    partially_filled = "partially_filled"
    filled = "filled"
    cancelled = "cancelled"
    expired = "expired"
    rejected = "rejected"


# Statuses whose order still rests in its epoch's book (continuous: partly filled and resting).
RESTING = (OrderStatus.open, OrderStatus.partially_filled)


class RegionSettings(Base):
    """Market settings of one region; a region without a row uses the deployment defaults."""

    __tablename__ = "market_region_settings"

    region: Mapped[str] = mapped_column(String(64), primary_key=True)
    mechanism: Mapped[Mechanism] = mapped_column(Enum(Mechanism, native_enum=False, length=16))
    min_price_micros: Mapped[int] = mapped_column(BigInteger)  # per kWh
    max_price_micros: Mapped[int] = mapped_column(BigInteger)  # per kWh
    fee_bps: Mapped[int] = mapped_column(Integer)  # 100 = 1 %
    updated_at: Mapped[datetime]
    updated_by_id: Mapped[uuid.UUID | None]


class Epoch(IdMixin, Base):
    """One delivery interval of one region, named by its start; holds the clearing record."""

    __tablename__ = "market_epochs"
    __table_args__ = (
        Index("ix_market_epochs_region_start", "region", "start", unique=True),
        Index("ix_market_epochs_state_gate", "state", "gate_closure"),
        Index("ix_market_epochs_state_end", "state", "end"),
    )

    region: Mapped[str] = mapped_column(String(64))
    start: Mapped[datetime]
    end: Mapped[datetime]
    gate_closure: Mapped[datetime]
    state: Mapped[EpochState] = mapped_column(
        Enum(EpochState, native_enum=False, length=16), default=EpochState.open
    )
    # Fixed at creation from the region's settings (a later change applies to new epochs and
    # to open epochs without orders).
    mechanism: Mapped[Mechanism] = mapped_column(Enum(Mechanism, native_enum=False, length=16))
    # Arrival sequence of the epoch's orders on SQLite (PostgreSQL uses market_order_seq).
    seq_counter: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime]
    # The clearing record, null until cleared. Auction: the uniform price; continuous: the
    # volume-weighted average price of the epoch's trades, rounded half-even.
    price_micros: Mapped[int | None] = mapped_column(BigInteger)
    volume_wh: Mapped[int | None] = mapped_column(BigInteger)
    buy_orders: Mapped[int | None] = mapped_column(Integer)
    sell_orders: Mapped[int | None] = mapped_column(Integer)
    trade_count: Mapped[int | None] = mapped_column(Integer)
    trades_hash: Mapped[str | None] = mapped_column(String(64))
    cleared_at: Mapped[datetime | None]
    chain_signature: Mapped[str | None] = mapped_column(String(128))
    # The settlement record, null until settled (totals include later re-settlements; see
    # gridex/market/settlement.py). Money in micros; prices per kWh, fixed at settlement.
    settled_at: Mapped[datetime | None]
    settlement_paid_micros: Mapped[int | None] = mapped_column(BigInteger)  # value - fees
    settlement_fees_micros: Mapped[int | None] = mapped_column(BigInteger)
    settlement_shared_micros: Mapped[int | None] = mapped_column(BigInteger)  # of paid
    settlement_charges_micros: Mapped[int | None] = mapped_column(BigInteger)
    settlement_credits_micros: Mapped[int | None] = mapped_column(BigInteger)
    settlement_import_price_micros: Mapped[int | None] = mapped_column(BigInteger)
    settlement_feed_in_price_micros: Mapped[int | None] = mapped_column(BigInteger)
    settlement_adjustments: Mapped[int | None] = mapped_column(Integer)
    settlement_adjusted_at: Mapped[datetime | None]


class MarketOrder(IdMixin, Base):
    __tablename__ = "market_orders"
    __table_args__ = (
        Index("ix_market_orders_epoch_status", "epoch_id", "status"),
        Index("ix_market_orders_user_created", "user_id", "created_at"),
        Index("ix_market_orders_user_client_order_id", "user_id", "client_order_id", unique=True),
        # The entry rules' look at the user's own resting orders in an epoch (self-trade,
        # export capacity); the price makes the self-trade check a range probe.
        Index(
            "ix_market_orders_user_epoch_side",
            "user_id",
            "epoch_id",
            "side",
            "effective_price_micros",
        ),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    epoch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market_epochs.id"))
    region: Mapped[str] = mapped_column(String(64))
    epoch_start: Mapped[datetime]
    side: Mapped[Side] = mapped_column(Enum(Side, native_enum=False, length=8))
    type: Mapped[OrderType] = mapped_column(Enum(OrderType, native_enum=False, length=8))
    quantity_wh: Mapped[int] = mapped_column(BigInteger)  # > 0
    filled_wh: Mapped[int] = mapped_column(BigInteger, default=0)
    # Sum of the fills' trade values, micros (average price = value * 1000 / filled_wh).
    filled_value_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    # The limit the client gave (null for a market order) and the one the engine uses (a
    # market order's band edge at placement: max_price to buy, min_price to sell).
    limit_price_micros: Mapped[int | None] = mapped_column(BigInteger)
    effective_price_micros: Mapped[int] = mapped_column(BigInteger)
    # Money held in the buyer's `reserved` account for this order right now (0 for a sell).
    reserved_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    # Arrival sequence: time priority (lower is earlier); a modification takes a new one.
    seq: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[OrderStatus] = mapped_column(
        Enum(OrderStatus, native_enum=False, length=16), default=OrderStatus.open
    )
    client_order_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Trade(IdMixin, Base):
    """``quantity_wh`` from the sell order to the buy order at ``price_micros`` per kWh."""

    __tablename__ = "market_trades"
    __table_args__ = (
        Index("ix_market_trades_epoch_seq", "epoch_id", "seq", unique=True),
        Index("ix_market_trades_buyer_executed", "buyer_id", "executed_at"),
        Index("ix_market_trades_seller_executed", "seller_id", "executed_at"),
        Index("ix_market_trades_region_executed", "region", "executed_at"),
    )

    epoch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market_epochs.id"))
    region: Mapped[str] = mapped_column(String(64))
    epoch_start: Mapped[datetime]
    # Position in the epoch's canonical trade list (the order of the trades hash).
    seq: Mapped[int] = mapped_column(Integer)
    buy_order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market_orders.id"), index=True)
    sell_order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market_orders.id"), index=True)
    buyer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    seller_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    quantity_wh: Mapped[int] = mapped_column(BigInteger)
    price_micros: Mapped[int] = mapped_column(BigInteger)
    value_micros: Mapped[int] = mapped_column(BigInteger)  # what the buyer pays
    fee_micros: Mapped[int] = mapped_column(BigInteger)  # kept from the seller at settlement
    executed_at: Mapped[datetime]
    settlement_status: Mapped[str] = mapped_column(String(16), default="pending")


class SettlementPosition(Base):
    """One participant's delivery check in one settled epoch, as last settled.

    Energy in Wh (metered values pro-rated to the epoch, see docs/market.md "Settlement");
    money in micros. ``charged_micros`` went to ``grid`` for a shortfall, ``credited_micros``
    came from ``grid`` for unconsumed energy; a re-settlement posts only the difference to the
    values stored here and then replaces them.
    """

    __tablename__ = "market_settlement_positions"

    epoch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market_epochs.id"), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    sold_wh: Mapped[int] = mapped_column(BigInteger)
    bought_wh: Mapped[int] = mapped_column(BigInteger)
    exported_wh: Mapped[int] = mapped_column(BigInteger)
    imported_wh: Mapped[int] = mapped_column(BigInteger)
    received_micros: Mapped[int] = mapped_column(BigInteger)  # as seller, after fee and shares
    fees_micros: Mapped[int] = mapped_column(BigInteger)
    charged_micros: Mapped[int] = mapped_column(BigInteger)
    credited_micros: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class SettlementCorrection(Base):
    """A reading correction (``meter_reading_corrections`` row) that re-settlement has handled:
    the durable cursor of the re-settlement job (no foreign key: the meters tables belong to
    another migration branch)."""

    __tablename__ = "market_settlement_corrections"

    correction_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    processed_at: Mapped[datetime]
    epochs: Mapped[int] = mapped_column(Integer)  # settled epochs re-checked
    adjusted: Mapped[int] = mapped_column(Integer)  # of those, how many changed money
