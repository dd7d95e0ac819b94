"""When to try a failed send again: exponential backoff with full jitter, then dead letter."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetryAt:
    at: datetime


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    max_seconds: float

    def backoff_ceiling(self, attempt: int) -> float:
        """The longest wait after the ``attempt``-th failure (1-based)."""
        # The exponent is bounded first: 2.0 ** 1024 overflows long before any cap applies.
        return min(self.max_seconds, self.base_seconds * 2.0 ** min(attempt - 1, 64))

    def decide(
        self,
        *,
        attempt: int,
        max_attempts: int | None,
        permanent: bool,
        error: str,
        now: datetime,
        rng: random.Random,
        not_before: float | None = None,
    ) -> RetryAt | GiveUp:
        """``attempt`` is the number of the attempt that just failed.

        Full jitter (a uniform wait between 0 and the ceiling) spreads retries out so a
        recovering server is not hit by every worker at once. ``not_before`` is a wait
        the server asked for (Retry-After), which is honoured as a minimum.
        """
        if permanent:
            return GiveUp(f"permanent failure: {error}")
        limit = max_attempts if max_attempts is not None else self.max_attempts
        if attempt >= limit:
            return GiveUp(f"gave up after {attempt} attempts; last error: {error}")
        wait = rng.uniform(0, self.backoff_ceiling(attempt))
        if not_before is not None:
            wait = max(wait, not_before)
        return RetryAt(now + timedelta(seconds=wait))
