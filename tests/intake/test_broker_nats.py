"""`tidings consume nats` against the real JetStream server: ack after commit, once per event."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from click.testing import CliRunner
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo, StreamConfig
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from tests.support import processes
from tests.support.events import CAMILLE, order_placed, refund_authorized
from tidings.cli import main
from tidings.db.schema import delivery_jobs, events, notifications, rejects
from tidings.intake.brokers.common import Settle, Tally, store_batch
from tidings.intake.brokers.nats import Options, consume, delivery, subscribe
from tidings.runtime import Runtime

URL = "nats://127.0.0.1:4222"
STRUCTURED = {"Content-Type": "application/cloudevents+json"}
Publish = list[tuple[bytes, dict[str, str] | None]]


def count(runtime: Runtime, table: Any) -> int:
    with runtime.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


@pytest.fixture
def stream() -> Iterator[str]:
    name = f"T{uuid.uuid4().hex[:12].upper()}"

    async def create() -> None:
        nc = await nats.connect(URL)
        await nc.jetstream().add_stream(StreamConfig(name=name, subjects=[f"{name}.>"]))
        await nc.close()

    async def delete() -> None:
        nc = await nats.connect(URL)
        await nc.jetstream().delete_stream(name)
        await nc.close()

    asyncio.run(create())
    yield name
    asyncio.run(delete())


def options(stream: str) -> Options:
    return Options(
        stream=stream, subject=f"{stream}.>", url=URL, ack_wait=0.5, retry_delay=0.2, poll=0.1
    )


async def publish(js: JetStreamContext, stream: str, messages: Publish) -> None:
    for body, headers in messages:
        await js.publish(f"{stream}.orders", body, headers=headers)


def run(
    runtime: Runtime,
    stream: str,
    messages: Publish,
    until: Callable[[Tally], bool],
    *,
    before: Callable[[JetStreamContext], Awaitable[None]] | None = None,
    timeout: float = 10.0,
) -> tuple[Tally, ConsumerInfo]:
    """Publish, run the consumer until ``until`` holds and nothing is pending, then stop it."""

    async def main() -> tuple[Tally, ConsumerInfo]:
        nc = await nats.connect(URL)
        js = nc.jetstream()
        try:
            if before is not None:
                await before(js)
            await publish(js, stream, messages)
            stop = asyncio.Event()
            tally = Tally()
            task = asyncio.create_task(
                consume(runtime.intake, options(stream), stop=stop, tally=tally)
            )
            deadline = time.monotonic() + timeout
            while True:
                assert not task.done(), task
                assert time.monotonic() < deadline, f"not done in {timeout}s: {tally}"
                if until(tally):
                    info = await js.consumer_info(stream, "tidings")
                    if info.num_pending == 0 and info.num_ack_pending == 0:
                        break
                await asyncio.sleep(0.02)
            stop.set()
            await task
            return tally, await js.consumer_info(stream, "tidings")
        finally:
            await nc.close()

    return asyncio.run(main())


def test_structured_event_is_stored_once_queued_and_acked(runtime: Runtime, stream: str) -> None:
    event = refund_authorized("1042", customer=CAMILLE)
    tally, info = run(
        runtime,
        stream,
        [(json.dumps(event).encode(), STRUCTURED)],
        lambda t: t.acked == 1,
    )
    assert (tally.acked, tally.rejected, tally.retried) == (1, 0, 0)
    assert info.num_redelivered == 0
    assert count(runtime, notifications) == 2  # email and in-app
    assert count(runtime, delivery_jobs) == 2
    with runtime.engine.connect() as conn:
        row = conn.execute(select(events)).one()
    assert (row.source, row.ce_id) == (event["source"], event["id"])


def test_the_same_event_published_twice_is_stored_once(runtime: Runtime, stream: str) -> None:
    body = json.dumps(refund_authorized("7", customer=CAMILLE)).encode()
    tally, _ = run(
        runtime,
        stream,
        [(body, STRUCTURED), (body, None)],  # the second without a content type
        lambda t: t.acked == 2,
    )
    assert tally.acked == 2
    assert count(runtime, events) == 1
    assert count(runtime, notifications) == 2


def test_a_crash_after_commit_before_ack_redelivers_and_is_acked_as_a_duplicate(
    runtime: Runtime, stream: str
) -> None:
    event = refund_authorized("9", customer=CAMILLE)

    async def store_then_crash(js: JetStreamContext) -> None:
        await publish(js, stream, [(json.dumps(event).encode(), STRUCTURED)])
        nc = await nats.connect(URL)
        sub = await subscribe(nc.jetstream(), options(stream))
        fetched = await sub.fetch(1, timeout=2)
        settles = await asyncio.to_thread(
            store_batch, runtime.intake, [delivery(m) for m in fetched], channel="nats", actor="t"
        )
        assert settles == [Settle.ACK]
        await nc.close()  # gone before the ack

    tally, _ = run(runtime, stream, [], lambda t: t.acked == 1, before=store_then_crash)
    assert tally.acked == 1  # the redelivery, after ack_wait
    assert count(runtime, events) == 1
    assert count(runtime, notifications) == 2


def test_poison_messages_are_kept_in_the_reject_log_and_terminated(
    runtime: Runtime, stream: str
) -> None:
    refused = refund_authorized("3", amount=12.5)  # type: ignore[arg-type]
    tally, info = run(
        runtime,
        stream,
        [(b'{"specversion": "1.0", "id": ', STRUCTURED), (json.dumps(refused).encode(), None)],
        lambda t: t.rejected == 2,
    )
    assert (tally.acked, tally.rejected, tally.retried) == (0, 2, 0)
    assert info.num_redelivered == 0
    assert count(runtime, events) == 0
    with runtime.engine.connect() as conn:
        kept = {row.code: row for row in conn.execute(select(rejects))}
    assert kept["invalid_json"].payload == '{"specversion": "1.0", "id": '
    assert kept["invalid_json"].channel == "nats"
    assert kept["invalid_data"].field == "data.amount"
    assert json.loads(kept["invalid_data"].payload)["data"]["amount"] == 12.5


def test_a_database_failure_is_not_acked_and_the_message_is_stored_later(
    runtime: Runtime, stream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = runtime.intake.store_items
    failures = []

    def fail_once(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise OperationalError("INSERT INTO events", {}, Exception("database is down"))
        return store(*args, **kwargs)

    monkeypatch.setattr(runtime.intake, "store_items", fail_once)
    body = json.dumps(refund_authorized("11", customer=CAMILLE)).encode()
    tally, _ = run(runtime, stream, [(body, STRUCTURED)], lambda t: t.acked == 1)
    assert (tally.retried, tally.acked) == (1, 1)
    assert count(runtime, events) == 1
    assert count(runtime, notifications) == 2


def test_a_batch_array_accepts_and_refuses_each_event_on_its_own(
    runtime: Runtime, stream: str
) -> None:
    good = order_placed("1", CAMILLE)
    bad = refund_authorized("1", amount=12.5)  # type: ignore[arg-type]
    batch = json.dumps([good, bad, good]).encode()
    tally, _ = run(
        runtime,
        stream,
        [(batch, {"Content-Type": "application/cloudevents-batch+json"})],
        lambda t: t.acked == 1,
    )
    assert tally.acked == 1  # the message: its good event stored, its bad one kept
    with runtime.engine.connect() as conn:
        kept = conn.execute(select(rejects)).one()
    assert (kept.code, kept.content_type) == ("invalid_data", "application/cloudevents+json")


def test_binary_mode_reads_percent_encoded_ce_headers(runtime: Runtime, stream: str) -> None:
    event = refund_authorized("77", customer=CAMILLE, id="refund 77 é")
    headers = {
        "Content-Type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "refund%2077%20%C3%A9",
        "ce-source": event["source"],
        "ce-type": event["type"],
        "ce-time": event["time"],
    }
    run(
        runtime,
        stream,
        [(json.dumps(event["data"]).encode(), headers)],
        lambda t: t.acked == 1,
    )
    with runtime.engine.connect() as conn:
        row = conn.execute(select(events)).one()
    assert (row.ce_id, row.subject) == ("refund 77 é", "order/77")


def test_consume_nats_help() -> None:
    result = CliRunner().invoke(main, ["consume", "nats", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--stream", "--subject", "--durable", "--url", "--max-ack-pending"):
        assert option in result.output


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # a process start: one backend
def test_the_command_stops_on_sigterm_with_exit_0(
    runtime: Runtime, stream: str, tmp_path: Path
) -> None:
    async def send() -> None:
        nc = await nats.connect(URL)
        body = json.dumps(refund_authorized("21", customer=CAMILLE)).encode()
        await publish(nc.jetstream(), stream, [(body, STRUCTURED)])
        await nc.close()

    asyncio.run(send())
    env = processes.tidings_env(
        database_url=runtime.settings.database_url,
        smtp_url=runtime.settings.effective_smtp_url,
        var_dir=tmp_path,
        nats_url=URL,
    )
    log = tmp_path / "consume.log"
    process = processes.start(["consume", "nats", "--stream", stream], env, log)
    try:
        processes.wait_until(
            lambda: count(runtime, events) == 1, timeout=20, what="the event stored"
        )
    finally:
        processes.stop(process)
    assert process.returncode == 0, log.read_text()
    assert "stopped: 1 stored, 0 rejected" in log.read_text()
