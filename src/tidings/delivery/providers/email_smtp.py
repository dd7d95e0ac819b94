"""Email over SMTP (RFC 5321) with a small pool of persistent connections.

Each message gets a stable Message-ID (RFC 5322 3.6.4) derived from the notification and
channel, so a send retried after a crash is recognizable as the same message downstream.
"""

from __future__ import annotations

import asyncio
import binascii
import secrets
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from urllib.parse import unquote, urlsplit

import aiosmtplib

from tidings.delivery.providers.base import (
    EmailProvider,
    OutboundMessage,
    PermanentSendError,
    SendReceipt,
    TransientSendError,
)

CRLF = "\r\n"


def message_id(notification_id: str, channel: str, domain: str) -> str:
    return f"<{notification_id}.{channel}@{domain}>"


def build_email(message: OutboundMessage, *, sender: str, domain: str) -> bytes:
    """The message as it goes over the wire (RFC 5322 and MIME, RFC 2045-2047): a plain
    text part and, when rendered, an HTML alternative, both UTF-8 in quoted-printable so
    any server takes them (no 8BITMIME needed). Written directly: the ``email`` package's
    object model and generator cost more CPU than the rest of a send together."""
    parts = message.rendered.parts
    headers = [
        _header("Subject", parts.get("subject", "")),
        _header("From", sender),
        _header("To", message.address),
        f"Date: {formatdate(localtime=False, usegmt=True)}",
        f"Message-ID: {message_id(message.notification_id, message.channel, domain)}",
        "MIME-Version: 1.0",
        _header("Content-Language", message.rendered.locale.replace("_", "-")),
    ]
    text = _text_part("plain", parts.get("txt", ""))
    if "html" not in parts:
        return CRLF.join([*headers, *text]).encode()
    # "=_" never occurs in quoted-printable text, so the boundary cannot occur in a part.
    boundary = f"=_{message.notification_id}_{secrets.token_hex(8)}"
    lines = [
        *headers,
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        "",
        f"--{boundary}",
        *text,
        f"--{boundary}",
        *_text_part("html", parts["html"]),
        f"--{boundary}--",
        "",
    ]
    return CRLF.join(lines).encode()


def _header(name: str, value: str) -> str:
    """One header field; a value that is not plain ASCII goes in RFC 2047 encoded words
    (addresses keep their address part readable), and line breaks never pass."""
    value = " ".join(value.splitlines())
    if value.isascii() and len(name) + len(value) < 998:
        return f"{name}: {value}"
    if name in ("From", "To"):
        display, address = parseaddr(value)
        if address and not address.isascii():
            # An internationalized address (RFC 6532) travels as UTF-8, under SMTPUTF8.
            return f"{name}: {address}"
        if address:
            return f"{name}: {formataddr((display, address), charset='utf-8')}"
    encoded = Header(value, "utf-8", header_name=name).encode(linesep=CRLF)
    return f"{name}: {encoded}"


def _text_part(subtype: str, text: str) -> list[str]:
    body = binascii.b2a_qp(text.encode("utf-8"), istext=True).decode("ascii")
    return [
        f'Content-Type: text/{subtype}; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
        "",
        *body.split("\n"),
    ]


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
            await client.sendmail(
                self._envelope_from,
                [message.address],
                email,
                mail_options=[] if message.address.isascii() else ["SMTPUTF8"],
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
        return SendReceipt(
            provider_message_id=message_id(message.notification_id, message.channel, self._domain)
        )

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
