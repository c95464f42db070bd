"""What one process holds for its lifetime: settings, database, clock and shared services."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gridex.core.clock import Clock
from gridex.core.config import Settings
from gridex.core.db import Database
from gridex.core.jobs import JobRunner
from gridex.core.pubsub import MemoryPubSub, PubSub
from gridex.core.ratelimit import RateLimiter
from gridex.core.security import PasswordHasher


@dataclass
class Runtime:
    settings: Settings
    db: Database
    clock: Clock
    hasher: PasswordHasher
    limiter: RateLimiter
    jobs: JobRunner
    pubsub: PubSub = field(default_factory=MemoryPubSub)
    # Long-lived services of higher domains (the chain backend), by domain name: core knows
    # none of their types, each domain reads its own entry.
    extensions: dict[str, object] = field(default_factory=dict)
    started_monotonic: float = field(default_factory=time.monotonic)

    @property
    def uptime_seconds(self) -> float:
        return time.monotonic() - self.started_monotonic
