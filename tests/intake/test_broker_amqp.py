"""`tidings consume amqp` against the real RabbitMQ server: ack after commit, once per event."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from tests.support.events import CAMILLE, SOURCE, order_placed, refund_authorized
from tidings.cli import main
from tidings.db.schema import delivery_jobs, events, notifications, rejects
from tidings.intake.brokers.amqp import Options, consume, delivery
from tidings.intake.brokers.common import Settle, Tally, store_batch
from tidings.runtime import Runtime

URL = "amqp://guest:guest@127.0.0.1:5672/"
STRUCTURED = "application/cloudevents+json"
Publish = list[aio_pika.Message]


def count(runtime: Runtime, table: Any) -> int:
    with runtime.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"tidings-test-{uuid.uuid4().hex[:12]}"

    async def declare(delete: bool) -> None:
        connection = await aio_pika.connect(URL)
        channel = await connection.channel()
        if delete:
            await channel.queue_delete(name)
        else:
            await channel.declare_queue(name)
        await connection.close()

    asyncio.run(declare(False))
    yield name
    asyncio.run(declare(True))


def structured(event: Any, content_type: str | None = STRUCTURED) -> aio_pika.Message:
    return aio_pika.Message(json.dumps(event).encode(), content_type=content_type)


async def ready(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return int(declared.declaration_result.message_count or 0)


def run(
    runtime: Runtime,
    queue: str,
    messages: Publish,
    until: Callable[[Tally], bool],
    *,
    before: Callable[[aio_pika.abc.AbstractChannel], Awaitable[None]] | None = None,
    timeout: float = 10.0,
) -> Tally:
    """Publish, run the consumer until ``until`` holds, stop it; the queue must then be empty
    (a message left unacknowledged would be back in it once the consumer is gone)."""

    async def main() -> Tally:
        connection = await aio_pika.connect(URL)
        try:
            channel = await connection.channel()
            if before is not None:
                await before(channel)
            for message in messages:
                await channel.default_exchange.publish(message, routing_key=queue)
            stop = asyncio.Event()
            options = Options(queue=queue, url=URL, batch=10, retry_delay=0.2, poll=0.1)
            tally = Tally()
            task = asyncio.create_task(consume(runtime.intake, options, stop=stop, tally=tally))
            deadline = time.monotonic() + timeout
            while not await asyncio.to_thread(until, tally):
                assert not task.done(), task
                assert time.monotonic() < deadline, f"not done in {timeout}s: {tally}"
                await asyncio.sleep(0.02)
            stop.set()
            await task
            assert await ready(channel, queue) == 0, tally
            return tally
        finally:
            await connection.close()

    return asyncio.run(main())


def test_structured_event_is_stored_once_queued_and_acked(runtime: Runtime, queue: str) -> None:
    event = refund_authorized("1042", customer=CAMILLE)
    tally = run(runtime, queue, [structured(event)], lambda t: t.acked == 1)
    assert (tally.acked, tally.rejected, tally.retried) == (1, 0, 0)
    assert count(runtime, notifications) == 2  # email and in-app
    assert count(runtime, delivery_jobs) == 2


def test_the_same_event_published_twice_is_stored_once(runtime: Runtime, queue: str) -> None:
    event = refund_authorized("7", customer=CAMILLE)
    messages = [structured(event), structured(event, content_type=None)]
    tally = run(runtime, queue, messages, lambda t: t.acked == 2)
    assert tally.acked == 2
    assert count(runtime, events) == 1
    assert count(runtime, notifications) == 2


def test_a_crash_after_commit_before_ack_requeues_and_is_acked_as_a_duplicate(
    runtime: Runtime, queue: str
) -> None:
    event = refund_authorized("9", customer=CAMILLE)

    async def store_then_crash(channel: aio_pika.abc.AbstractChannel) -> None:
        await channel.default_exchange.publish(structured(event), routing_key=queue)
        connection = await aio_pika.connect(URL)
        own = await connection.channel()
        await asyncio.sleep(0.05)
        message = await (await own.get_queue(queue)).get(no_ack=False)
        assert message is not None
        settles = await asyncio.to_thread(
            store_batch, runtime.intake, [delivery(message)], channel="amqp", actor="t"
        )
        assert settles == [Settle.ACK]
        await connection.close()  # gone before the ack: the server requeues it

    tally = run(runtime, queue, [], lambda t: t.acked == 1, before=store_then_crash)
    assert tally.acked == 1
    assert count(runtime, events) == 1
    assert count(runtime, notifications) == 2


def test_poison_messages_are_kept_in_the_reject_log_and_acked(runtime: Runtime, queue: str) -> None:
    refused = refund_authorized("3", amount=12.5)  # type: ignore[arg-type]
    messages = [
        aio_pika.Message(b"\xff not json", content_type=STRUCTURED),
        structured(refused),
    ]
    tally = run(runtime, queue, messages, lambda t: t.rejected == 2)
    assert (tally.acked, tally.rejected, tally.retried) == (0, 2, 0)
    with runtime.engine.connect() as conn:
        kept = {row.code: row for row in conn.execute(select(rejects))}
    assert kept["invalid_json"].payload == "\ufffd not json"  # the bytes, as the API keeps them
    assert kept["invalid_json"].channel == "amqp"
    assert kept["invalid_data"].field == "data.amount"


def test_a_database_failure_is_not_acked_and_the_message_is_stored_later(
    runtime: Runtime, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = runtime.intake.store_items
    failures = []

    def fail_once(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise OperationalError("INSERT INTO events", {}, Exception("database is down"))
        return store(*args, **kwargs)

    monkeypatch.setattr(runtime.intake, "store_items", fail_once)
    event = refund_authorized("11", customer=CAMILLE)
    tally = run(runtime, queue, [structured(event)], lambda t: t.acked == 1)
    assert (tally.retried, tally.acked) == (1, 1)
    assert count(runtime, notifications) == 2


def test_a_batch_message_accepts_and_refuses_each_event_on_its_own(
    runtime: Runtime, queue: str
) -> None:
    good = order_placed("1", CAMILLE)
    bad = refund_authorized("1", amount=12.5)  # type: ignore[arg-type]
    batch = aio_pika.Message(
        json.dumps([good, bad]).encode(), content_type="application/cloudevents-batch+json"
    )
    tally = run(runtime, queue, [batch, structured(good)], lambda t: t.acked == 2)
    assert tally.acked == 2
    assert count(runtime, events) == 1


def test_binary_mode_reads_cloudevents_application_properties(runtime: Runtime, queue: str) -> None:
    messages = []
    for separator, order in ((":", "40"), ("_", "41")):
        event = refund_authorized(order, customer=CAMILLE)
        headers: dict[str, Any] = {
            f"cloudEvents{separator}specversion": "1.0",
            f"cloudEvents{separator}id": event["id"],
            f"cloudEvents{separator}source": SOURCE,
            f"cloudEvents{separator}type": event["type"],
            f"cloudEvents{separator}time": datetime(2026, 11, 21, 10, tzinfo=UTC),
        }
        body = json.dumps(event["data"]).encode()
        messages.append(aio_pika.Message(body, content_type="application/json", headers=headers))
    run(runtime, queue, messages, lambda t: t.acked == 2)
    with runtime.engine.connect() as conn:
        rows = conn.execute(select(events).order_by(events.c.ce_id)).all()
    assert [(row.ce_id, row.subject) for row in rows] == [
        ("refund-40", "order/40"),
        ("refund-41", "order/41"),
    ]
    assert rows[0].time == datetime(2026, 11, 21, 10, tzinfo=UTC)


def test_consume_amqp_help() -> None:
    result = CliRunner().invoke(main, ["consume", "amqp", "--help"])
    assert result.exit_code == 0, result.output
    assert "--queue" in result.output
    assert "--prefetch" in result.output
