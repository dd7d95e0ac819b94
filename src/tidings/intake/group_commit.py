"""Group commit: requests that arrive together are stored in one transaction.

Each commit of a write transaction costs a flush to disk (SQLite ``synchronous=FULL``, a
PostgreSQL WAL flush) and a dozen statements of fixed cost; a request of one event pays
all of it alone. Requests that come in while another group is being stored wait for it,
and the next of them stores all that have queued up by then, in one transaction: under
load, single events are written as batches, and when requests come one at a time nothing
waits at all (no timer, no added delay).

Urgent requests (refunds, failed payments) go ahead of the others still waiting, so under
a flood of bulk batches they wait for at most the group being stored.

Every caller still gets its own outcome, and only after the commit that holds its events.
If a group's transaction fails, its requests are tried again one by one, so one bad
request cannot take the others down with it: each gets its own answer or its own error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

R = TypeVar("R")  # a request
T = TypeVar("T")  # its outcome


@dataclass(eq=False)
class _Waiting(Generic[R, T]):
    request: R
    size: int
    done: threading.Event = field(default_factory=threading.Event)
    # Set when this request's thread is to store the next group.
    lead: bool = False
    finished: bool = False
    urgent: bool = False
    outcome: T | None = None
    error: BaseException | None = None


class GroupCommit(Generic[R, T]):
    """``store(requests)`` stores several requests in one transaction and returns their
    outcomes in order (never None). ``submit(request)`` hands a request in and returns
    its outcome."""

    def __init__(
        self,
        store: Callable[[Sequence[R]], list[T]],
        *,
        max_items: int,
        size: Callable[[R], int] = lambda _: 1,
        urgent: Callable[[R], bool] = lambda _: False,
    ) -> None:
        self._store = store
        self._size = size
        self._urgent = urgent
        self.max_items = max_items
        self._lock = threading.Lock()
        self._queue: list[_Waiting[R, T]] = []
        self._storing = False

    def submit(self, request: R) -> T:
        waiting: _Waiting[R, T] = _Waiting(request, self._size(request))
        waiting.urgent = self._urgent(request)  # decided before taking the lock
        with self._lock:
            if waiting.urgent:
                # Ahead of every request that is not urgent, behind the urgent ones.
                at = next(
                    (n for n, w in enumerate(self._queue) if not w.urgent and n > 0),
                    len(self._queue),
                )
                self._queue.insert(at, waiting)
            else:
                self._queue.append(waiting)
            if not self._storing:
                self._storing = waiting.lead = True
        if not waiting.lead:
            waiting.done.wait()  # until stored, or until it is this one's turn to store
        if not waiting.finished:
            self._store_next_group()  # the group starts with this request
        if waiting.error is not None:
            raise waiting.error
        return waiting.outcome  # type: ignore[return-value]

    def _store_next_group(self) -> None:
        with self._lock:
            group: list[_Waiting[R, T]] = []
            items = 0
            while self._queue and (not group or items + self._queue[0].size <= self.max_items):
                waiting = self._queue.pop(0)
                group.append(waiting)
                items += waiting.size
        try:
            self._settle(group)
        finally:
            with self._lock:
                if self._queue:
                    # The first one still waiting stores the next group, in its own thread:
                    # nobody serves others for longer than one group.
                    following = self._queue[0]
                    following.lead = True
                    following.done.set()
                else:
                    self._storing = False
            for waiting in group:
                if waiting.outcome is None and waiting.error is None:
                    # Interrupted (the process is stopping): its callers must not read
                    # an outcome that was never produced.
                    waiting.error = RuntimeError("storing was interrupted; retry the request")
                waiting.finished = True
                waiting.done.set()

    def _settle(self, group: list[_Waiting[R, T]]) -> None:
        try:
            outcomes = self._store([waiting.request for waiting in group])
        except Exception as error:
            if len(group) == 1:
                group[0].error = error
                return
            for waiting in group:
                self._settle([waiting])
            return
        for waiting, outcome in zip(group, outcomes, strict=True):
            waiting.outcome = outcome
