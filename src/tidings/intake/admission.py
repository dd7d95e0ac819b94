"""Admission control: past a backlog's high-water mark, bulk events wait at the door.

When more delivery jobs are waiting than ``high_water``, an event whose messages would
all go in the bulk lane (a back-in-stock wave, a campaign) is answered "come back in
``retry_after`` seconds" instead of being stored: 429 with ``Retry-After`` on the API,
``deferred`` for that item in a batch. Critical and transactional events (refunds,
payments, shipments) are always accepted, and nothing already accepted is ever dropped:
deferring happens before anything is stored, and the sender keeps the event.

The backlog is counted at most once per ``recheck`` seconds per process, so a spike of
requests costs one count a second, not one per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy import Engine, func, select

from tidings.db.engine import read_transaction
from tidings.db.schema import delivery_jobs
from tidings.engine.rules import Lane, RuleSet
from tidings.events.envelope import CanonicalEvent

WAITING = ("queued", "leased")


class Admission:
    def __init__(
        self,
        engine: Engine,
        rules: RuleSet,
        *,
        high_water: int,
        retry_after: int = 30,
        recheck: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.rules = rules
        self.high_water = high_water
        self.retry_after = retry_after
        self.recheck = recheck
        self._clock = clock
        self._lock = threading.Lock()
        self._counted_at: float | None = None
        self._backlog = 0

    def backlog(self) -> int:
        """Delivery jobs waiting, as counted at most ``recheck`` seconds ago."""
        with self._lock:
            now = self._clock()
            if self._counted_at is None or now - self._counted_at >= self.recheck:
                with read_transaction(self.engine) as conn:
                    self._backlog = int(
                        conn.execute(
                            select(func.count())
                            .select_from(delivery_jobs)
                            .where(delivery_jobs.c.status.in_(WAITING))
                        ).scalar_one()
                    )
                self._counted_at = now
            return self._backlog

    def deferred(self, events: Sequence[CanonicalEvent]) -> list[bool]:
        """For each event, whether it must wait: bulk, while the backlog is past high water."""
        if self.high_water <= 0:
            return [False] * len(events)
        lanes = {kind: self.rules.lane_of(kind) for kind in {event.type for event in events}}
        bulk = [lanes[event.type] is Lane.bulk for event in events]
        if not any(bulk) or self.backlog() <= self.high_water:
            return [False] * len(events)
        return bulk
