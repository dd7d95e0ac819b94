"""``/dashboard``: the operator's landing page. It shows no customer or volume data without
signing in, so for now it links to what is public and explains where the rest lives."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["dashboard"], include_in_schema=False)

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:44rem;color:#1f2933}"
    "code{background:#f5f7fa;padding:.1rem .3rem}li{margin:.4rem 0}a{color:#2563eb}"
)


@router.get("/dashboard")
def dashboard(request: Request) -> HTMLResponse:
    runtime = request.app.state.runtime
    links = [
        ("/docs", "API reference (OpenAPI)"),
        ("/readyz", "Readiness: database, migrations, worker heartbeat"),
    ]
    if runtime.sink is not None:
        links.insert(0, ("/dev/mailbox", "Mailbox: mail received by the local sink"))
    items = "".join(f"<li><a href='{href}'>{escape(text)}</a></li>" for href, text in links)
    return HTMLResponse(
        "<!doctype html><html><head><meta charset='utf-8'><title>Tidings</title>"
        f"<style>{_STYLE}</style></head><body><h1>Tidings</h1>"
        f"<p>{escape(runtime.settings.store_name)}: the pipeline is running.</p><ul>{items}</ul>"
        "<p>From the command line: <code>tidings rejects list</code>, "
        "<code>tidings dlq list</code>, <code>tidings audit verify</code>.</p></body></html>"
    )
