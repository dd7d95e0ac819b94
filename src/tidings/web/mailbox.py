"""``/dev/mailbox``: what the embedded mail sink received, for trying Tidings locally.

Only mounted when no outside SMTP server is configured; it shows demo mail, never a
real customer's. Message bodies are shown in a sandboxed iframe, so their HTML cannot
run script or reach this page.
"""

from __future__ import annotations

from email.message import EmailMessage
from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from tidings.api.problems import ApiProblem
from tidings.delivery.sink import MailSink

router = APIRouter(tags=["development"], include_in_schema=False)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2933}
table{border-collapse:collapse;width:100%}td,th{padding:.4rem .6rem;border-bottom:1px solid #e4e7eb;
text-align:left}th{background:#f5f7fa}a{color:#2563eb}iframe{width:100%;height:70vh;border:1px solid
#e4e7eb}pre{white-space:pre-wrap;background:#f5f7fa;padding:1rem}
"""


def _sink(request: Request) -> MailSink:
    sink: MailSink | None = request.app.state.runtime.sink
    if sink is None:
        raise ApiProblem(404, "no_mail_sink", "The embedded mail sink is not running.")
    return sink


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>",
        headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "frame-src 'self'; img-src data:"
        },
    )


@router.get("/dev/mailbox")
def mailbox(request: Request) -> HTMLResponse:
    messages = list(reversed(_sink(request).messages()))
    rows = "".join(
        f"<tr><td>{m.number}</td><td>{escape(m.received_at.strftime('%Y-%m-%d %H:%M:%S'))}</td>"
        f"<td>{escape(', '.join(m.rcpt_tos))}</td>"
        f"<td><a href='/dev/mailbox/{m.number}'>{escape(str(m.parsed()['Subject'] or ''))}</a></td>"
        "</tr>"
        for m in messages[:500]
    )
    return _page(
        "Mailbox",
        f"<h1>Mailbox</h1><p>{len(messages)} message(s) received by the local mail sink.</p>"
        f"<table><tr><th>#</th><th>Received (UTC)</th><th>To</th><th>Subject</th></tr>{rows}"
        "</table>",
    )


def _part(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    return str(part.get_content()) if part is not None else None


@router.get("/dev/mailbox/{number}")
def mail(number: int, request: Request) -> HTMLResponse:
    received = _sink(request).get(number)
    if received is None:
        raise ApiProblem(404, "mail_not_found", f"No message number {number} in the mailbox.")
    message = received.parsed()
    html, text = _part(message, "html"), _part(message, "plain")
    headers = "".join(
        f"<tr><th>{escape(name)}</th><td>{escape(str(message[name] or ''))}</td></tr>"
        for name in ("From", "To", "Subject", "Date", "Message-ID", "Content-Language")
    )
    body = f"<p><a href='/dev/mailbox'>&larr; Mailbox</a></p><table>{headers}</table>"
    if html:
        body += f'<h2>HTML</h2><iframe sandbox srcdoc="{escape(html, quote=True)}"></iframe>'
    if text:
        body += f"<h2>Text</h2><pre>{escape(text)}</pre>"
    return _page(str(message["Subject"] or "Message"), body)
