"""A real SMTP server on loopback that can go down and come back on the same port, and can be
told to get the next mail transactions wrong.

Faults are planned per transaction (one DATA command, which carries one message): the next
``n`` transactions get the fault, whichever messages they carry. A fault says whether the
server had already taken the message when the client lost the reply: after acceptance a
retry is a second copy in the mailbox (the duplicate RFC 1047 describes and that no client
can avoid), before it the retry is the first copy. The server keeps both records, so the
tests can tell the duplicates at-least-once delivery must cause from the ones it must not.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from tidings.delivery.sink import MailSink


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class SmtpFault:
    """What goes wrong with one mail transaction the server would otherwise have taken."""

    # Answered at the end of DATA instead of 250, e.g. "451 4.3.0 ...": nothing is taken.
    # A 4yz reply is transient (RFC 5321 4.2.1), a 5yz one permanent; after a 421 the
    # server closes the connection.
    reply: str | None = None
    # Seconds the server waits before it answers the end of DATA. Past the client's timeout
    # the client gives up and closes the connection; a server that had not taken the
    # message yet then drops it (aiosmtpd cancels the transaction on a lost connection).
    hang: float = 0.0
    # The connection closes during DATA: before acceptance after the headers came in (the
    # client has sent the rest and waits for a reply that never comes); after acceptance
    # once the message is kept, in place of the 250.
    cut: bool = False
    # The server took the message before the reply was lost: a retry sends it twice.
    after_acceptance: bool = False


def _message_id(raw: bytes) -> str:
    headers = BytesHeaderParser(policy=policy.default).parsebytes(raw)
    return str(headers.get("Message-ID", ""))


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self._server.refused:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        fault: SmtpFault | None = getattr(envelope, "fault", None)
        message_id = _message_id(envelope.content)
        self._server.tried(message_id, fault)
        if fault is None:
            self._server.keep(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.content)
            return "250 Message accepted for delivery"
        if fault.after_acceptance:
            self._server.keep(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.content)
        if fault.hang:
            # Cancelled here when the client gives up and closes the connection.
            await asyncio.sleep(fault.hang)
        if fault.cut:
            server.transport.close()
        elif fault.reply is not None:
            return fault.reply
        elif not fault.after_acceptance:
            # A stall the client waited out: the server goes on and takes the message.
            self._server.keep(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.content)
        return "250 Message accepted for delivery"


class _FaultySmtp(SMTP):
    """aiosmtpd's SMTP session, which takes the next planned fault at each DATA command."""

    def __init__(self, handler: _Handler, owner: SmtpServer, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._owner = owner

    async def smtp_DATA(self, arg: str) -> None:
        if self.envelope is None or not self.envelope.rcpt_tos or arg:
            await super().smtp_DATA(arg)  # aiosmtpd answers the out-of-sequence command
            return
        fault = self._owner.next_fault()
        if fault is None or not fault.cut or fault.after_acceptance:
            self.envelope.fault = fault  # type: ignore[attr-defined]
            await super().smtp_DATA(arg)
            if fault is not None and (fault.reply or "").startswith("421"):
                # RFC 5321 3.8: a 421 reply says the server is closing the channel.
                await self._hang_up()
            return
        # Cut before acceptance: read the headers (to know which message it was), then close
        # the connection with the body still on its way.
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        lines: list[bytes] = []
        while (line := await self._reader.readuntil(b"\r\n")) not in (b"\r\n", b".\r\n"):
            lines.append(line)
        self._owner.tried(_message_id(b"".join(lines) + b"\r\n"), fault)
        await self._hang_up()

    async def _hang_up(self) -> None:
        assert self.transport is not None
        self.transport.close()
        # Read no further (what is left of a body must not be taken for commands): the
        # session ends when aiosmtpd sees the connection gone and cancels it.
        await asyncio.get_running_loop().create_future()


class _Controller(Controller):
    def __init__(self, owner: SmtpServer, **kwargs: Any) -> None:
        super().__init__(_Handler(owner), **kwargs)
        self._owner = owner

    def factory(self) -> SMTP:
        return _FaultySmtp(self.handler, self._owner, **self.SMTP_kwargs)


class SmtpServer(MailSink):
    """A real SMTP server (aiosmtpd) standing in for the one a deployment sends to.

    ``refused`` addresses get a permanent 550 at RCPT, as a real server answers for an
    unknown mailbox. ``fail_next`` plans faults for the next transactions.
    """

    def __init__(self, port: int, keep: int = 10_000) -> None:
        super().__init__(port=port, keep=keep)
        self.refused: set[str] = set()
        self._faults_lock = threading.Lock()
        self._planned: deque[SmtpFault] = deque()
        # Every transaction that reached DATA, by Message-ID: the tries the server saw.
        self.tries: Counter[str] = Counter()
        # (Message-ID, fault) of every transaction that went wrong, in order.
        self.faulted: list[tuple[str, SmtpFault]] = []

    def start(self) -> None:
        self._controller = _Controller(self, hostname=self.host, port=self.port, ready_timeout=10)
        self._controller.start()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def fail_next(self, count: int, fault: SmtpFault) -> None:
        """The next ``count`` transactions (after those already planned) get ``fault``."""
        with self._faults_lock:
            self._planned.extend([fault] * count)

    def next_fault(self) -> SmtpFault | None:
        with self._faults_lock:
            return self._planned.popleft() if self._planned else None

    def planned(self) -> int:
        """Faults still to come."""
        with self._faults_lock:
            return len(self._planned)

    def tried(self, message_id: str, fault: SmtpFault | None) -> None:
        with self._faults_lock:
            self.tries[message_id] += 1
            if fault is not None:
                self.faulted.append((message_id, fault))

    def faults_after_acceptance(self) -> list[str]:
        with self._faults_lock:
            return [mid for mid, fault in self.faulted if fault.after_acceptance]

    def faults_before_acceptance(self) -> list[str]:
        with self._faults_lock:
            return [mid for mid, fault in self.faulted if not fault.after_acceptance]

    def parsed(self) -> list[EmailMessage]:
        return [m.parsed() for m in self.messages()]

    def message_ids(self) -> Counter[str]:
        return Counter(str(m["Message-ID"]) for m in self.parsed())

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages()) >= count:
                break
            time.sleep(0.02)
        return self.parsed()
