"""Rows at scale: a spike of bulk events with critical ones alongside, and a large backlog.

``spike`` posts a wave of bulk events as fast as Tidings takes them while a steady stream
of critical refunds goes to the same server, and checks that nothing accepted is lost and
that the refunds' mail still arrives on time. ``backlog`` fills a database with queued
delivery jobs directly (stdlib sqlite3, not through the API) and compares the rate of the
real claim function on it with the rate on a small queue, then runs a worker on it to
read its peak memory.

``python -m bench.rows_scale claim <database url> <seconds>`` is the claim loop of the
backlog row, run in its own process so that its peak memory is its own.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from bench.load import (
    HttpConnection,
    LoadResult,
    Sample,
    closed_loop,
    http_request,
    open_loop,
    percentile,
)
from bench.rows import (
    BATCH,
    BATCH_SIZE,
    DRAIN_LIMIT,
    HOST,
    Line,
    Options,
    Processes,
    RowResult,
    Sink,
    bench_customer,
    free_port,
    load_summary,
    match,
    run_load,
    single_requests,
    start_sink,
    start_tidings,
    tidings_cli,
    tidings_env,
    wait_drained,
    wait_http,
    workspace,
)

ROOT = Path(__file__).resolve().parent.parent
BUILTIN_RULES = ROOT / "src" / "tidings" / "engine" / "builtin_rules.yaml"
SOURCE = "https://shop.example.com"

# --- row: spike ---------------------------------------------------------------------------

SPIKE_EVENTS = (20_000, 100_000)  # short, --full
SPIKE_CLIENTS = 4
CRITICAL_RATE = 20.0
QUIET_SECONDS = 5.0  # the refund stream alone, before the spike: the baseline
BULK_RULE = "shipment-in-transit"
# Deferred events are posted again after their Retry-After, until this many seconds after
# the first pass over all events; what is still deferred then counts as not taken.
REPOST_LIMIT = 300.0


def bulk_rules(path: Path) -> Path:
    """The built-in rules with shipment-in-transit in the bulk lane, out of any group and
    without its hold, so the wave's mails are due at once and compete with the refunds."""
    spec = yaml.safe_load(BUILTIN_RULES.read_text())
    for rule in spec["rules"]:
        if rule["id"] == BULK_RULE:
            rule["priority"] = "bulk"
            rule.pop("group", None)
            rule.pop("hold", None)
            break
    else:
        raise RuntimeError(f"no rule {BULK_RULE} in {BUILTIN_RULES}")
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


def shipment_event(run: str, n: int) -> dict[str, Any]:
    """A valid shipment.status_changed (in transit); order, shipment, parcel and customer are
    new for every event."""
    tracking = f"1Z{run.upper()}{n:09d}"
    return {
        "specversion": "1.0",
        "id": f"bulk-{run}-{n}",
        "source": SOURCE,
        "type": "shipment.status_changed",
        "time": "2026-11-21T10:00:00Z",
        "data": {
            "order_id": f"o-{run}-{n}",
            "customer": bench_customer(run, n),
            "shipment_id": f"shp-{run}-{n}",
            "carrier": "UPS",
            "tracking_number": tracking,
            "tracking_url": f"https://www.ups.com/track?tracknum={tracking}",
            "status": "in_transit",
        },
    }


async def open_until(
    port: int,
    make: Any,
    *,
    rate: float,
    stop: asyncio.Event,
    connections: int = 64,
    first_index: int = 0,
) -> LoadResult:
    """:func:`bench.load.open_loop`'s schedule, kept up until ``stop`` is set rather than
    for a fixed duration; latency counts from when a request was due. Unlike open_loop,
    requests already due but still waiting for a connection when it stops are sent: they
    waited through the spike, and leaving them out would flatter the latency."""
    samples: list[Sample] = []
    errors: Counter[str] = Counter()
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    started = time.monotonic()

    async def schedule() -> None:
        sent = 0
        while not stop.is_set():
            due = int((time.monotonic() - started) * rate) + 1
            while sent < due:
                queue.put_nowait((first_index + sent, started + sent / rate))
                sent += 1
            try:
                await asyncio.wait_for(
                    stop.wait(), max(0.0, started + sent / rate - time.monotonic())
                )
            except TimeoutError:
                pass
        for _ in range(connections):
            queue.put_nowait(None)

    async def client() -> None:
        conn = HttpConnection(HOST, port)
        try:
            while (item := await queue.get()) is not None:
                index, due_at = item
                try:
                    status, body = await conn.request(make(index), keep_body=True)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    errors[type(exc).__name__] += 1
                    await conn.close()
                    status, body = 0, None
                samples.append(Sample(index, due_at, time.monotonic(), status, body))
        finally:
            await conn.close()

    await asyncio.gather(schedule(), *(client() for _ in range(connections)))
    return LoadResult(samples, started, time.monotonic(), errors)


class BulkPoster:
    """Posts events in batches of 1000 from 4 clients back to back (closed loop with a
    count), reads every batch answer and posts again what was deferred (after its
    Retry-After) or not answered (5xx, connection lost), until all is taken."""

    def __init__(self, port: int, key: str, events: list[dict[str, Any]]) -> None:
        self.port = port
        self.headers = {"Content-Type": BATCH, "Authorization": f"Bearer {key}"}
        self.events = events
        self.accepted: set[str] = set()  # CloudEvent ids answered "accepted"
        self.duplicate: set[str] = set()
        self.rejected = 0
        self.deferred = 0  # items answered "deferred" (each time)
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.rounds: list[dict[str, Any]] = []
        self.left: list[dict[str, Any]] = []  # still not taken by REPOST_LIMIT
        self.started = self.ended = 0.0

    def _request(self, batches: list[list[dict[str, Any]]], n: int) -> bytes:
        body = json.dumps(batches[n], separators=(",", ":")).encode()
        return http_request(
            "POST", "/api/events", host=f"{HOST}:{self.port}", headers=self.headers, body=body
        )

    async def run(self) -> None:
        self.started = time.monotonic()
        pending = self.events
        deadline = math.inf  # set once every event was posted once
        while pending and time.monotonic() < deadline:
            batches = [pending[i : i + BATCH_SIZE] for i in range(0, len(pending), BATCH_SIZE)]
            result = await closed_loop(
                HOST,
                self.port,
                functools.partial(self._request, batches),
                concurrency=SPIKE_CLIENTS,
                count=len(batches),
                keep_body=True,
            )
            pending, resume_at = self._read(result, batches)
            deadline = min(deadline, time.monotonic() + REPOST_LIMIT)
            self.rounds.append(
                {
                    "events": sum(len(b) for b in batches),
                    "batches": len(batches),
                    "seconds": round(result.elapsed, 3),
                    "statuses": {str(k): v for k, v in sorted(result.statuses().items())},
                    "to_post_again": len(pending),
                }
            )
            if pending:
                if resume_at >= deadline:
                    break
                await asyncio.sleep(max(0.0, resume_at - time.monotonic()))
        self.left = pending
        self.ended = time.monotonic()

    def _read(
        self, result: LoadResult, batches: list[list[dict[str, Any]]]
    ) -> tuple[list[dict[str, Any]], float]:
        again: list[dict[str, Any]] = []
        resume_at = time.monotonic()
        self.statuses.update(result.statuses())
        self.errors.update(result.errors)
        for sample in result.samples:
            batch = batches[sample.index]
            answer = json.loads(sample.body or b"{}") if sample.status in (200, 429) else {}
            if "results" not in answer:
                # Not answered item by item (5xx, connection lost): all of it again, soon.
                again.extend(batch)
                resume_at = max(resume_at, sample.done + 1.0)
                continue
            for item in answer["results"]:
                event = batch[item["index"]]
                if item["status"] == "accepted":
                    self.accepted.add(event["id"])
                elif item["status"] == "duplicate":
                    self.duplicate.add(event["id"])
                elif item["status"] == "deferred":
                    self.deferred += 1
                    again.append(event)
                    resume_at = max(resume_at, sample.done + float(item["retry_after"] or 1))
                else:
                    self.rejected += 1
        return again, resume_at

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def stored_ids(db: str) -> set[str]:
    from sqlalchemy import text

    from tidings.db.engine import create_disposable_engine

    engine = create_disposable_engine(db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT ce_id FROM events WHERE source = :source"), {"source": SOURCE}
            ).all()
    finally:
        engine.dispose()
    return {str(ce_id) for (ce_id,) in rows}


def wait_for_mails(
    result: LoadResult, sink: Sink, db: str, *, limit: float
) -> tuple[list[float], int, float]:
    """Accept->SMTP latencies of ``result``'s events, once all their mails arrived or
    ``limit`` seconds passed; how many are still missing; the seconds waited."""
    started = time.monotonic()
    while True:
        latencies, _, missing = match(result, sink, db)
        if missing == 0 or time.monotonic() - started > limit:
            return latencies, missing, time.monotonic() - started
        time.sleep(1.0)


def spike(options: Options) -> RowResult:
    """100,000 bulk events (short: 20,000) posted in batches of 1000 by 4 clients back to
    back, while critical refunds arrive at 20/s; bulk events/s accepted, 5xx answers,
    accepted events missing from the database, deferred events posted again, and the
    refunds' due->202 and accept->SMTP latencies against the same stream without the spike
    (5 s before it)."""
    total = SPIKE_EVENTS[options.full]
    run = uuid.uuid4().hex[:8]
    label = f"spike {total:,} bulk events" + ("" if options.full else " (short)")
    with workspace("spike") as (tmp, processes):
        sink = start_sink(tmp, processes)
        rules = bulk_rules(tmp / "rules.yaml")
        app = start_tidings(
            tmp, processes, worker="in-process", smtp_port=sink.port, rules_path=rules
        )
        make = single_requests(app.port, app.key)

        options.log(f"spike: refunds alone, {CRITICAL_RATE:.0f}/s for {QUIET_SECONDS:.0f} s")
        warm = run_load(open_loop(HOST, app.port, make, rate=CRITICAL_RATE, duration=1.0))
        wait_drained(sink, len(warm.ok(202)), quiet=3, limit=5)
        quiet = run_load(
            open_loop(
                HOST,
                app.port,
                make,
                rate=CRITICAL_RATE,
                duration=QUIET_SECONDS,
                keep_body=True,
                first_index=10**5,
            )
        )
        wait_drained(sink, len(warm.ok(202)) + len(quiet.ok(202)), quiet=3, limit=DRAIN_LIMIT)

        options.log(
            f"spike: {total:,} bulk events, batches of {BATCH_SIZE} from {SPIKE_CLIENTS} "
            f"clients, refunds at {CRITICAL_RATE:.0f}/s alongside"
        )
        poster = BulkPoster(app.port, app.key, [shipment_event(run, n) for n in range(total)])

        async def both() -> LoadResult:
            stop = asyncio.Event()
            stream = asyncio.create_task(
                open_until(app.port, make, rate=CRITICAL_RATE, stop=stop, first_index=10**6)
            )
            try:
                await poster.run()
            finally:
                stop.set()
            return await stream

        refunds = run_load(both())
        options.log("spike: waiting for the refunds' mail")
        latencies, missing, drain = wait_for_mails(refunds, sink, app.db, limit=DRAIN_LIMIT)
        quiet_latencies, quiet_missing, _ = wait_for_mails(quiet, sink, app.db, limit=0)
        stored = stored_ids(app.db)
        mails_at_sink = sink.count()
        processes.stop_all()

    refund_ids = {json.loads(s.body or b"{}")["id"] for s in refunds.ok(202)}
    lost = len(poster.accepted - stored) + len(refund_ids - stored)
    bulk_seconds = poster.ended - poster.started
    accepted_rate = len(poster.accepted) / bulk_seconds if bulk_seconds > 0 else 0.0
    server_errors = poster.server_errors + sum(
        n for status, n in refunds.statuses().items() if status >= 500
    )
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    base_p50, base_p99 = percentile(quiet_latencies, 50), percentile(quiet_latencies, 99)
    on_time = p99 <= 1000 and missing == 0
    critical = f"{label}: critical refunds at {CRITICAL_RATE:.0f}/s, accept->SMTP"
    return RowResult(
        "spike",
        [
            Line(f"{label}: bulk events accepted/s", accepted_rate, "/s"),
            Line(
                f"{label}: 5xx answers (bulk and refunds)",
                server_errors,
                "answers",
                target="0",
                met=server_errors == 0,
                higher_is_better=False,
            ),
            Line(
                f"{label}: accepted but not stored (lost)",
                lost,
                "events",
                target="0",
                met=lost == 0,
                higher_is_better=False,
            ),
            Line(
                f"{label}: deferred (429), posted again after Retry-After",
                poster.deferred,
                "events",
                target="all taken later",
                met=not poster.left,
                higher_is_better=False,
            ),
            Line(
                f"{label}: critical refunds, due->202 p99",
                refunds.latency_ms(202, 99),
                "ms",
                quiet.latency_ms(202, 99),
                higher_is_better=False,
            ),
            Line(f"{critical} p50", p50, "ms", base_p50, higher_is_better=False),
            Line(
                f"{critical} p99",
                p99,
                "ms",
                base_p99,
                "<= 1000 ms",
                on_time,
                higher_is_better=False,
            ),
            Line(
                f"{critical}: without email after {DRAIN_LIMIT:.0f} s",
                missing,
                "mails",
                target="0",
                met=missing == 0,
                higher_is_better=False,
            ),
        ],
        {
            "bulk": {
                "events": total,
                "accepted": len(poster.accepted),
                "duplicate": len(poster.duplicate),
                "rejected": poster.rejected,
                "deferred": poster.deferred,
                "not_taken_in_time": len(poster.left),
                "seconds": round(bulk_seconds, 3),
                "first_round_per_second": round(
                    poster.rounds[0]["events"] / poster.rounds[0]["seconds"], 1
                )
                if poster.rounds and poster.rounds[0]["seconds"]
                else None,
                "statuses": {str(k): v for k, v in sorted(poster.statuses.items())},
                "errors": dict(poster.errors),
                "rounds": poster.rounds,
            },
            "refunds_during_spike": {
                **load_summary(refunds, 202),
                "emails_matched": len(latencies),
                "accepted_without_email": missing,
                "drain_seconds_after_load": round(drain, 2),
                "accept_to_smtp_p50_ms": round(p50, 2),
                "accept_to_smtp_p99_ms": round(p99, 2),
            },
            "refunds_alone": {
                **load_summary(quiet, 202),
                "emails_matched": len(quiet_latencies),
                "accepted_without_email": quiet_missing,
                "accept_to_smtp_p50_ms": round(base_p50, 2),
                "accept_to_smtp_p99_ms": round(base_p99, 2),
            },
            "events_stored": len(stored),
            "lost": lost,
            "server_errors": server_errors,
            # Refunds' mail and any bulk mail: the rule holds bulk mail 10 minutes (hold: 10m).
            "emails_at_sink": mails_at_sink,
        },
    )


# --- row: backlog -------------------------------------------------------------------------

BACKLOG_JOBS = (200_000, 1_000_000)  # short, --full
CLAIM_LIMIT = 50
CLAIM_SECONDS = 5.0
EMPTY_QUEUE = 10_000
# The same number of critical and transactional jobs in both queues, spread through them;
# every other job is bulk. A claim takes critical jobs first and gives transactional ones
# four fifths of the room left, so both queues start with the same mix of claims.
CRITICAL_JOBS = 500
TRANSACTIONAL_JOBS = 500
FILL_CHUNK = 50_000
WORKER_SECONDS = 10.0
MEMORY_LIMIT_MB = 300.0

INSERT_NOTIFICATION = (
    "INSERT INTO notifications (id, event_id, rule_id, kind, category, priority, channel, "
    "customer_id, order_id, recipient, locale, time_zone, status, dedupe_key, rendered, extra, "
    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_JOB = (
    "INSERT INTO delivery_jobs (id, notification_id, channel, lane, status, run_at, attempts, "
    "max_attempts, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
PRIORITIES = {0: "critical", 1: "transactional", 2: "bulk"}


def stamp(moment: datetime) -> str:
    """As UTCDateTime stores it on SQLite: naive UTC, ISO with a space and microseconds."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def fill_queue(path: Path, jobs: int) -> dict[str, Any]:
    """One event, ``jobs`` queued email notifications about it and their delivery jobs, due
    over the last hour, written straight into a migrated SQLite file. The tables' own
    indexes are dropped for the fill and built again after it, with their stored SQL."""
    from tidings.db.ids import new_id

    started = time.perf_counter()
    now = datetime.now(UTC)
    created = stamp(now)
    customer = {
        "id": "cus-backlog",
        "name": "Camille Durand",
        "email": "camille.backlog@example.fr",
        "locale": "fr",
        "time_zone": "Europe/Paris",
    }
    data = {
        "order_id": "o-backlog",
        "customer": {**customer, "phone": None, "segment": None},
        "shipment_id": "shp-backlog",
        "carrier": "UPS",
        "tracking_number": "1ZBACKLOG",
        "tracking_url": "https://www.ups.com/track?tracknum=1ZBACKLOG",
        "status": "in_transit",
        "carrier_status": None,
        "occurred_at": None,
        "estimated_delivery": None,
    }
    event_id = new_id("evt")
    # Ids and dedupe keys of the real shape, in ascending order (one stem, a counter in the
    # last characters) so that the unique indexes are filled in order: a fast fill.
    note_stem, job_stem = new_id("ntf")[:-10], new_id("job")[:-10]
    key_stem = hashlib.sha256(event_id.encode()).hexdigest()[:52]
    special = {}
    step = max(1, jobs // (CRITICAL_JOBS + TRANSACTIONAL_JOBS))
    for n in range(min(jobs, CRITICAL_JOBS + TRANSACTIONAL_JOBS)):
        special[n * step] = 0 if n % 2 == 0 else 1
    first_due = (now - timedelta(hours=1)).replace(tzinfo=None)  # naive UTC, as stored
    spacing = timedelta(hours=1) / jobs

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        indexes = [
            (name, sql)
            for name, sql in conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                "AND tbl_name IN ('notifications', 'delivery_jobs')"
            )
        ]
        conn.execute("BEGIN")
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute(
            "INSERT INTO customers (id, name, email, locale, time_zone, preferences, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, '{}', ?, ?)",
            (*customer.values(), created, created),
        )
        conn.execute(
            "INSERT INTO events (id, source, ce_id, type, subject, time, data, order_id, "
            "customer_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event_id,
                SOURCE,
                "backlog-1",
                "shipment.status_changed",
                "order/o-backlog",
                "2026-11-21 10:00:00.000000",
                json.dumps(data),
                "o-backlog",
                customer["id"],
                created,
            ),
        )
        for offset in range(0, jobs, FILL_CHUNK):
            notes, queued = [], []
            for n in range(offset, min(jobs, offset + FILL_CHUNK)):
                lane = special.get(n, 2)
                notification = f"{note_stem}{n:010d}"
                notes.append(
                    (
                        notification,
                        event_id,
                        "shipment-in-transit",
                        "shipment_in_transit",
                        "shipping",
                        PRIORITIES[lane],
                        "email",
                        customer["id"],
                        "o-backlog",
                        customer["email"],
                        "fr",
                        "Europe/Paris",
                        "queued",
                        f"{key_stem}{n:012x}",
                        "null",
                        "null",
                        created,
                        created,
                    )
                )
                due = (first_due + spacing * n).isoformat(sep=" ", timespec="microseconds")
                job = f"{job_stem}{n:010d}"
                queued.append((job, notification, "email", lane, "queued", due, 0, 8, due, due))
            conn.executemany(INSERT_NOTIFICATION, notes)
            conn.executemany(INSERT_JOB, queued)
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    return {
        "jobs": jobs,
        "seconds": round(time.perf_counter() - started, 2),
        "file_mb": round(path.stat().st_size / 2**20, 1),
    }


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """VmHWM (peak resident set size) of a process, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def claim_loop(url: str, seconds: float) -> dict[str, Any]:
    """The real claim (50 at a time, 30 s lease) in a write transaction, the claimed jobs
    marked sent in the same transaction, for ``seconds`` or until the queue is empty."""
    from sqlalchemy import update

    from tidings.db.engine import create_db_engine
    from tidings.db.schema import delivery_jobs
    from tidings.db.types import utcnow
    from tidings.delivery.queue import claim

    engine = create_db_engine(url)
    lease = timedelta(seconds=30)

    def once() -> int:
        with engine.begin() as conn:
            now = utcnow()
            jobs = claim(conn, worker_id="bench-claim", limit=CLAIM_LIMIT, now=now, lease=lease)
            if jobs:
                conn.execute(
                    update(delivery_jobs)
                    .where(delivery_jobs.c.id.in_([job.job_id for job in jobs]))
                    .values(status="sent", run_at=now, updated_at=now)
                )
        return len(jobs)

    for _ in range(2):  # warm-up: connection, statement caches
        once()
    claimed = claims = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        got = once()
        if not got:
            break
        claimed += got
        claims += 1
    elapsed = time.perf_counter() - started
    engine.dispose()
    return {
        "jobs": claimed,
        "claims": claims,
        "seconds": round(elapsed, 3),
        "per_second": round(claimed / elapsed, 1) if elapsed > 0 else 0.0,
        "peak_rss_mb": peak_rss_mb(),
    }


def measure_claims(processes: Processes, url: str, seconds: float) -> dict[str, Any]:
    """:func:`claim_loop` in a process of its own; its answer is one line of JSON."""
    process = processes.start(
        "claim",
        ["-m", "bench.rows_scale", "claim", url, str(seconds)],
        dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
    )
    out, _ = process.communicate(timeout=seconds + 120)
    processes.stop(process)
    if process.returncode != 0:
        raise RuntimeError(f"the claim loop failed ({process.returncode}): see claim.log")
    answer: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return answer


def migrated(tmp: Path, path: Path) -> str:
    url = f"sqlite:///{path}"
    tidings_cli(["migrate"], tidings_env(tmp, 0, database_url=url))
    return url


def backlog(options: Options) -> RowResult:
    """The real claim function on 1,000,000 queued jobs (short: 200,000) against 10,000,
    both filled straight into SQLite; then serve --no-worker and a tidings worker on the
    large queue for 10 s, and the largest peak memory of the processes."""
    jobs = BACKLOG_JOBS[options.full]
    label = f"backlog {jobs:,} queued jobs" + ("" if options.full else " (short)")
    with workspace("backlog") as (tmp, processes):
        options.log(f"backlog: filling {EMPTY_QUEUE:,} jobs, claim loop {CLAIM_SECONDS:.0f} s")
        small_path = tmp / "small.db"
        small_url = migrated(tmp, small_path)
        small_fill = fill_queue(small_path, EMPTY_QUEUE)
        empty = measure_claims(processes, small_url, CLAIM_SECONDS)
        for leftover in tmp.glob("small.db*"):
            leftover.unlink()

        options.log(f"backlog: filling {jobs:,} jobs")
        big_path = tmp / "tidings.db"
        big_url = migrated(tmp, big_path)
        big_fill = fill_queue(big_path, jobs)
        options.log(f"backlog: filled in {big_fill['seconds']:.0f} s, claim loop")
        full = measure_claims(processes, big_url, CLAIM_SECONDS)

        options.log(f"backlog: serve --no-worker + tidings worker for {WORKER_SECONDS:.0f} s")
        sink = start_sink(tmp, processes)
        port = free_port()
        env = tidings_env(tmp, port, smtp_url=f"smtp://{HOST}:{sink.port}")
        server = processes.start("serve", ["-m", "tidings.cli", "serve", "--no-worker"], env)
        worker = processes.start("worker0", ["-m", "tidings.cli", "worker"], env)
        wait_http(port, server)
        before = sink.count()
        time.sleep(WORKER_SECONDS)
        sent = sink.count() - before
        if worker.poll() is not None:
            raise RuntimeError(f"tidings worker exited with {worker.returncode}: see worker0.log")
        memory = {
            "serve": peak_rss_mb(server.pid),
            "worker": peak_rss_mb(worker.pid),
            "claim_loop": full.get("peak_rss_mb"),
        }
        processes.stop_all()

    ratio = full["per_second"] / empty["per_second"] if empty["per_second"] else 0.0
    largest = max((mb for mb in memory.values() if mb is not None), default=math.nan)
    return RowResult(
        "backlog",
        [
            Line(
                f"{label}: claimed+completed/s ({CLAIM_LIMIT} a claim)",
                full["per_second"],
                "/s",
                empty["per_second"],
                ">= 0.80 x",
                ratio >= 0.80,
            ),
            Line(
                f"{label}: peak memory, largest of serve, worker, claim loop",
                largest,
                "MB",
                target=f"<= {MEMORY_LIMIT_MB:.0f} MB",
                met=largest <= MEMORY_LIMIT_MB,
                higher_is_better=False,
            ),
        ],
        {
            "backlog_claims": full,
            "empty_queue_claims": {**empty, "queue": EMPTY_QUEUE},
            "ratio": round(ratio, 3),
            "fill": {"backlog": big_fill, "empty_queue": small_fill},
            "peak_rss_mb": {k: None if v is None else round(v, 1) for k, v in memory.items()},
            "worker_emails_in_window": sent,
            "worker_emails_per_second": round(sent / WORKER_SECONDS, 1),
        },
    )


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "claim":
        sys.exit("usage: python -m bench.rows_scale claim <database url> <seconds>")
    print(json.dumps(claim_loop(sys.argv[2], float(sys.argv[3]))))
