"""An asyncio HTTP/1.1 load generator over raw streams with keep-alive.

Two modes:

* closed loop (:func:`closed_loop`): N clients, each sends its next request as soon as the
  previous answer arrived, for a fixed duration or a fixed count;
* open loop (:func:`open_loop`): requests are due at a fixed offered rate whatever the
  server does; a request's latency counts from when it was due, so time spent waiting for
  a free connection is counted too (no coordinated omission).

Requests are pre-built bytes (see :func:`http_request`), made per index so that every
request can carry its own ids. Raw streams rather than an HTTP client library keep the
generator's own CPU cost small: on a two-core machine it shares the CPU with the server.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

MakeRequest = Callable[[int], bytes]


def http_request(
    method: str, path: str, *, host: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(slots=True)
class Sample:
    index: int
    start: float  # monotonic: when sent (closed loop) or when due (open loop)
    done: float  # monotonic: when the whole answer was read
    status: int  # 0: the connection failed
    body: bytes | None = None

    @property
    def latency(self) -> float:
        return self.done - self.start


@dataclass
class LoadResult:
    samples: list[Sample]
    started: float
    ended: float
    errors: Counter[str] = field(default_factory=Counter)
    unsent: int = 0  # open loop: due within the duration but no connection was free by its end

    @property
    def elapsed(self) -> float:
        return self.ended - self.started

    def statuses(self) -> Counter[int]:
        return Counter(s.status for s in self.samples)

    def ok(self, status: int) -> list[Sample]:
        return [s for s in self.samples if s.status == status]

    def rate(self, status: int) -> float:
        return len(self.ok(status)) / self.elapsed if self.elapsed > 0 else 0.0

    def latency_ms(self, status: int, q: float) -> float:
        return percentile([s.latency * 1000 for s in self.ok(status)], q)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; reconnects after the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes, *, keep_body: bool = False) -> tuple[int, bytes | None]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        if reader is None:
            raise ConnectionError("not connected")
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        chunked = close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        body = await (self._read_chunked(reader) if chunked else reader.readexactly(length))
        if close:
            await self.close()
        return status, body if keep_body else None

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return b"".join(parts)
            parts.append(data[:-2])

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


async def _one(
    conn: HttpConnection,
    raw: bytes,
    index: int,
    start: float,
    keep_body: bool,
    errors: Counter[str],
) -> Sample:
    try:
        status, body = await conn.request(raw, keep_body=keep_body)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        errors[type(exc).__name__] += 1
        await conn.close()
        return Sample(index, start, time.monotonic(), 0)
    return Sample(index, start, time.monotonic(), status, body)


async def closed_loop(
    host: str,
    port: int,
    make: MakeRequest,
    *,
    concurrency: int,
    duration: float | None = None,
    count: int | None = None,
    keep_body: bool = False,
    first_index: int = 0,
) -> LoadResult:
    """``concurrency`` clients back to back, until ``duration`` seconds or ``count`` requests."""
    if duration is None and count is None:
        raise ValueError("give a duration or a count")
    samples: list[Sample] = []
    errors: Counter[str] = Counter()
    next_index = first_index
    started = time.monotonic()
    deadline = started + duration if duration is not None else math.inf
    last = first_index + count if count is not None else math.inf

    async def client() -> None:
        nonlocal next_index
        conn = HttpConnection(host, port)
        try:
            while next_index < last and time.monotonic() < deadline:
                index = next_index
                next_index += 1
                raw = make(index)
                samples.append(await _one(conn, raw, index, time.monotonic(), keep_body, errors))
        finally:
            await conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return LoadResult(samples, started, time.monotonic(), errors)


async def open_loop(
    host: str,
    port: int,
    make: MakeRequest,
    *,
    rate: float,
    duration: float,
    connections: int = 64,
    keep_body: bool = False,
    first_index: int = 0,
) -> LoadResult:
    """Requests due at ``rate`` per second for ``duration`` seconds, over a connection pool.

    A request waits in a queue when every connection is busy; its latency still counts
    from when it was due. Requests still waiting when the duration is over are not sent
    (counted in ``unsent``); those in flight are answered. ``ended`` is when the last
    answer arrived.
    """
    samples: list[Sample] = []
    errors: Counter[str] = Counter()
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    total = int(rate * duration)
    unsent = 0
    started = time.monotonic()
    deadline = started + duration

    async def schedule() -> None:
        nonlocal unsent
        sent = 0
        while sent < total and time.monotonic() < deadline:
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            while sent < due:
                queue.put_nowait((first_index + sent, started + sent / rate))
                sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
        # Offered load the server had not taken by the end is not sent.
        while not queue.empty():
            queue.get_nowait()
            unsent += 1
        unsent += total - sent
        for _ in range(connections):
            queue.put_nowait(None)

    async def client() -> None:
        conn = HttpConnection(host, port)
        try:
            while (item := await queue.get()) is not None:
                index, due_at = item
                samples.append(await _one(conn, make(index), index, due_at, keep_body, errors))
        finally:
            await conn.close()

    await asyncio.gather(schedule(), *(client() for _ in range(connections)))
    return LoadResult(samples, started, time.monotonic(), errors, unsent)
