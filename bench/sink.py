"""An outside SMTP server for the end-to-end rows: accepts every message, notes when.

Run as ``python -m bench.sink LOG``: it binds a free loopback port, prints ``PORT <n>`` on
stdout once it listens, and appends one line per accepted message to LOG::

    <time.monotonic() at the end of DATA> <Message-ID>

``time.monotonic()`` is the system-wide CLOCK_MONOTONIC on Linux, so the bench process
can compare these times with its own. SIGTERM or SIGINT flush the log and end it.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from typing import Any

from aiosmtpd.smtp import SMTP

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


class _Recorder:
    def __init__(self, log: Any) -> None:
        self._log = log
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.monotonic()
        content: bytes = envelope.original_content or envelope.content or b""
        head = content.split(b"\r\n\r\n", 1)[0]
        found = _MESSAGE_ID.search(head)
        message_id = found.group(1).decode("ascii", "replace") if found else "-"
        self._log.write(f"{now:.6f} {message_id}\n")
        self.count += 1
        return "250 Message accepted for delivery"


async def _serve(log_path: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with open(log_path, "a", buffering=1 << 16) as log:
        recorder = _Recorder(log)
        server = await loop.create_server(
            lambda: SMTP(recorder, hostname="bench-sink", ident="bench-sink"),
            host="127.0.0.1",
            port=0,
        )
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)

        async def flush() -> None:
            while True:
                await asyncio.sleep(0.1)
                log.flush()

        flusher = asyncio.create_task(flush())
        await stop.wait()
        flusher.cancel()
        server.close()
        log.flush()


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.sink LOG")
    import uvloop  # uvicorn[standard] brings it

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(sys.argv[1]))


if __name__ == "__main__":
    main()
