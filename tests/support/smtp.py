"""A real SMTP server on loopback that can go down and come back on the same port."""

from __future__ import annotations

import socket
import time
from collections import Counter
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tidings.delivery.sink import MailSink


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
        self._server.keep(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.content)
        return "250 Message accepted for delivery"


class SmtpServer(MailSink):
    """A real SMTP server (aiosmtpd) standing in for the one a deployment sends to.

    ``refused`` addresses get a permanent 550 at RCPT, as a real server answers for an
    unknown mailbox.
    """

    def __init__(self, port: int) -> None:
        super().__init__(port=port)
        self.refused: set[str] = set()

    def start(self) -> None:
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, ready_timeout=10
        )
        self._controller.start()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

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
