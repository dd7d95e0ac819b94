"""One function per row of the benchmark table.

Every row starts the real product as a user would (``tidings migrate``, ``tidings apikey
create``, ``tidings serve`` subprocesses on a throw-away SQLite file in a temp dir,
configured by ``TIDINGS_*`` variables), measures it, and measures its baseline in the same
run. Processes are stopped and temp dirs removed when the row ends, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.load import HttpConnection, LoadResult, closed_loop, http_request, open_loop, percentile

HOST = "127.0.0.1"
CLIENTS = 32
BATCH_SIZE = 1000
OFFERED_RATE = 1000.0
SMTP_CONNECTIONS = 4  # TIDINGS_SMTP_CONNECTIONS' default, also used by the sink baseline
# After the load, how long an end-to-end row waits for the mail still owed; what has not
# arrived by then counts as accepted without email.
DRAIN_LIMIT = 8.0
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


# --- results ------------------------------------------------------------------------------


@dataclass
class Line:
    """One line of the table. ``ratio`` is Tidings against the baseline, higher is better:
    measured/baseline for rates, baseline/measured for latencies."""

    path: str
    measured: float
    unit: str
    baseline: float | None = None
    target: str = ""
    met: bool | None = None
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline or not self.measured:
            return None
        if self.higher_is_better:
            return self.measured / self.baseline
        return self.baseline / self.measured


@dataclass
class RowResult:
    name: str
    lines: list[Line]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Options:
    full: bool = False
    log: Callable[[str], None] = print

    def seconds(self, short: float, full: float) -> float:
        return full if self.full else short


# --- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Processes:
    """Children of one row: each in its own session (a Ctrl-C reaches only the bench, which
    then stops them here), stopped in reverse order of start."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self._running: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, args: list[str], env: dict[str, str], *, stdout: int | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                [sys.executable, *args],
                env=env,
                stdout=stdout if stdout is not None else log,
                stderr=log,
                start_new_session=True,
            )
        self._running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if process in self._running:
            self._running.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self._running)):
            self.stop(process)


@contextlib.contextmanager
def workspace(name: str) -> Iterator[tuple[Path, Processes]]:
    with tempfile.TemporaryDirectory(prefix=f"tidings-bench-{name}-") as tmp:
        processes = Processes(Path(tmp))
        try:
            yield Path(tmp), processes
        finally:
            processes.stop_all()


def tidings_env(tmp: Path, port: int, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        {
            "TIDINGS_DATABASE_URL": f"sqlite:///{tmp / 'tidings.db'}",
            "TIDINGS_VAR_DIR": str(tmp / "var"),
            "TIDINGS_HOST": HOST,
            "TIDINGS_PORT": str(port),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({f"TIDINGS_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def tidings_cli(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "tidings.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"tidings {' '.join(args)} failed: {result.stderr or result.stdout}")
    return result.stdout


def wait_http(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    async def probe() -> bool:
        conn = HttpConnection(HOST, port)
        try:
            status, _ = await conn.request(http_request("GET", "/healthz", host=HOST, headers={}))
            return status == 200
        except OSError:
            return False
        finally:
            await conn.close()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        if asyncio.run(probe()):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not answer within {timeout} s")


@dataclass
class Tidings:
    port: int
    key: str
    db: str  # the database URL


def start_tidings(
    tmp: Path,
    processes: Processes,
    *,
    worker: str,
    smtp_port: int | None = None,
    workers: int = 1,
    database_url: str | None = None,
    **settings: object,
) -> Tidings:
    """``worker``: ``none`` (serve --no-worker), ``in-process`` (serve, as ``make run``) or
    ``process`` (serve --no-worker plus ``workers`` ``tidings worker`` processes).
    ``database_url``: another database than the row's SQLite file (it must be empty)."""
    port = free_port()
    # With no worker nothing is ever sent; a closed port keeps the embedded sink off.
    smtp = f"smtp://{HOST}:{smtp_port or free_port()}"
    if database_url is not None:
        settings["database_url"] = database_url
    env = tidings_env(tmp, port, smtp_url=smtp, **settings)
    tidings_cli(["migrate"], env)
    key = tidings_cli(["apikey", "create", "--name", "bench", "--scopes", "events:write"], env)
    serve = ["-m", "tidings.cli", "serve"] + ([] if worker == "in-process" else ["--no-worker"])
    server = processes.start("serve", serve, env)
    if worker == "process":
        for n in range(workers):
            processes.start(f"worker{n}", ["-m", "tidings.cli", "worker"], env)
    wait_http(port, server)
    url = database_url or f"sqlite:///{tmp / 'tidings.db'}"
    return Tidings(port, key.strip().splitlines()[-1], url)


# --- events -------------------------------------------------------------------------------


def bench_customer(run: str, n: int) -> dict[str, Any]:
    """A new French customer for every event."""
    return {
        "id": f"cus-{run}-{n}",
        "name": "Camille Durand",
        "email": f"camille.{run}.{n}@example.fr",
        "locale": "fr",
        "time_zone": "Europe/Paris",
    }


def refund_event(run: str, n: int) -> dict[str, Any]:
    """A valid refund.authorized: one email and one in-app message under the built-in rules.
    Order, refund, payment and customer are new for every event."""
    return {
        "specversion": "1.0",
        "id": f"bench-{run}-{n}",
        "source": "https://shop.example.com",
        "type": "refund.authorized",
        "time": "2026-11-21T10:00:00Z",
        "data": {
            "order_id": f"o-{run}-{n}",
            "refund_id": f"re-{run}-{n}",
            "payment_id": f"pay-{run}-{n}",
            "amount": 1250,
            "currency": "EUR",
            "reason_code": "requested_by_customer",
            "method": "card",
            "customer": bench_customer(run, n),
        },
    }


def single_requests(port: int, key: str | None) -> Callable[[int], bytes]:
    run = uuid.uuid4().hex[:8]
    headers = {"Content-Type": STRUCTURED}
    if key:
        headers["Authorization"] = f"Bearer {key}"

    def make(n: int) -> bytes:
        body = json.dumps(refund_event(run, n), separators=(",", ":")).encode()
        return http_request(
            "POST", "/api/events", host=f"{HOST}:{port}", headers=headers, body=body
        )

    return make


def run_load(coroutine: Any) -> LoadResult:
    import uvloop  # uvicorn[standard] brings it: a cheaper loop leaves more CPU to the server

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result: LoadResult = runner.run(coroutine)
    return result


def load_summary(result: LoadResult, status: int) -> dict[str, Any]:
    return {
        "requests": len(result.samples),
        "seconds": round(result.elapsed, 3),
        "statuses": {str(k): v for k, v in sorted(result.statuses().items())},
        "errors": dict(result.errors),
        "unsent": result.unsent,
        "per_second": round(result.rate(status), 1),
        "p50_ms": round(result.latency_ms(status, 50), 2),
        "p99_ms": round(result.latency_ms(status, 99), 2),
    }


# --- row 1: single-event intake -----------------------------------------------------------


def single(options: Options) -> RowResult:
    """POST /api/events, one structured CloudEvent per request, 32 clients, against a bare
    FastAPI + sqlite3 app under the same load."""
    duration = options.seconds(10, 30)

    def measure(port: int, key: str | None) -> LoadResult:
        make = single_requests(port, key)
        run_load(closed_loop(HOST, port, make, concurrency=CLIENTS, duration=1.5))
        return run_load(
            closed_loop(HOST, port, make, concurrency=CLIENTS, duration=duration, first_index=10**6)
        )

    with workspace("single") as (tmp, processes):
        options.log(f"single: tidings serve --no-worker, {CLIENTS} clients, {duration:.0f} s")
        app = start_tidings(tmp, processes, worker="none")
        tidings = measure(app.port, app.key)
        processes.stop_all()

        options.log(f"single: baseline app, {CLIENTS} clients, {duration:.0f} s")
        port = free_port()
        server = processes.start(
            "baseline",
            ["-m", "bench.baseline_app", "--db", str(tmp / "baseline.db"), "--port", str(port)],
            dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        wait_http(port, server)
        baseline = measure(port, None)

    rate, base_rate = tidings.rate(202), baseline.rate(202)
    p50, p99 = tidings.latency_ms(202, 50), tidings.latency_ms(202, 99)
    ratio = rate / base_rate if base_rate else 0.0
    label = f"single event, {CLIENTS} clients"
    return RowResult(
        "single",
        [
            Line(f"{label}: events/s (202)", rate, "/s", base_rate, ">= 0.70 x", ratio >= 0.70),
            Line(f"{label}: p50", p50, "ms", baseline.latency_ms(202, 50), higher_is_better=False),
            Line(
                f"{label}: p99",
                p99,
                "ms",
                baseline.latency_ms(202, 99),
                "<= 25 ms",
                p99 <= 25,
                higher_is_better=False,
            ),
        ],
        {"tidings": load_summary(tidings, 202), "baseline": load_summary(baseline, 202)},
    )


# --- row 2: batch intake ------------------------------------------------------------------


def batch(options: Options) -> RowResult:
    """Batches of 1000 events (application/cloudevents-batch+json), 2 clients back to back,
    events committed per second; baseline: sqlite3 executemany of as many rows of the same
    size, one transaction per 1000, with the same pragmas."""
    duration = options.seconds(8, 30)
    run = uuid.uuid4().hex[:8]
    with workspace("batch") as (tmp, processes):
        options.log(f"batch: tidings serve --no-worker, batches of {BATCH_SIZE}, {duration:.0f} s")
        app = start_tidings(tmp, processes, worker="none", batch_max_events=BATCH_SIZE)
        headers = {"Content-Type": BATCH, "Authorization": f"Bearer {app.key}"}

        def make(n: int) -> bytes:
            events = [refund_event(run, n * BATCH_SIZE + i) for i in range(BATCH_SIZE)]
            body = json.dumps(events, separators=(",", ":")).encode()
            return http_request(
                "POST", "/api/events", host=f"{HOST}:{app.port}", headers=headers, body=body
            )

        run_load(closed_loop(HOST, app.port, make, concurrency=1, count=1))
        result = run_load(
            closed_loop(
                HOST,
                app.port,
                make,
                concurrency=2,
                duration=duration,
                keep_body=True,
                first_index=1,
            )
        )
        processes.stop_all()
        committed = sum(json.loads(s.body or b"{}").get("accepted", 0) for s in result.ok(200))
        rate = committed / result.elapsed
        batches = max(1, len(result.ok(200)))

        options.log(f"batch: baseline sqlite3 executemany, {batches} x {BATCH_SIZE} rows")
        base_rate = executemany_baseline(tmp / "baseline.db", batches, run)

    return RowResult(
        "batch",
        [
            Line(
                f"batch of {BATCH_SIZE}: events/s committed",
                rate,
                "/s",
                base_rate,
                ">= 15,000 /s",
                rate >= 15_000,
            ),
            Line(
                f"batch of {BATCH_SIZE}: p50 per batch",
                result.latency_ms(200, 50),
                "ms",
                BATCH_SIZE / base_rate * 1000 if base_rate else None,
                higher_is_better=False,
            ),
        ],
        {"tidings": {**load_summary(result, 200), "events_committed": committed}},
    )


def executemany_baseline(path: Path, batches: int, run: str) -> float:
    from bench.baseline_app import SCHEMA, connect

    conn = connect(str(path))
    conn.execute(SCHEMA)
    now = "2026-11-21T10:00:01+00:00"
    rows = [
        [
            (e["source"], e["id"], e["type"], e["time"], json.dumps(e["data"]), now)
            for e in (refund_event(f"{run}b", b * BATCH_SIZE + i) for i in range(BATCH_SIZE))
        ]
        for b in range(batches)
    ]
    started = time.perf_counter()
    for chunk in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", chunk)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return batches * BATCH_SIZE / elapsed


# --- row 3: end to end --------------------------------------------------------------------


@dataclass
class Sink:
    port: int
    log: Path

    def received(self) -> list[tuple[float, str]]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            at, _, message_id = line.partition(" ")
            out.append((float(at), message_id))
        return out

    def count(self) -> int:
        if not self.log.exists():
            return 0
        with self.log.open("rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 16), b""))


def start_sink(tmp: Path, processes: Processes) -> Sink:
    log = tmp / "sink-received.txt"
    process = processes.start("sink", ["-m", "bench.sink", str(log)], dict(os.environ), stdout=-1)
    line = process.stdout.readline().decode() if process.stdout is not None else ""

    if not line.startswith("PORT "):
        raise RuntimeError(f"the SMTP sink did not start: {line!r}")
    return Sink(int(line.split()[1]), log)


def wait_drained(sink: Sink, expected: int, *, quiet: float, limit: float) -> float:
    """Wait until the sink holds ``expected`` messages, or nothing arrived for ``quiet``
    seconds, or ``limit`` seconds passed; returns the seconds waited."""
    started = last_change = time.monotonic()
    seen = sink.count()
    while seen < expected:
        time.sleep(0.05)
        now = time.monotonic()
        count = sink.count()
        if count != seen:
            seen, last_change = count, now
        elif now - last_change > quiet or now - started > limit:
            break
    return time.monotonic() - started


def email_events(db: str) -> dict[str, str]:
    """Message-ID of every email notification -> the CloudEvent id it tells about."""
    from sqlalchemy import text

    from tidings.db.engine import create_disposable_engine

    engine = create_disposable_engine(db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT n.id, e.ce_id FROM notifications n JOIN events e "
                    "ON e.id = n.event_id WHERE n.channel = 'email'"
                )
            ).all()
    finally:
        engine.dispose()
    return {str(nid): str(ce_id) for nid, ce_id in rows}


def match(result: LoadResult, sink: Sink, db: str) -> tuple[list[float], list[float], int]:
    """Accepted-at-API -> received-at-SMTP latencies (ms) and receive times of the events in
    ``result``; and how many of its accepted events have no mail."""
    accepted = {}
    for sample in result.ok(202):
        accepted[json.loads(sample.body or b"{}")["id"]] = sample.done
    events = email_events(db)
    latencies, arrivals = [], []
    for at, message_id in sink.received():
        notification = message_id.strip("<>").split(".", 1)[0]
        ce_id = events.get(notification)
        if ce_id in accepted:
            latencies.append((at - accepted.pop(ce_id)) * 1000)
            arrivals.append(at)
    return latencies, arrivals, len(accepted)


_sink_rate: dict[str, Any] = {}


def sink_baseline(options: Options) -> dict[str, Any]:
    """The sink's raw accept rate: pre-built bytes over pooled connections, once per run."""
    if not _sink_rate:
        with workspace("sink") as (tmp, processes):
            sink = start_sink(tmp, processes)
            options.log(f"e2e: baseline SMTP sink raw accept rate, {SMTP_CONNECTIONS} connections")
            _sink_rate.update(asyncio.run(_send_raw(sink.port, duration=3.0)))
    return _sink_rate


def sample_email() -> bytes:
    """A multipart mail of the size of a rendered refund email."""
    from email.message import EmailMessage

    email = EmailMessage()
    email["Subject"] = "Votre remboursement de 12,50 € est en route"
    email["From"] = "Tidings Demo Store <orders@tidings.localhost>"
    email["To"] = "camille@example.fr"
    email["Message-ID"] = "<baseline.email@tidings.localhost>"
    email.set_content("Bonjour Camille,\n" + "Votre remboursement est en route. " * 40)
    email.add_alternative(
        "<html><body>" + "<p>Votre remboursement.</p>" * 250 + "</body></html>", subtype="html"
    )
    return email.as_bytes()


async def _send_raw(port: int, duration: float) -> dict[str, Any]:
    import aiosmtplib

    raw = sample_email()
    sent = 0
    deadline = time.monotonic() + duration

    async def client() -> None:
        nonlocal sent
        smtp = aiosmtplib.SMTP(hostname=HOST, port=port, timeout=10)
        await smtp.connect()
        try:
            while time.monotonic() < deadline:
                await smtp.sendmail("orders@tidings.localhost", ["camille@example.fr"], raw)
                sent += 1
        finally:
            await smtp.quit()

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(SMTP_CONNECTIONS)))
    elapsed = time.monotonic() - started
    return {"per_second": round(sent / elapsed, 1), "messages": sent, "bytes": len(raw)}


def e2e_latency(
    options: Options,
    worker: str,
    *,
    workers: int = 1,
    database_url: str | None = None,
    how: str | None = None,
    name: str | None = None,
) -> RowResult:
    """Fixed offered rate -> rule -> render -> accepted by the outside SMTP sink.
    ``workers`` and ``database_url`` as for :func:`start_tidings`."""
    duration = options.seconds(20, 60)
    base = sink_baseline(options)
    if how is None:
        how = "serve (in-process worker)" if worker == "in-process" else "serve + tidings worker"
    with workspace("e2e") as (tmp, processes):
        sink = start_sink(tmp, processes)
        app = start_tidings(
            tmp,
            processes,
            worker=worker,
            smtp_port=sink.port,
            workers=workers,
            database_url=database_url,
        )
        make = single_requests(app.port, app.key)
        options.log(f"e2e: {how}, {OFFERED_RATE:.0f}/s offered for {duration:.0f} s")
        warm = run_load(open_loop(HOST, app.port, make, rate=OFFERED_RATE, duration=1.0))
        wait_drained(sink, len(warm.ok(202)), quiet=3, limit=5)
        before = sink.count()
        result = run_load(
            open_loop(
                HOST,
                app.port,
                make,
                rate=OFFERED_RATE,
                duration=duration,
                keep_body=True,
                first_index=10**6,
            )
        )
        drain = wait_drained(sink, before + len(result.ok(202)), quiet=3, limit=DRAIN_LIMIT)
        processes.stop_all()
        latencies, arrivals, missing = match(result, sink, app.db)

    window = [a for a in arrivals if a <= result.ended]
    delivered = len(window) / result.elapsed
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    label = f"e2e {OFFERED_RATE:,.0f}/s offered, {how}"
    return RowResult(
        name or f"e2e-{worker}",
        [
            Line(
                f"{label}: delivered/s",
                delivered,
                "/s",
                base["per_second"],
                f"keeps up ({OFFERED_RATE:,.0f}/s)",
                delivered >= 0.98 * OFFERED_RATE and missing == 0 and result.unsent == 0,
            ),
            Line(f"{label}: accept->SMTP p50", p50, "ms", higher_is_better=False),
            Line(
                f"{label}: accept->SMTP p99",
                p99,
                "ms",
                None,
                "<= 100 ms",
                p99 <= 100,
                higher_is_better=False,
            ),
        ],
        {
            "offered_per_second": OFFERED_RATE,
            "intake": load_summary(result, 202),
            "emails_matched": len(latencies),
            "accepted_without_email": missing,
            "drain_seconds_after_load": round(drain, 2),
            "sink_baseline": base,
        },
    )


def e2e_sustained(
    options: Options,
    *,
    worker: str = "in-process",
    workers: int = 1,
    database_url: str | None = None,
    how: str = "serve (in-process worker)",
    target: float = 1500.0,
    name: str = "e2e-sustained",
) -> RowResult:
    """As many events as 32 clients can post: emails per second accepted by the sink in the
    steady part of the run (after the first 2 s), by default serve with its in-process
    worker; ``worker``, ``workers`` and ``database_url`` as for :func:`start_tidings`."""
    duration = options.seconds(8, 30)
    base = sink_baseline(options)
    with workspace("sustained") as (tmp, processes):
        sink = start_sink(tmp, processes)
        app = start_tidings(
            tmp,
            processes,
            worker=worker,
            smtp_port=sink.port,
            workers=workers,
            database_url=database_url,
        )
        make = single_requests(app.port, app.key)
        options.log(f"e2e: sustained, {CLIENTS} clients posting for {duration:.0f} s")
        result = run_load(
            closed_loop(
                HOST, app.port, make, concurrency=CLIENTS, duration=duration, keep_body=True
            )
        )
        at_end = sink.count()
        drain = wait_drained(sink, len(result.ok(202)), quiet=3, limit=DRAIN_LIMIT)
        processes.stop_all()
        latencies, arrivals, missing = match(result, sink, app.db)

    steady_from = result.started + 2.0
    steady = [a for a in arrivals if steady_from <= a <= result.ended]
    delivered = len(steady) / (result.ended - steady_from)
    return RowResult(
        name,
        [
            Line(
                f"e2e sustained, {CLIENTS} clients, {how}: delivered/s",
                delivered,
                "/s",
                base["per_second"],
                f">= {target:,.0f} /s",
                delivered >= target,
            ),
        ],
        {
            "intake": load_summary(result, 202),
            "emails_when_load_ended": at_end,
            "emails_matched": len(latencies),
            "accepted_without_email": missing,
            "drain_seconds_after_load": round(drain, 2),
            "accept_to_smtp_p50_ms": round(percentile(latencies, 50), 2),
            "accept_to_smtp_p99_ms": round(percentile(latencies, 99), 2),
            "sink_baseline": base,
        },
    )


ROWS: dict[str, Callable[[Options], RowResult]] = {
    "single": single,
    "batch": batch,
    "e2e": lambda options: e2e_latency(options, "in-process"),
    "e2e-worker": lambda options: e2e_latency(options, "process"),
    "e2e-sustained": e2e_sustained,
    "spike": lambda options: rows_scale.spike(options),
    "backlog": lambda options: rows_scale.backlog(options),
    "postgres": lambda options: rows_postgres.postgres(options),
    "peer-queue": lambda options: rows_peers.peer_queue(options),
    "peer-smtp": lambda options: rows_peers.peer_smtp(options),
}

# The other row modules build on the helpers above: imported last, so that any of them
# can be imported first.
import bench.rows_peers as rows_peers  # noqa: E402
import bench.rows_postgres as rows_postgres  # noqa: E402
import bench.rows_scale as rows_scale  # noqa: E402
