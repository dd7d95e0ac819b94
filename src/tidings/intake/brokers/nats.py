"""Intake from NATS JetStream: ``tidings consume nats --stream ORDERS``.

Usage::

    tidings consume nats --stream ORDERS [--subject 'orders.>'] [--durable tidings]
        [--url nats://127.0.0.1:4222] [--batch 50] [--max-ack-pending 200]
        [--ack-wait 30] [--retry-delay 5]

``--url`` defaults to ``TIDINGS_NATS_URL``, else ``nats://127.0.0.1:4222``. The stream must
exist. The consumer is a durable pull consumer (``--durable``, default ``tidings``) with
explicit acknowledgement, created on first start (filtered on ``--subject`` when given, else
every subject of the stream) and shared by every ``tidings consume nats`` that names it, so
several can run side by side. Its ``max_ack_pending`` bounds what is in flight: a slow database
holds messages in the stream instead of in memory.

Messages (CloudEvents NATS protocol binding, with the JSON event format):

- structured mode: a ``Content-Type`` header starting ``application/cloudevents``, or no such
  header and no ``ce-*`` headers; the payload is one CloudEvent in JSON;
- batch: ``Content-Type: application/cloudevents-batch+json``, or a payload that is a JSON
  array of CloudEvents (each accepted or refused on its own, as on the HTTP API);
- binary mode (NATS 2.2 headers): ``ce-specversion``, ``ce-id``, ``ce-source``, ``ce-type``...
  headers, percent-decoded as the binding says (a value that is not UTF-8 once decoded is
  refused), and JSON data as the payload.

Each batch (up to ``--batch`` messages fetched at once) is parsed and stored by the same code
as ``POST /api/events``, its events in one transaction. Then each message is settled:

- ``ack`` once what it carried is committed. A crash between commit and ack makes JetStream
  deliver it again after ``--ack-wait`` seconds; it is then a duplicate under (source, id),
  stores nothing and is acked.
- ``term`` when nothing in it can be accepted (not JSON, not a valid CloudEvent, refused by
  the event schema): it is kept first in the reject log with its payload and reason, where
  ``tidings rejects list`` shows it and ``tidings rejects replay`` tries it again, and it is
  terminated rather than acked so the server records the refusal (JetStream publishes a
  ``MSG_TERMINATED`` advisory that monitoring can watch) while never redelivering it.
- ``nak`` with a delay of ``--retry-delay`` seconds when it could not be stored (the database
  is down): nothing of it is lost, it comes again later.

SIGINT or SIGTERM stops after the batch in hand is stored and settled; the command exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from tidings.intake.brokers.common import (
    ConsumeError,
    Delivery,
    Settle,
    Tally,
    run_consumer,
)
from tidings.intake.cloudevents_http import RequestError
from tidings.intake.intake import Intake

log = logging.getLogger(__name__)

URL_ENV = "TIDINGS_NATS_URL"
DEFAULT_URL = "nats://127.0.0.1:4222"
CHANNEL = "nats"
_ESCAPE = re.compile(r"\\(.)")


def default_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_URL


@dataclass(frozen=True, slots=True)
class Options:
    stream: str
    subject: str | None = None
    durable: str = "tidings"
    url: str | None = None
    batch: int = 50
    max_ack_pending: int = 200
    ack_wait: float = 30.0
    retry_delay: float = 5.0
    poll: float = 1.0  # how long one fetch waits for a first message (and a stop for it)

    @property
    def actor(self) -> str:
        return f"nats:{self.stream}/{self.durable}"


def delivery(msg: Msg) -> Delivery:
    """A JetStream message as the intake reads it."""
    headers = msg.headers or {}
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    attributes: dict[str, str] = {}
    try:
        for key, value in headers.items():
            if key.lower().startswith("ce-"):
                attributes[key.lower()] = header_value(value)
    except UnicodeDecodeError:
        error = RequestError(
            400,
            "invalid_header",
            f"The header '{key}' is not UTF-8 once percent-decoded. Encode attribute values "
            "as the CloudEvents NATS binding says (UTF-8, then percent-encoding).",
            field=key,
        )
        return Delivery(msg.data, content_type, attributes, error)
    return Delivery(msg.data, content_type, attributes)


def header_value(value: str) -> str:
    """A binary-mode attribute value: unquoted if quoted, then percent-decoded once."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = _ESCAPE.sub(r"\1", value[1:-1])
    return unquote(value, errors="strict")


class JetStreamBroker:
    def __init__(self, nc: Client, sub: JetStreamContext.PullSubscription, poll: float) -> None:
        self.nc = nc
        self.sub = sub
        self.poll = poll

    async def fetch(self, limit: int) -> list[Msg]:
        try:
            return await self.sub.fetch(limit, timeout=self.poll)
        except TimeoutError:  # nothing waiting (nats' own TimeoutError is one too)
            return []
        except nats.errors.Error as error:
            # Disconnected: the client reconnects by itself; unacked messages come again.
            log.warning("nats: fetch failed (%s); trying again", error)
            await asyncio.sleep(self.poll)
            return []

    def read(self, message: Msg) -> Delivery:
        return delivery(message)

    async def settle(self, messages: Sequence[tuple[Msg, Settle]], *, retry_delay: float) -> None:
        for msg, settle in messages:
            try:
                if settle is Settle.ACK:
                    await msg.ack()
                elif settle is Settle.REJECTED:
                    await msg.term()
                else:
                    await msg.nak(delay=retry_delay)
            except nats.errors.Error as error:
                # Stored already: the redelivery will be a duplicate, acked then.
                log.warning("nats: could not %s a message (%s)", settle.value, error)
        try:
            await self.nc.flush(timeout=5)
        except nats.errors.Error as error:
            log.warning("nats: acknowledgements not confirmed (%s)", error)


async def subscribe(js: JetStreamContext, options: Options) -> JetStreamContext.PullSubscription:
    """Create (or update) the durable pull consumer and bind to it."""
    config = ConsumerConfig(
        name=options.durable,
        durable_name=options.durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=options.ack_wait,
        max_ack_pending=options.max_ack_pending,
        filter_subject=options.subject,
    )
    try:
        await js.add_consumer(options.stream, config)
    except nats.js.errors.NotFoundError as error:
        raise ConsumeError(
            f"nats: no stream '{options.stream}' ({error.description}). Create it first, "
            f"e.g. `nats stream add {options.stream} --subjects 'orders.>'`."
        ) from error
    except nats.js.errors.BadRequestError as error:
        # It exists with settings the server will not change in place: use it as it is.
        log.warning(
            "nats: consumer '%s' kept its own settings (%s)", options.durable, error.description
        )
    return await js.pull_subscribe_bind(options.durable, stream=options.stream)


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
        nc = await nats.connect(url, name="tidings-consume", allow_reconnect=True)
    except (OSError, nats.errors.Error) as error:
        raise ConsumeError(f"nats: cannot connect to {url} ({error!r})") from error
    try:
        sub = await subscribe(nc.jetstream(), options)
        broker = JetStreamBroker(nc, sub, options.poll)
        return await run_consumer(
            broker, intake, options, channel=CHANNEL, stop=stop, on_signals=on_signals, tally=tally
        )
    finally:
        # Every batch was flushed when settled; drain would wait on the idle pull request.
        await nc.close()
