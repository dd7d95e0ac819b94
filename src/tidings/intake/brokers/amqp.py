"""Intake from RabbitMQ (AMQP 0-9-1): ``tidings consume amqp --queue orders``.

Usage::

    tidings consume amqp --queue orders [--url amqp://guest:guest@127.0.0.1:5672/]
        [--batch 50] [--prefetch 100] [--retry-delay 5]

``--url`` defaults to ``TIDINGS_AMQP_URL``, else ``amqp://guest:guest@127.0.0.1:5672/``. The
queue is used as it is when it exists (bind it to your exchange as you need); otherwise it is
declared durable. The channel's prefetch (``--prefetch``, at least ``--batch``) bounds how many
unacknowledged messages this consumer holds: a slow database leaves the rest in the queue.

Messages (CloudEvents AMQP protocol binding, with the JSON event format; RabbitMQ carries the
binding's application-properties as message headers):

- structured mode: ``content_type`` starting ``application/cloudevents``, the body one
  CloudEvent in JSON; ``application/cloudevents-batch+json`` is a batch;
- binary mode: the attributes in headers named ``cloudEvents:<attribute>`` or
  ``cloudEvents_<attribute>`` (the JMS-compatible separator), as AMQP strings, numbers,
  booleans or timestamps, ``content_type`` as ``datacontenttype`` and JSON data as the body;
- a message with neither a CloudEvents content type nor such headers is read as structured,
  or as a batch when its body is a JSON array.

Each batch (up to ``--batch`` messages that are waiting) is parsed and stored by the same code
as ``POST /api/events``, its events in one transaction. Then each message is settled:

- ``basic.ack`` once what it carried is committed. A crash between commit and ack returns the
  message to the queue; it is then a duplicate under (source, id), stores nothing and is acked.
- ``basic.ack`` also when nothing in it can be accepted (not JSON, not a valid CloudEvent,
  refused by the event schema): it is kept first in the reject log with its payload and reason,
  where ``tidings rejects list`` shows it and ``tidings rejects replay`` tries it again. It is
  not rejected to a dead-letter exchange, which would keep a second copy of it.
- ``basic.nack`` with requeue after ``--retry-delay`` seconds when it could not be stored (the
  database is down): nothing is lost, and while it waits the prefetch holds back the rest.

SIGINT or SIGTERM stops after the batch in hand is stored and settled; messages received but
not started are returned to the queue; the command exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue

from tidings.intake.brokers.common import (
    ConsumeError,
    Delivery,
    Settle,
    Tally,
    run_consumer,
)
from tidings.intake.intake import Intake

log = logging.getLogger(__name__)

URL_ENV = "TIDINGS_AMQP_URL"
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
CHANNEL = "amqp"
PREFIXES = ("cloudevents:", "cloudevents_")
_SETTLE_ERRORS = (aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError, ConnectionError)


def default_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_URL


@dataclass(frozen=True, slots=True)
class Options:
    queue: str
    url: str | None = None
    batch: int = 50
    prefetch: int = 100
    retry_delay: float = 5.0
    poll: float = 1.0  # how long to wait for a first message (and a stop for it)

    @property
    def actor(self) -> str:
        return f"amqp:{self.queue}"


def delivery(message: AbstractIncomingMessage) -> Delivery:
    """A RabbitMQ message as the intake reads it."""
    return Delivery(message.body, message.content_type, attributes(message.headers or {}))


def attributes(headers: Mapping[str, Any]) -> dict[str, str]:
    """Binary-mode attributes from ``cloudEvents:``/``cloudEvents_`` headers, as ``ce-*``."""
    found: dict[str, str] = {}
    for key, value in headers.items():
        lower = key.lower()
        for prefix in PREFIXES:
            if lower.startswith(prefix) and len(lower) > len(prefix):
                found["ce-" + lower[len(prefix) :]] = canonical_string(value)
    return found


def canonical_string(value: Any) -> str:
    """An AMQP-typed attribute value in its CloudEvents canonical string form."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{tail}"


class RabbitBroker:
    def __init__(self, queue: AbstractQueue, poll: float) -> None:
        self.queue = queue
        self.poll = poll
        # Never more than the prefetch: the server sends no more until some are settled.
        self.received: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self.tag: str | None = None

    async def start(self) -> None:
        self.tag = await self.queue.consume(self.received.put)

    async def fetch(self, limit: int) -> list[AbstractIncomingMessage]:
        try:
            first = await asyncio.wait_for(self.received.get(), timeout=self.poll)
        except TimeoutError:
            return []
        batch = [first]
        while len(batch) < limit and not self.received.empty():
            batch.append(self.received.get_nowait())
        return batch

    def read(self, message: AbstractIncomingMessage) -> Delivery:
        return delivery(message)

    async def settle(
        self, messages: Sequence[tuple[AbstractIncomingMessage, Settle]], *, retry_delay: float
    ) -> None:
        if any(settle is Settle.RETRY for _, settle in messages):
            # Requeued at once it would be back at once: wait, holding the prefetch meanwhile.
            await asyncio.sleep(retry_delay)
        for message, settle in messages:
            try:
                if settle is Settle.RETRY:
                    await message.nack(requeue=True)
                else:
                    await message.ack()
            except _SETTLE_ERRORS as error:
                # The channel is gone: the server requeued it; a stored one comes back a duplicate.
                log.warning("amqp: could not settle a message (%s)", error)

    async def stop(self) -> None:
        """Stop deliveries, then hand back what was received but not started."""
        if self.tag is not None:
            with contextlib.suppress(*_SETTLE_ERRORS):
                await self.queue.cancel(self.tag)
        while not self.received.empty():
            with contextlib.suppress(*_SETTLE_ERRORS):
                await self.received.get_nowait().nack(requeue=True)


async def open_queue(connection: AbstractConnection, name: str) -> AbstractQueue:
    """The queue as it is when it exists (its own arguments kept), else a new durable one."""
    probe = await connection.channel()
    try:
        await probe.declare_queue(name, passive=True)
        exists = True
    except aio_pika.exceptions.ChannelClosed:
        exists = False
    finally:
        with contextlib.suppress(*_SETTLE_ERRORS):
            await probe.close()
    channel = await connection.channel()
    if exists:
        return await channel.declare_queue(name, passive=True)
    return await channel.declare_queue(name, durable=True)


async def consume(
    intake: Intake,
    options: Options,
    *,
    stop: asyncio.Event | None = None,
    on_signals: bool = False,
    tally: Tally | None = None,
) -> Tally:
    """Run until ``stop`` is set (or a signal arrives, with ``on_signals``); ``tally`` counts
    the messages settled so far, for a caller that watches progress."""
    url = options.url or default_url()
    try:
        connection = await aio_pika.connect_robust(url)
    except (OSError, *_SETTLE_ERRORS) as error:
        raise ConsumeError(f"amqp: cannot connect to {_safe(url)} ({error!r})") from error
    try:
        queue = await open_queue(connection, options.queue)
        await queue.channel.set_qos(prefetch_count=max(options.prefetch, options.batch))
        broker = RabbitBroker(queue, options.poll)
        await broker.start()
        try:
            return await run_consumer(
                broker,
                intake,
                options,
                channel=CHANNEL,
                stop=stop,
                on_signals=on_signals,
                tally=tally,
            )
        finally:
            await broker.stop()
    finally:
        await connection.close()
