"""What every broker consumer does alike: read a batch, store it the way the HTTP API does,
then settle each message by what became of it.

A message is acknowledged only once what it carried is committed (or was already stored under
the same source and id: a redelivery after a crash between commit and acknowledgement is a
duplicate and changes nothing). A message that can never be accepted is kept in the reject
log, raw payload and reason, and settled so it is not redelivered. A message that could not be
stored because the database failed is handed back to the broker to come again later.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, Protocol, TypeVar

from tidings.events.envelope import EventError
from tidings.intake.cloudevents_http import (
    BATCH,
    STRUCTURED,
    Item,
    RequestError,
    media_type,
    parse_request,
)
from tidings.intake.intake import Intake

log = logging.getLogger(__name__)

M = TypeVar("M")
CLOUDEVENTS_MEDIA = "application/cloudevents"


class ConsumeError(RuntimeError):
    """The consumer cannot start (no server, no stream): says what to fix."""


class Settle(Enum):
    ACK = "ack"  # stored, or a duplicate of what is stored
    REJECTED = "rejected"  # every event in it refused and kept in the reject log
    RETRY = "retry"  # nothing of it is known to be stored: the broker is to deliver it again


@dataclass(frozen=True, slots=True)
class Delivery:
    """One broker message as the intake reads it.

    ``headers`` carries binary-mode attributes already named ``ce-<attribute>``, whatever the
    broker called them; ``error`` is set when the message could not even be turned into that.
    """

    body: bytes
    content_type: str | None
    headers: dict[str, str] = field(default_factory=dict)
    error: RequestError | None = None


@dataclass(slots=True)
class Tally:
    """What a consumer has done so far, by message."""

    acked: int = 0
    rejected: int = 0
    retried: int = 0
    batches: int = 0

    def add(self, settles: Sequence[Settle]) -> None:
        self.batches += 1
        self.acked += sum(1 for s in settles if s is Settle.ACK)
        self.rejected += sum(1 for s in settles if s is Settle.REJECTED)
        self.retried += sum(1 for s in settles if s is Settle.RETRY)


def effective_content_type(content_type: str | None, headers: dict[str, str], body: bytes) -> str:
    """The content type the HTTP parser is to read a broker message as.

    A CloudEvents media type means structured (or batch) mode; otherwise ``ce-*`` attributes
    mean binary mode with the message's content type as ``datacontenttype``; a message with
    neither (plain JSON or no content type at all, as many NATS publishers send) is read as one
    structured event, or as a batch when the body is a JSON array.
    """
    media = media_type(content_type)
    if media.startswith(CLOUDEVENTS_MEDIA):
        return content_type or STRUCTURED
    if headers:
        return content_type or "application/json"
    return BATCH if body.lstrip()[:1] == b"[" else STRUCTURED


def store_batch(
    intake: Intake, deliveries: Sequence[Delivery], *, channel: str, actor: str
) -> list[Settle]:
    """Parse and store a batch of messages; returns how to settle each, in order.

    Parsing is the HTTP API's (``parse_request``) and storing is ``Intake.store_admitted``: all the
    good events of the batch, and the refused ones that share a reject context, commit in one
    transaction; refusals read with other headers follow in their own.
    """
    parsed = [_parse(intake, index, delivery) for index, delivery in enumerate(deliveries)]
    good: list[Item] = []
    contexts: dict[tuple[str | None, tuple[tuple[str, str], ...]], list[Item]] = {}
    for message in parsed:
        for item in message.items:
            if item.event is not None:
                good.append(item)
            else:
                contexts.setdefault(message.reject_context(), []).append(item)
    calls = list(contexts.items()) or [((None, ()), [])]
    calls[0] = (calls[0][0], [*good, *calls[0][1]])

    # Indexes of items whose transaction did not commit, or that wait for the backlog
    # to drain (bulk events past high water): their messages come again.
    failed: set[int] = set()
    for (content_type, headers), items in calls:
        if not items:
            continue
        try:
            outcomes = intake.store_admitted(
                items,
                content_type=content_type,
                headers=dict(headers),
                actor=actor,
                channel=channel,
            )
            failed.update(outcome.item.index for outcome in outcomes if outcome.deferred)
        except Exception:
            log.exception(
                "storing %d events from %s failed; they will come again", len(items), channel
            )
            failed.update(item.index for item in items)

    settles: list[Settle] = []
    for message in parsed:
        indexes = {item.index for item in message.items}
        if indexes & failed:
            settles.append(Settle.RETRY)
        elif message.items and all(item.event is None for item in message.items):
            settles.append(Settle.REJECTED)
        else:
            settles.append(Settle.ACK)
    return settles


@dataclass(frozen=True, slots=True)
class _Parsed:
    delivery: Delivery
    content_type: str
    is_batch: bool
    items: list[Item]

    def reject_context(self) -> tuple[str | None, tuple[tuple[str, str], ...]]:
        """The content type and headers a refusal is kept with, as ``Intake.submit`` keeps them,
        so that ``tidings rejects replay`` reads it the way it first came."""
        if self.is_batch:
            return STRUCTURED, ()
        return self.content_type, tuple(sorted(self.delivery.headers.items()))


def _parse(intake: Intake, position: int, delivery: Delivery) -> _Parsed:
    content_type = effective_content_type(delivery.content_type, delivery.headers, delivery.body)
    raw = delivery.body.decode("utf-8", errors="replace")
    try:
        if delivery.error is not None:
            raise delivery.error
        is_batch, items = parse_request(
            content_type, delivery.headers, delivery.body, max_batch=intake.max_batch
        )
    except RequestError as error:
        # The whole message is unreadable: one refusal, kept with its raw payload.
        refusal = EventError(error.code, error.detail, field=error.field)
        is_batch, items = False, [Item(0, None, refusal, raw, delivery.headers.get("ce-source"))]
    # Items are numbered across the batch so that one store call can hold many messages.
    base = position * (intake.max_batch + 1)
    numbered = [dataclasses.replace(item, index=base + item.index) for item in items]
    return _Parsed(delivery, content_type, is_batch, numbered)


class Broker(Protocol[M]):
    """The part of a consumer that differs from one broker to another."""

    async def fetch(self, limit: int) -> list[M]:
        """Up to ``limit`` messages; returns soon (an empty list) when none is waiting."""
        ...

    def read(self, message: M) -> Delivery: ...

    async def settle(self, messages: Sequence[tuple[M, Settle]], *, retry_delay: float) -> None:
        """Acknowledge, drop or hand back each message; never raises for one message."""
        ...


@dataclass
class Consumer(Generic[M]):
    """The loop: fetch a batch, store it off the event loop, settle it, until stopped."""

    broker: Broker[M]
    intake: Intake
    channel: str
    actor: str
    batch: int = 50
    retry_delay: float = 5.0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tally: Tally = field(default_factory=Tally)

    async def run(self) -> Tally:
        while not self.stop.is_set():
            messages = await self.broker.fetch(self.batch)
            if messages:
                await self.handle(messages)
        return self.tally

    async def handle(self, messages: list[M]) -> list[Settle]:
        """Store and settle one batch (a stop waits for this to finish)."""
        deliveries = [self.broker.read(message) for message in messages]
        settles = await asyncio.to_thread(
            store_batch, self.intake, deliveries, channel=self.channel, actor=self.actor
        )
        await self.broker.settle(
            list(zip(messages, settles, strict=True)), retry_delay=self.retry_delay
        )
        self.tally.add(settles)
        log.info(
            "%s: %d messages: %d stored, %d rejected, %d to come again",
            self.channel,
            len(settles),
            settles.count(Settle.ACK),
            settles.count(Settle.REJECTED),
            settles.count(Settle.RETRY),
        )
        return settles

    def stop_on_signals(self) -> None:
        """SIGINT and SIGTERM end the loop after the batch in hand is stored and settled."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)


class ConsumerOptions(Protocol):
    """What every broker's options tell the shared loop."""

    @property
    def actor(self) -> str: ...

    @property
    def batch(self) -> int: ...

    @property
    def retry_delay(self) -> float: ...


async def run_consumer(
    broker: Broker[M],
    intake: Intake,
    options: ConsumerOptions,
    *,
    channel: str,
    stop: asyncio.Event | None,
    on_signals: bool,
    tally: Tally | None,
) -> Tally:
    """Run the shared loop over ``broker`` until stopped; returns what it settled."""
    consumer = Consumer(
        broker,
        intake,
        channel=channel,
        actor=options.actor,
        batch=options.batch,
        retry_delay=options.retry_delay,
        stop=stop or asyncio.Event(),
        tally=tally or Tally(),
    )
    if on_signals:
        consumer.stop_on_signals()
    return await consumer.run()
