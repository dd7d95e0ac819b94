"""Email over SMTP (RFC 5321) with a small pool of persistent connections.

Each message gets a stable Message-ID (RFC 5322 3.6.4) derived from the notification and
channel, so a send retried after a crash is recognizable as the same message downstream.
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from urllib.parse import unquote, urlsplit

import aiosmtplib

from tidings.delivery.providers.base import (
    EmailProvider,
    OutboundMessage,
    PermanentSendError,
    SendReceipt,
    TransientSendError,
)


def message_id(notification_id: str, channel: str, domain: str) -> str:
    return f"<{notification_id}.{channel}@{domain}>"


def build_email(message: OutboundMessage, *, sender: str, domain: str) -> EmailMessage:
    parts = message.rendered.parts
    email = EmailMessage()
    email["Subject"] = parts.get("subject", "")
    email["From"] = sender
    email["To"] = message.address
    email["Date"] = formatdate(localtime=False, usegmt=True)
    email["Message-ID"] = message_id(message.notification_id, message.channel, domain)
    email.set_content(parts.get("txt", ""), subtype="plain", charset="utf-8")
    if "html" in parts:
        email.add_alternative(parts["html"], subtype="html", charset="utf-8")
    # After the body: setting content clears Content-* headers (RFC 3282 language tag).
    email["Content-Language"] = message.rendered.locale.replace("_", "-")
    return email


class SmtpEmailProvider(EmailProvider):
    name = "smtp"

    def __init__(
        self, url: str, *, sender: str, domain: str, connections: int, timeout: float
    ) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._use_tls = parts.scheme == "smtps"
        self._port = parts.port or (465 if self._use_tls else 25)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._sender = sender
        self._envelope_from = parseaddr(sender)[1] or sender
        self._domain = domain
        self._timeout = timeout
        self._idle: asyncio.Queue[aiosmtplib.SMTP | None] = asyncio.Queue()
        for _ in range(connections):
            self._idle.put_nowait(None)

    async def send(self, message: OutboundMessage) -> SendReceipt:
        email = build_email(message, sender=self._sender, domain=self._domain)
        client = await self._idle.get()
        try:
            if client is None or not client.is_connected:
                client = await self._connect()
            await client.send_message(
                email, sender=self._envelope_from, recipients=[message.address]
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await _discard(client)
            client = None
            codes = [r.code for r in exc.recipients]
            error = f"recipient refused: {'; '.join(str(r) for r in exc.recipients)}"
            if all(500 <= code < 600 for code in codes):
                raise PermanentSendError(error) from exc
            raise TransientSendError(error) from exc
        except aiosmtplib.SMTPResponseException as exc:
            await _discard(client)
            client = None
            # RFC 5321 4.2.1: 5yz is a permanent negative reply, 4yz transient.
            error = f"SMTP {exc.code}: {exc.message}"
            if 500 <= exc.code < 600:
                raise PermanentSendError(error) from exc
            raise TransientSendError(error) from exc
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            await _discard(client)
            client = None
            raise TransientSendError(f"SMTP server unavailable: {exc!r}") from exc
        finally:
            self._idle.put_nowait(client)
        return SendReceipt(provider_message_id=email["Message-ID"])

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            use_tls=self._use_tls,
            start_tls=False if not self._use_tls else None,
            timeout=self._timeout,
            username=self._username,
            password=self._password,
        )
        await client.connect()
        return client

    async def close(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client is not None:
                await _discard(client)


async def _discard(client: aiosmtplib.SMTP | None) -> None:
    if client is None:
        return None
    try:
        if client.is_connected:
            await client.quit()
    except (TimeoutError, aiosmtplib.SMTPException, OSError):
        client.close()
    return None
