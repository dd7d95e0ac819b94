"""An embedded SMTP server that keeps what it receives: the local mail sink for `make run`."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller

from tidings.db.types import utcnow


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    number: int
    received_at: datetime
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes

    def parsed(self) -> EmailMessage:
        # policy.default makes the parser build EmailMessage objects.
        return BytesParser(policy=policy.default).parsebytes(self.raw)


class _Handler:
    def __init__(self, sink: MailSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self._sink.keep(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.content)
        return "250 Message accepted for delivery"


class MailSink:
    """A real SMTP server on loopback; received mail is kept in memory, newest last."""

    def __init__(self, host: str = "127.0.0.1", port: int = 2525, keep: int = 10_000) -> None:
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._mail: deque[ReceivedMail] = deque(maxlen=keep)
        self._count = 0
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, ready_timeout=10
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def keep(self, mail_from: str, rcpt_tos: tuple[str, ...], raw: bytes) -> None:
        with self._lock:
            self._count += 1
            self._mail.append(ReceivedMail(self._count, utcnow(), mail_from, rcpt_tos, raw))

    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._mail)

    def get(self, number: int) -> ReceivedMail | None:
        with self._lock:
            return next((m for m in self._mail if m.number == number), None)

    def clear(self) -> None:
        with self._lock:
            self._mail.clear()
