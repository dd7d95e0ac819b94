"""Rows against peers: other software doing one part of Tidings' work, on the same machine
in the same run.

* ``peer-queue``: the delivery queue against procrastinate, a PostgreSQL job queue, on the
  same PostgreSQL server: jobs claimed and completed per second, no sending.
* ``peer-smtp``: sending mail over SMTP against Apprise, to the same outside sink.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import bench.rows_postgres as rows_postgres  # its names are looked up when a row runs
from bench.load import closed_loop, http_request
from bench.rows import (
    BATCH,
    BATCH_SIZE,
    HOST,
    SMTP_CONNECTIONS,
    Line,
    Options,
    RowResult,
    free_port,
    load_summary,
    refund_event,
    run_load,
    start_sink,
    start_tidings,
    tidings_cli,
    tidings_env,
    wait_drained,
    workspace,
)

CLAIM_LIMIT = 50
CLAIM_LOOPS = 2
LEASE = timedelta(seconds=30)
PROCRASTINATE_CONCURRENCY = 2
INSERT_CHUNK = 5000
DEFER_CHUNK = 1000


# --- row: the delivery queue against procrastinate ----------------------------------------


def peer_queue(options: Options) -> RowResult:
    """N due delivery jobs, claimed 50 at a time by two concurrent loops of the real
    ``tidings.delivery.queue.claim`` (each claim in its own transaction, then one UPDATE
    marking the claimed jobs sent, as the worker records outcomes), against N procrastinate
    jobs of a task that does nothing, run by one procrastinate worker with concurrency 2.
    Jobs claimed and completed per second, each on a fresh database of the same server."""
    n = 50_000 if options.full else 5_000
    label = f"queue, {n:,} due jobs: claimed+completed/s"
    info = rows_postgres.server_info()
    if isinstance(info, str):
        options.log(f"peer-queue: skipped, {info}")
        return rows_postgres.unavailable("peer-queue", [(label, "/s", "> 1.00 x")], info)

    with workspace("peer-queue") as (tmp, _processes):
        with rows_postgres.postgres_database("queue", options.log) as url:
            tidings_cli(["migrate"], tidings_env(tmp, free_port(), database_url=url))
            options.log(f"peer-queue: tidings, {n:,} queued jobs")
            filled = fill_queue(url, n)
            options.log(f"peer-queue: tidings, {CLAIM_LOOPS} claim loops of {CLAIM_LIMIT}")
            tidings = claim_loops(url, n)
        with rows_postgres.postgres_database("procrastinate", options.log) as url:
            options.log(
                f"peer-queue: procrastinate, {n:,} jobs, "
                f"worker concurrency {PROCRASTINATE_CONCURRENCY}"
            )
            peer = procrastinate_run(url, n)

    rate = tidings["completed"] / tidings["seconds"]
    base_rate = peer["succeeded"] / peer["seconds"]
    return RowResult(
        "peer-queue",
        [
            Line(
                label,
                rate,
                "/s",
                base_rate,
                "> 1.00 x",
                rate > base_rate and tidings["completed"] == n and peer["succeeded"] == n,
            )
        ],
        {
            "jobs": n,
            "postgres": info,
            "tidings": {
                **tidings,
                "per_second": round(rate, 1),
                "fill_seconds": round(filled, 3),
                "claim_limit": CLAIM_LIMIT,
                "lane": "transactional",
            },
            "procrastinate": {**peer, "per_second": round(base_rate, 1)},
        },
    )


def fill_queue(url: str, n: int) -> float:
    """One event, ``n`` queued email notifications about it and their due delivery jobs,
    inserted with executemany; returns the seconds it took."""
    from tidings.db.engine import create_disposable_engine
    from tidings.db.schema import delivery_jobs, events, notifications
    from tidings.db.types import utcnow
    from tidings.engine.rules import Lane

    run = uuid.uuid4().hex[:8]
    now = utcnow()
    due = now - timedelta(seconds=1)
    event_id = uuid.uuid4().hex
    event = refund_event(run, 0)
    started = time.perf_counter()
    engine = create_disposable_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                events.insert(),
                {
                    "id": event_id,
                    "source": event["source"],
                    "ce_id": event["id"],
                    "type": event["type"],
                    "time": now,
                    "data": event["data"],
                    "order_id": event["data"]["order_id"],
                    "received_at": now,
                },
            )
            for start in range(0, n, INSERT_CHUNK):
                ids = [uuid.uuid4().hex for _ in range(start, min(n, start + INSERT_CHUNK))]
                conn.execute(
                    notifications.insert(),
                    [
                        {
                            "id": nid,
                            "event_id": event_id,
                            "rule_id": "bench-queue",
                            "kind": "order_confirmed",
                            "category": "transactional",
                            "priority": "transactional",
                            "channel": "email",
                            "recipient": f"customer.{run}.{start + i}@example.com",
                            "locale": "en",
                            "time_zone": "UTC",
                            "status": "queued",
                            "dedupe_key": f"bench-queue:{run}:{start + i}",
                            "created_at": now,
                            "updated_at": now,
                        }
                        for i, nid in enumerate(ids)
                    ],
                )
                conn.execute(
                    delivery_jobs.insert(),
                    [
                        {
                            "id": uuid.uuid4().hex,
                            "notification_id": nid,
                            "channel": "email",
                            "lane": int(Lane.transactional),
                            "status": "queued",
                            "run_at": due,
                            "attempts": 0,
                            "max_attempts": 8,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for nid in ids
                    ],
                )
    finally:
        engine.dispose()
    return time.perf_counter() - started


def claim_loops(url: str, n: int) -> dict[str, Any]:
    """``CLAIM_LOOPS`` threads, each claiming until the queue is empty; SKIP LOCKED lets
    them share it without waiting on each other."""
    from sqlalchemy import func, select, update

    from tidings.db.engine import create_db_engine
    from tidings.db.schema import delivery_jobs
    from tidings.db.types import utcnow
    from tidings.delivery.queue import claim

    engine = create_db_engine(url, pool_size=CLAIM_LOOPS)
    stop = threading.Event()
    counts = [0] * CLAIM_LOOPS
    claims = [0] * CLAIM_LOOPS
    errors: list[BaseException] = []

    def loop(k: int) -> None:
        try:
            while not stop.is_set():
                with engine.begin() as conn:
                    jobs = claim(
                        conn,
                        worker_id=f"bench-claim-{k}",
                        limit=CLAIM_LIMIT,
                        now=utcnow(),
                        lease=LEASE,
                    )
                if not jobs:
                    return
                with engine.begin() as conn:
                    conn.execute(
                        update(delivery_jobs)
                        .where(delivery_jobs.c.id.in_([job.job_id for job in jobs]))
                        .values(status="sent", updated_at=utcnow())
                    )
                counts[k] += len(jobs)
                claims[k] += 1
        except BaseException as exc:  # re-raised in the bench's thread
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(CLAIM_LOOPS)]
    try:
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        if errors:
            raise errors[0]
        with engine.connect() as conn:
            statuses = dict(
                conn.execute(
                    select(delivery_jobs.c.status, func.count()).group_by(delivery_jobs.c.status)
                ).all()
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        engine.dispose()
    return {
        "seconds": round(elapsed, 3),
        "completed": sum(counts),
        "per_loop": counts,
        "claims_per_loop": claims,
        "statuses_after": {str(k): int(v) for k, v in statuses.items()},
        "double_claims": sum(counts) - int(statuses.get("sent", 0)),
        "expected": n,
    }


def procrastinate_run(url: str, n: int) -> dict[str, Any]:
    """procrastinate's schema applied to a fresh database, ``n`` jobs deferred in batches,
    then one worker (``wait=False``: it stops once the queue is empty) timed to the end."""
    import procrastinate

    name = url.rsplit("/", 1)[-1]
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=rows_postgres.database_url(name, driver="postgresql")
        )
    )

    @app.task(name="bench_noop")
    async def noop(n: int) -> None:
        return None

    async def run() -> dict[str, Any]:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            started = time.perf_counter()
            for start in range(0, n, DEFER_CHUNK):
                await noop.batch_defer_async(
                    *({"n": i} for i in range(start, min(n, start + DEFER_CHUNK)))
                )
            deferred = time.perf_counter() - started
            started = time.perf_counter()
            await app.run_worker_async(
                concurrency=PROCRASTINATE_CONCURRENCY,
                wait=False,
                install_signal_handlers=False,
            )
            elapsed = time.perf_counter() - started
            rows = await app.connector.execute_query_all_async(
                "SELECT status::text AS status, count(*) AS n FROM procrastinate_jobs "
                "GROUP BY status"
            )
        statuses = {str(row["status"]): int(row["n"]) for row in rows}
        return {
            "seconds": round(elapsed, 3),
            "succeeded": statuses.get("succeeded", 0),
            "statuses_after": statuses,
            "defer_seconds": round(deferred, 3),
            "concurrency": PROCRASTINATE_CONCURRENCY,
        }

    return asyncio.run(run())


# --- row: SMTP sending against Apprise ----------------------------------------------------


def peer_smtp(options: Options) -> RowResult:
    """N refund emails to the outside sink. Tidings: the events are posted first (no worker
    running), then a ``tidings worker`` process is started and timed from its start until
    the sink holds N mails (it delivers each refund's in-app message too). Apprise: the
    subject and HTML body Tidings rendered, sent N times over ``mailto://`` without TLS, by
    as many threads as Tidings has SMTP connections, each with its own ``Apprise``, timed
    from the first send until the sink holds N more mails."""
    n = 2_000 if options.full else 500
    label = f"smtp, {n:,} mails to the sink: mails/s"
    run = uuid.uuid4().hex[:8]
    with workspace("peer-smtp") as (tmp, processes):
        sink = start_sink(tmp, processes)
        app = start_tidings(
            tmp, processes, worker="none", smtp_port=sink.port, batch_max_events=BATCH_SIZE
        )
        headers = {"Content-Type": BATCH, "Authorization": f"Bearer {app.key}"}

        def make(k: int) -> bytes:
            events = [
                refund_event(run, i) for i in range(k * BATCH_SIZE, min(n, (k + 1) * BATCH_SIZE))
            ]
            body = json.dumps(events, separators=(",", ":")).encode()
            return http_request(
                "POST", "/api/events", host=f"{HOST}:{app.port}", headers=headers, body=body
            )

        batches = -(-n // BATCH_SIZE)
        options.log(f"peer-smtp: tidings, {n:,} refund events posted in {batches} batch(es)")
        posted = run_load(
            closed_loop(HOST, app.port, make, concurrency=1, count=batches, keep_body=True)
        )
        accepted = sum(json.loads(s.body or b"{}").get("accepted", 0) for s in posted.ok(200))
        if accepted != n:
            raise RuntimeError(
                f"peer-smtp: {accepted} of {n} events accepted: {load_summary(posted, 200)}"
            )

        options.log("peer-smtp: tidings worker, from its start to the last mail")
        env = tidings_env(
            tmp, app.port, smtp_url=f"smtp://{HOST}:{sink.port}", batch_max_events=BATCH_SIZE
        )
        started = time.monotonic()
        worker = processes.start("worker", ["-m", "tidings.cli", "worker"], env)
        wait_drained(sink, n, quiet=15, limit=120)
        processes.stop(worker)
        tidings = _timing(sink.received(), started, n)
        message = rendered_email(app.db)

        options.log(f"peer-smtp: apprise, {n:,} mails over {SMTP_CONNECTIONS} threads")
        before = sink.count()
        peer = apprise_send(sink.port, n, message)
        wait_drained(sink, before + n, quiet=3, limit=10)
        peer.update(_timing(sink.received()[before:], peer.pop("started"), n))

    rate = tidings["per_second"]
    base_rate = peer["per_second"]
    done = tidings["mails"] >= n and peer["mails"] >= n and not peer["failed"]
    return RowResult(
        "peer-smtp",
        [Line(label, rate, "/s", base_rate, "> 1.00 x", done and rate > base_rate)],
        {
            "mails": n,
            "intake": load_summary(posted, 200),
            "tidings": tidings,
            "apprise": peer,
            "subject_chars": len(message["subject"]),
            "html_chars": len(message["html"]),
            "text_chars": len(message["txt"]),
        },
    )


def _timing(received: list[tuple[float, str]], started: float, n: int) -> dict[str, Any]:
    """From ``started`` to the n-th mail at the sink; and the first-to-last mail rate."""
    times = sorted(at for at, _ in received)[:n]
    if not times:
        return {"mails": 0, "seconds": None, "per_second": 0.0}
    seconds = times[-1] - started
    steady = (len(times) - 1) / (times[-1] - times[0]) if times[-1] > times[0] else None
    return {
        "mails": len(times),
        "seconds": round(seconds, 3),
        "per_second": round(len(times) / seconds, 1) if len(times) >= n else 0.0,
        "first_mail_after_seconds": round(times[0] - started, 3),
        "first_to_last_per_second": round(steady, 1) if steady else None,
    }


def rendered_email(db: str) -> dict[str, str]:
    """Subject, text and HTML of one email Tidings sent in this row."""
    from sqlalchemy import select

    from tidings.db.engine import create_disposable_engine
    from tidings.db.schema import notifications

    engine = create_disposable_engine(db)
    try:
        with engine.connect() as conn:
            rendered = conn.execute(
                select(notifications.c.rendered)
                .where(notifications.c.channel == "email", notifications.c.rendered.is_not(None))
                .limit(1)
            ).scalar()
    finally:
        engine.dispose()
    parts = (rendered or {}).get("parts", {})
    return {key: str(parts.get(key, "")) for key in ("subject", "txt", "html")}


def apprise_send(port: int, n: int, message: dict[str, str]) -> dict[str, Any]:
    """``n`` mails through Apprise's email plugin. Apprise waits 5.5 s between two
    notifications of one plugin object by default (``request_rate_per_sec``); that wait is
    turned off here, so what is measured is its sending."""
    import apprise

    query = urlencode(
        {
            "smtp": HOST,
            "from": "Tidings Demo Store <orders@tidings.localhost>",
            "to": "camille@example.fr",
            "mode": "insecure",
        }
    )
    url = f"mailto://bench@{HOST}:{port}?{query}"
    shares = [n // SMTP_CONNECTIONS + (k < n % SMTP_CONNECTIONS) for k in range(SMTP_CONNECTIONS)]
    senders = []
    for _ in shares:
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            raise RuntimeError(f"Apprise does not take {url}")
        plugin.request_rate_per_sec = 0
        sender = apprise.Apprise()
        sender.add(plugin)
        senders.append(sender)
    failed = [0] * len(shares)
    errors: list[BaseException] = []

    def send(k: int) -> None:
        try:
            for _ in range(shares[k]):
                if not senders[k].notify(
                    title=message["subject"],
                    body=message["html"],
                    body_format=apprise.NotifyFormat.HTML,
                ):
                    failed[k] += 1
        except BaseException as exc:  # re-raised in the bench's thread
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(k,), daemon=True) for k in range(len(shares))]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return {
        "started": started,
        "threads": len(shares),
        "failed": sum(failed),
        "url": url,
        "sent_seconds": round(time.monotonic() - started, 3),
    }
