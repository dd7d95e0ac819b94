"""The intake use case: read a request, keep what is bad, store what is good, in one place.

Routes, the reject replayer and the demo all go through ``Intake`` so they behave alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from tidings.db.types import utcnow
from tidings.engine.rules import Lane, RuleSet
from tidings.events.envelope import CanonicalEvent
from tidings.intake import rejects
from tidings.intake.admission import Admission
from tidings.intake.cloudevents_http import STRUCTURED, Item, RequestError, parse_request
from tidings.intake.group_commit import GroupCommit
from tidings.intake.service import Accepted, DeliveryDefaults, ingest


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    item: Item
    accepted: Accepted | None
    reject_id: str | None
    # Not stored: bulk, while the delivery backlog is past high water (admission.py).
    deferred: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    is_batch: bool
    items: list[ItemOutcome]


# Items per write transaction: large enough to spread a commit's fixed cost, small enough
# that a transaction holds the write lock for a fraction of a second.
COMMIT_CHUNK = 200


@dataclass(frozen=True, slots=True)
class _Request:
    items: list[Item]
    content_type: str | None
    headers: dict[str, str]
    actor: str
    channel: str


class RejectNotFound(LookupError):
    code = "reject_not_found"


class Intake:
    def __init__(
        self,
        engine: Engine,
        rules: RuleSet,
        delivery: DeliveryDefaults,
        *,
        max_batch: int,
        on_commit: Callable[[], None] | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.engine = engine
        self.admission = admission
        self.rules = rules
        self.delivery = delivery
        self.max_batch = max_batch
        self.on_commit = on_commit
        self._group: GroupCommit[_Request, list[ItemOutcome]] = GroupCommit(
            self._store_requests,
            max_items=COMMIT_CHUNK,
            size=lambda request: len(request.items),
            urgent=self._urgent,
        )

    def submit(
        self, content_type: str | None, headers: Mapping[str, str], body: bytes, *, actor: str
    ) -> Outcome:
        """Accept a request. A RequestError (unreadable body) is logged as a reject, then raised."""
        kept_headers = {k.lower(): v for k, v in headers.items() if k.lower().startswith("ce-")}
        try:
            is_batch, items = parse_request(content_type, headers, body, max_batch=self.max_batch)
        except RequestError as error:
            with self.engine.begin() as conn:
                error.reject_id = rejects.record(
                    conn,
                    channel="api",
                    code=error.code,
                    detail=error.detail,
                    field=error.field,
                    payload=body.decode("utf-8", errors="replace"),
                    content_type=content_type,
                    headers=kept_headers,
                    source=None,
                    now=utcnow(),
                )
            raise
        outcomes = self.store_admitted(
            items,
            content_type=STRUCTURED if is_batch else content_type,
            headers={} if is_batch else kept_headers,
            actor=actor,
        )
        return Outcome(is_batch, outcomes)

    def store_admitted(
        self,
        items: list[Item],
        *,
        content_type: str | None,
        headers: dict[str, str],
        actor: str,
        channel: str = "api",
    ) -> list[ItemOutcome]:
        """``store_items``, except that bulk events wait (``deferred``, not stored) while the
        delivery backlog is past high water (admission.py)."""
        waiting = self._deferred(items)
        if not waiting:
            return self.store_items(
                items, content_type=content_type, headers=headers, actor=actor, channel=channel
            )
        stored = iter(
            self.store_items(
                [item for item in items if item.index not in waiting],
                content_type=content_type,
                headers=headers,
                actor=actor,
                channel=channel,
            )
        )
        return [
            ItemOutcome(item, None, None, deferred=True) if item.index in waiting else next(stored)
            for item in items
        ]

    def _deferred(self, items: list[Item]) -> set[int]:
        if self.admission is None:
            return set()
        valid = [item for item in items if item.event is not None]
        verdicts = self.admission.deferred([item.event for item in valid if item.event])
        return {item.index for item, wait in zip(valid, verdicts, strict=True) if wait}

    def accept_events(self, events: list[CanonicalEvent], *, actor: str) -> list[Accepted]:
        """Already-validated canonical events (the demo, importers, billing)."""
        now = utcnow()
        with self.engine.begin() as conn:
            accepted = ingest(
                conn, events, rules=self.rules, delivery=self.delivery, now=now, actor=actor
            )
        self._committed()
        return accepted

    def replay(self, reject_id: str, *, actor: str) -> ItemOutcome:
        """Try a rejected payload again, as it was received; it stays open if still bad."""
        with self.engine.connect() as conn:
            stored = rejects.get_reject(conn, reject_id)
        if stored is None:
            raise RejectNotFound(f"No reject with id {reject_id}. See `tidings rejects list`.")
        try:
            _, items = parse_request(
                stored["content_type"],
                stored["headers"],
                stored["payload"].encode(),
                max_batch=self.max_batch,
            )
        except RequestError as error:
            with self.engine.begin() as conn:
                rejects.update_reason(conn, reject_id, code=error.code, detail=error.detail)
            return ItemOutcome(Item(0, None, None, stored["payload"], None), None, reject_id)
        item = items[0]
        now = utcnow()
        with self.engine.begin() as conn:
            if item.event is None:
                if item.error is not None:
                    rejects.update_reason(
                        conn, reject_id, code=item.error.code, detail=item.error.detail
                    )
                return ItemOutcome(item, None, reject_id)
            accepted = ingest(
                conn, [item.event], rules=self.rules, delivery=self.delivery, now=now, actor=actor
            )
            rejects.mark_replayed(conn, reject_id, now)
        self._committed()
        return ItemOutcome(item, accepted[0], None)

    def store_items(
        self,
        items: list[Item],
        *,
        content_type: str | None,
        headers: dict[str, str],
        actor: str,
        channel: str = "api",
    ) -> list[ItemOutcome]:
        """Ingest the good items and keep the bad ones in the reject log. Up to
        ``COMMIT_CHUNK`` items go in one transaction, which requests arriving at the same
        time share (group_commit.py); a larger batch commits chunk after chunk, so a
        refund sent meanwhile does not wait for the whole batch. If a later chunk fails,
        the earlier ones stay stored and the sender's retry finds them duplicates."""
        outcomes: list[ItemOutcome] = []
        for start in range(0, max(len(items), 1), COMMIT_CHUNK):
            chunk = _Request(
                items[start : start + COMMIT_CHUNK], content_type, headers, actor, channel
            )
            outcomes += self._group.submit(chunk)
        return outcomes

    def _urgent(self, request: _Request) -> bool:
        return any(
            self.rules.lane_of(item.event.type) is Lane.critical
            for item in request.items
            if item.event is not None
        )

    def _store_requests(self, requests: Sequence[_Request]) -> list[list[ItemOutcome]]:
        now = utcnow()
        accepted: dict[tuple[int, int], Accepted] = {}
        reject_ids: dict[tuple[int, int], str] = {}
        with self.engine.begin() as conn:
            # One ingest per actor (audit entries name it), all in this transaction.
            for actor, group in itertools.groupby(enumerate(requests), lambda r: r[1].actor):
                keys, good = [], []
                for number, request in group:
                    for item in request.items:
                        if item.event is not None:
                            keys.append((number, item.index))
                            good.append(item.event)
                if good:
                    stored = ingest(
                        conn, good, rules=self.rules, delivery=self.delivery, now=now, actor=actor
                    )
                    accepted.update(zip(keys, stored, strict=True))
            for number, request in enumerate(requests):
                for item in request.items:
                    if item.error is not None:
                        reject_ids[(number, item.index)] = rejects.record(
                            conn,
                            channel=request.channel,
                            code=item.error.code,
                            detail=item.error.detail,
                            field=item.error.field,
                            payload=item.raw,
                            content_type=request.content_type,
                            headers=request.headers,
                            source=item.source,
                            now=now,
                        )
        if accepted:
            self._committed()
        return [
            [
                ItemOutcome(
                    item, accepted.get((number, item.index)), reject_ids.get((number, item.index))
                )
                for item in request.items
            ]
            for number, request in enumerate(requests)
        ]

    def _committed(self) -> None:
        if self.on_commit is not None:
            self.on_commit()
