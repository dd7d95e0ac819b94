"""Open and click tracking for HTML email: a pixel, and links through a signed redirect.

Off unless the store turns it on (TIDINGS_TRACK_OPENS, TIDINGS_TRACK_CLICKS). The rewriting
is pure: ``rewrite_html`` takes HTML already rendered (user data in it already escaped,
DESIGN invariant 7) and returns it with each http(s) link of an ``<a>`` or ``<area>``
pointing at ``{public}/t/c/{notification_id}?u=<url>&s=<signature>`` and a 1x1 image
``{public}/t/o/{notification_id}.gif`` before ``</body>``.

Both routes are open to anyone, on purpose: a mail client fetching an image or a person
clicking a link has no credential to show (DESIGN invariant 8 names signature-verified
routes as the exception, and these are that). What keeps them safe:

- The redirect goes only where a link we signed pointed: the signature is HMAC-SHA256 keyed
  with TIDINGS_TRACKING_SECRET (RFC 2104) over the notification id and the exact URL, checked
  in constant time, so ``/t/c/...?u=https://evil.example`` is refused with 400 and no
  ``Location`` (an open redirect would lend our domain to phishing: OWASP "Unvalidated
  Redirects and Forwards").
- The pixel carries no secret: a notification id has 80 random bits, so opens cannot be
  forged for messages one has not received, and an open only ever moves a notification
  forward to "acknowledged", never sends anything. Ids that match no notification are not
  recorded, so the open routes cannot be used to fill the receipts table.

Opens are a hint, not proof: mail privacy proxies fetch images without the person reading,
and link scanners follow links. Changing TIDINGS_TRACKING_SECRET breaks the links in mail
already sent (they answer 400).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from tidings.api.problems import ApiProblem
from tidings.db.types import utcnow
from tidings.delivery.receipts import Receipt, apply_receipt, is_known

if TYPE_CHECKING:
    from tidings.config import Settings
    from tidings.runtime import Runtime

router = APIRouter(tags=["tracking"])
PROVIDER = "tracking"
TRACKED_SCHEMES = frozenset({"http", "https"})
# GIF89a, 1x1, one transparent colour: header, logical screen with a 2-colour table,
# Graphic Control Extension marking index 0 transparent, the image, trailer (GIF89a spec).
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b"!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
# An <a> or <area> start tag; quoted attribute values are taken whole, so a ">" or an
# "href=" inside one is not mistaken for the end of the tag or for an attribute.
_LINK_TAG = re.compile(r"""<(a|area)\b((?:[^>"']|"[^"]*"|'[^']*')*)>""", re.IGNORECASE)
# One attribute: name, then an optional value, double-quoted, single-quoted or bare (HTML
# Living Standard 13.1.2.3 "Attributes").
_ATTRIBUTE = re.compile(r"""([^\s"'>/=]+)(?:(\s*=\s*)("[^"]*"|'[^']*'|[^\s"'=<>`]+))?""")
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Tracking:
    """What a store tracks, and where the tracking routes are reached."""

    base_url: str  # TIDINGS_PUBLIC_URL, no trailing slash
    secret: str | None  # TIDINGS_TRACKING_SECRET; needed for clicks
    opens: bool
    clicks: bool

    def __post_init__(self) -> None:
        if self.clicks and not self.secret:
            raise ValueError("click tracking needs a signing secret (TIDINGS_TRACKING_SECRET)")

    @classmethod
    def from_settings(cls, settings: Settings) -> Tracking | None:
        """None when nothing is tracked (the default)."""
        if not (settings.track_opens or settings.track_clicks) or not settings.public_url:
            return None
        secret = settings.tracking_secret
        return cls(
            base_url=settings.public_url.rstrip("/"),
            secret=secret.get_secret_value() if secret else None,
            opens=settings.track_opens,
            clicks=settings.track_clicks,
        )


def pixel_url(notification_id: str, *, base_url: str) -> str:
    return f"{base_url.rstrip('/')}/t/o/{quote(notification_id, safe='')}.gif"


def link_signature(secret: str, notification_id: str, url: str) -> str:
    """HMAC-SHA256 over the notification id and the URL, base64url without padding (RFC 4648
    section 5). Ids never contain a newline, so the two parts cannot be shifted."""
    message = f"{notification_id}\n{url}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_link(secret: str, notification_id: str, url: str, signature: str) -> bool:
    expected = link_signature(secret, notification_id, url).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", errors="replace"))


def tracked_link(notification_id: str, url: str, *, base_url: str, secret: str) -> str:
    query = urlencode({"u": url, "s": link_signature(secret, notification_id, url)})
    return f"{base_url.rstrip('/')}/t/c/{quote(notification_id, safe='')}?{query}"


def rewrite_html(html_text: str, notification_id: str, *, tracking: Tracking) -> str:
    """The HTML with its http(s) links tracked (clicks on) and a pixel added (opens on)."""
    result = html_text
    if tracking.clicks and tracking.secret:
        secret = tracking.secret

        def link(match: re.Match[str]) -> str:
            attributes = _track_href(match.group(2), notification_id, tracking.base_url, secret)
            return f"<{match.group(1)}{attributes}>"

        result = _LINK_TAG.sub(link, result)
    if tracking.opens:
        src = html.escape(pixel_url(notification_id, base_url=tracking.base_url), quote=True)
        pixel = (
            f'<img src="{src}" width="1" height="1" alt="" '
            'style="display:block;width:1px;height:1px;border:0;margin:0;padding:0">'
        )
        ends = list(_BODY_END.finditer(result))
        if ends:
            at = ends[-1].start()
            result = result[:at] + pixel + result[at:]
        else:
            result += pixel
    return result


def _track_href(attributes: str, notification_id: str, base_url: str, secret: str) -> str:
    out: list[str] = []
    last = 0
    for match in _ATTRIBUTE.finditer(attributes):
        name, equals, raw = match.group(1), match.group(2), match.group(3)
        if name.lower() != "href" or raw is None:
            continue
        quoted = raw[:1] in ('"', "'")
        # The attribute holds the URL with character references (&amp;): decode, then sign
        # the URL a browser would follow.
        url = html.unescape(raw[1:-1] if quoted else raw).strip()
        if urlsplit(url).scheme.lower() not in TRACKED_SCHEMES:
            continue  # mailto:, tel:, #anchors, relative links: nothing to track
        tracked = tracked_link(notification_id, url, base_url=base_url, secret=secret)
        out.append(attributes[last : match.start()])
        out.append(f'{name}{equals}"{html.escape(tracked, quote=True)}"')
        last = match.end()
    out.append(attributes[last:])
    return "".join(out)


# ---------------------------------------------------------------- routes


@router.get("/t/o/{notification_id}.gif", summary="Open-tracking pixel (no credential)")
async def open_pixel(notification_id: str, request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    if runtime.settings.track_opens:
        await run_in_threadpool(_record, runtime, notification_id, "opened", None)
    # Every request is counted: a cached image would hide the second and later opens.
    return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})


@router.get(
    "/t/c/{notification_id}",
    summary="Tracked link: a signed redirect (no credential)",
    responses={302: {"description": "To the link's URL"}, 400: {"description": "Bad signature"}},
)
async def click_redirect(
    notification_id: str,
    request: Request,
    u: str = Query(default="", description="The link's URL"),
    s: str = Query(default="", description="Its signature"),
) -> Response:
    runtime: Runtime = request.app.state.runtime
    secret = runtime.settings.tracking_secret
    valid = (
        secret is not None
        and bool(u)
        and verify_link(secret.get_secret_value(), notification_id, u, s)
        # Signed links only ever hold http(s); refuse anything else even if signed.
        and urlsplit(u).scheme.lower() in TRACKED_SCHEMES
    )
    if not valid:
        raise ApiProblem(
            400,
            "invalid_link",
            "This link is damaged or was not made by this store. Open the store's site "
            "directly instead.",
        )
    if runtime.settings.track_clicks:
        await run_in_threadpool(_record, runtime, notification_id, "clicked", u)
    return RedirectResponse(u, status_code=302, headers={"Cache-Control": "no-store"})


def _record(runtime: Runtime, notification_id: str, outcome: str, detail: str | None) -> None:
    with runtime.engine.begin() as conn:
        if not is_known(conn, notification_id):
            return
        apply_receipt(
            conn,
            receipt=Receipt(
                provider=PROVIDER,
                channel="email",
                outcome=outcome,
                notification=notification_id,
                detail=detail,
            ),
            now=utcnow(),
        )
