"""Open and click tracking: the HTML rewriting and signing (pure), then the pixel and the
signed redirect through the real app, on a real email the worker sent."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError
from sqlalchemy import select

from tests.support.events import CAMILLE, cloudevent, order_placed, refund_authorized
from tests.support.smtp import SmtpServer
from tests.support.work import drain
from tidings.config import Settings
from tidings.db.schema import audit_log, notifications, receipts
from tidings.delivery.tracking import (
    PIXEL,
    Tracking,
    link_signature,
    pixel_url,
    rewrite_html,
    tracked_link,
    verify_link,
)
from tidings.runtime import Runtime

PUBLIC_URL = "https://tidings.example.com"
SECRET = "s3cret-tracking-key"
TRACK_ALL = Tracking(base_url=PUBLIC_URL, secret=SECRET, opens=True, clicks=True)
NOTIFICATION = "ntf_01JD3K5R8Q2W7Y4N6M1B9C0X5Z"
STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def expected_signature(notification_id: str, url: str) -> str:
    # Written from the contract, not from the module: HMAC-SHA256 over "<id>\n<url>" keyed
    # with the secret, base64url without padding.
    digest = hmac.new(
        SECRET.encode(), f"{notification_id}\n{url}".encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class Links(HTMLParser):
    """What a mail client sees: every href of <a>/<area>, every <img> src, as decoded."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.other_hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("a", "area") and found.get("href") is not None:
            self.hrefs.append(str(found["href"]))
        elif tag == "img":
            self.images.append(found)
        elif found.get("href") is not None:
            self.other_hrefs.append(str(found["href"]))


def links(html_text: str) -> Links:
    parser = Links()
    parser.feed(html_text)
    return parser


def unwrap(link: str) -> tuple[str, str, str]:
    """(notification id, url, signature) of a tracked link."""
    parts = urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC_URL
    prefix = "/t/c/"
    assert parts.path.startswith(prefix)
    query = parse_qs(parts.query)
    return parts.path[len(prefix) :], query["u"][0], query["s"][0]


# ------------------------------------------------------------------ pure functions

PAGE = """<!doctype html><html><head>
<link rel="stylesheet" href="https://cdn.example.com/mail.css"></head>
<BODY><p>Hello <a href="https://shop.example.com/orders/1042?x=1&amp;lang=fr">your order</a>,
<a class='cta' HREF='http://track.example.com/p?n=6A1'>track it</a>
<a href="mailto:support@example.com">write to us</a> <a href="#top">top</a>
<a href="/relative">relative</a> <a title="see href=&quot;https://x.example&quot;">no link</a>
<map><area shape="rect" coords="0,0,1,1" href="https://shop.example.com/map"></map>
<span data-href="https://data.example.com">data</span></p></body></html>"""


def test_rewrite_tracks_only_http_links_of_anchors_and_areas() -> None:
    before = links(PAGE)
    after = links(rewrite_html(PAGE, NOTIFICATION, tracking=TRACK_ALL))
    assert len(after.hrefs) == len(before.hrefs)
    originals = []
    for old, new in zip(before.hrefs, after.hrefs, strict=True):
        if urlsplit(old).scheme in ("http", "https"):
            notification_id, url, signature = unwrap(new)
            assert notification_id == NOTIFICATION
            assert url == old  # the URL a browser would have followed, entities decoded
            assert signature == expected_signature(NOTIFICATION, old)
            originals.append(url)
        else:
            assert new == old
    assert originals == [
        "https://shop.example.com/orders/1042?x=1&lang=fr",
        "http://track.example.com/p?n=6A1",
        "https://shop.example.com/map",
    ]
    # A stylesheet and data attributes are not links a person clicks.
    assert after.other_hrefs == before.other_hrefs
    assert 'data-href="https://data.example.com"' in rewrite_html(
        PAGE, NOTIFICATION, tracking=TRACK_ALL
    )


def test_the_pixel_goes_last_in_the_body() -> None:
    rewritten = rewrite_html(PAGE, NOTIFICATION, tracking=TRACK_ALL)
    [image] = links(rewritten).images
    assert image["src"] == f"{PUBLIC_URL}/t/o/{NOTIFICATION}.gif"
    assert (image["width"], image["height"], image["alt"]) == ("1", "1", "")
    assert rewritten.index("<img") < rewritten.lower().rindex("</body>")
    assert rewritten.index("<img") > rewritten.index("data-href")
    # No </body>: appended at the end.
    bare = rewrite_html("<p>hi</p>", NOTIFICATION, tracking=TRACK_ALL)
    assert bare.startswith("<p>hi</p><img ")
    assert len(links(bare).images) == 1


def test_opens_and_clicks_are_tracked_separately() -> None:
    opens_only = Tracking(base_url=PUBLIC_URL, secret=None, opens=True, clicks=False)
    clicks_only = Tracking(base_url=PUBLIC_URL, secret=SECRET, opens=False, clicks=True)
    with_pixel = links(rewrite_html(PAGE, NOTIFICATION, tracking=opens_only))
    assert with_pixel.hrefs == links(PAGE).hrefs
    assert len(with_pixel.images) == 1
    with_links = links(rewrite_html(PAGE, NOTIFICATION, tracking=clicks_only))
    assert with_links.images == []
    assert with_links.hrefs != links(PAGE).hrefs


def test_click_tracking_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        Tracking(base_url=PUBLIC_URL, secret=None, opens=False, clicks=True)
    with pytest.raises(ValidationError, match="TIDINGS_TRACKING_SECRET"):
        Settings(public_url=PUBLIC_URL, track_clicks=True)
    with pytest.raises(ValidationError, match="TIDINGS_PUBLIC_URL"):
        Settings(track_opens=True)
    assert Tracking.from_settings(Settings()) is None


@given(st.text(min_size=1, max_size=200))
def test_a_signed_link_verifies_only_for_its_own_url(path: str) -> None:
    url = "https://shop.example.com/" + path
    link = tracked_link(NOTIFICATION, url, base_url=PUBLIC_URL, secret=SECRET)
    notification_id, carried, signature = unwrap(link)
    assert (notification_id, carried) == (NOTIFICATION, url)
    assert verify_link(SECRET, NOTIFICATION, url, signature)
    assert not verify_link(SECRET, NOTIFICATION, url + "x", signature)
    assert not verify_link(SECRET, "ntf_OTHER", url, signature)
    assert not verify_link("another-secret", NOTIFICATION, url, signature)
    assert link_signature(SECRET, NOTIFICATION, url) == expected_signature(NOTIFICATION, url)


# ------------------------------------------------------------------ routes


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "public_url": PUBLIC_URL,
            "track_opens": True,
            "track_clicks": True,
            "tracking_secret": SecretStr(SECRET),
        }
    )


def post_event(client: TestClient, event: dict[str, Any]) -> None:
    response = client.post("/api/events", content=json.dumps(event), headers=STRUCTURED)
    assert response.status_code in (200, 202), response.text


def email_notification(runtime: Runtime) -> dict[str, Any]:
    with runtime.engine.connect() as conn:
        row = conn.execute(
            select(notifications).where(notifications.c.channel == "email")
        ).mappings()
        return dict(row.one())


def receipt_rows(runtime: Runtime) -> list[dict[str, Any]]:
    with runtime.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(receipts)).mappings().all()]


@pytest.fixture
def refund_email(client: TestClient, runtime: Runtime) -> dict[str, Any]:
    post_event(client, refund_authorized("1042", customer=CAMILLE))
    drain(runtime)
    row = email_notification(runtime)
    assert row["status"] == "sent"
    return row


def test_the_pixel_is_a_transparent_gif_and_marks_the_email_opened(
    client: TestClient, runtime: Runtime, refund_email: dict[str, Any]
) -> None:
    answer = client.get(
        urlsplit(pixel_url(refund_email["id"], base_url=PUBLIC_URL)).path,
        headers={"Authorization": ""},  # a mail client has no API key
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/gif"
    assert answer.headers["cache-control"] == "no-store"
    body = answer.content
    assert body.startswith(b"GIF89a")
    assert body[6:10] == b"\x01\x00\x01\x00"  # logical screen 1 x 1
    assert b"\x21\xf9\x04\x01" in body  # graphic control extension, transparency flag set
    assert body.endswith(b";")
    assert body == PIXEL
    row = email_notification(runtime)
    assert row["status"] == "acknowledged"
    assert row["acknowledged_at"] is not None
    [receipt] = receipt_rows(runtime)
    assert (receipt["provider"], receipt["outcome"], receipt["notification_id"]) == (
        "tracking",
        "opened",
        refund_email["id"],
    )
    with runtime.engine.connect() as conn:
        actions = [r.action for r in conn.execute(select(audit_log.c.action)).all()]
    assert actions.count("receipt.opened") == 1


def test_the_pixel_of_an_unknown_message_records_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    answer = client.get("/t/o/ntf_NOSUCHTHING.gif")
    assert answer.status_code == 200
    assert answer.content == PIXEL
    assert receipt_rows(runtime) == []


def test_with_tracking_off_the_pixel_is_served_but_nothing_is_recorded(
    client: TestClient, runtime: Runtime, refund_email: dict[str, Any]
) -> None:
    runtime.settings = runtime.settings.model_copy(
        update={"track_opens": False, "track_clicks": False}
    )
    assert client.get(f"/t/o/{refund_email['id']}.gif").content == PIXEL
    link = tracked_link(
        refund_email["id"], "https://shop.example.com/", base_url=PUBLIC_URL, secret=SECRET
    )
    parts = urlsplit(link)
    # Links in mail already sent keep working.
    answer = client.get(f"{parts.path}?{parts.query}", follow_redirects=False)
    assert answer.status_code == 302
    assert receipt_rows(runtime) == []
    assert email_notification(runtime)["status"] == "sent"


def test_a_signed_click_redirects_and_is_recorded(
    client: TestClient, runtime: Runtime, refund_email: dict[str, Any]
) -> None:
    url = "https://shop.example.com/orders/1042?tab=refunds&lang=fr"
    parts = urlsplit(tracked_link(refund_email["id"], url, base_url=PUBLIC_URL, secret=SECRET))
    answer = client.get(
        f"{parts.path}?{parts.query}", follow_redirects=False, headers={"Authorization": ""}
    )
    assert answer.status_code == 302
    assert answer.headers["location"] == url
    assert email_notification(runtime)["status"] == "acknowledged"
    [receipt] = receipt_rows(runtime)
    assert (receipt["outcome"], receipt["detail"]) == ("clicked", url)


@pytest.mark.parametrize(
    "tamper",
    [
        "other_url",  # a valid signature, for another URL
        "other_notification",  # moved to another message
        "bad_signature",
        "no_signature",
        "javascript",  # even signed with our key, only http(s) is followed
    ],
)
def test_a_bad_click_link_is_refused_without_redirect(
    client: TestClient, runtime: Runtime, refund_email: dict[str, Any], tamper: str
) -> None:
    notification_id = refund_email["id"]
    url = "https://shop.example.com/orders/1042"
    signature = link_signature(SECRET, notification_id, url)
    if tamper == "other_url":
        url = "https://evil.example.com/login"
    elif tamper == "other_notification":
        notification_id = "ntf_01JD3K5R8Q2W7Y4N6M1B9C0X5Z"
    elif tamper == "bad_signature":
        signature = signature[:-2] + ("AA" if not signature.endswith("AA") else "BB")
    elif tamper == "no_signature":
        signature = ""
    else:
        url = "javascript:alert(1)"
        signature = link_signature(SECRET, notification_id, url)
    query = urlencode({"u": url, "s": signature})
    answer = client.get(f"/t/c/{notification_id}?{query}", follow_redirects=False)
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert answer.json()["code"] == "invalid_link"
    assert receipt_rows(runtime) == []


def test_a_sent_email_leads_through_the_redirect_to_its_link(
    client: TestClient, runtime: Runtime, smtp_server: SmtpServer
) -> None:
    tracking_url = "https://track.example.com/colissimo?n=6A12345678901&lang=fr"
    post_event(client, order_placed("1042", CAMILLE))
    post_event(
        client,
        cloudevent(
            "shipment.status_changed",
            {
                "order_id": "1042",
                "shipment_id": "shp_1",
                "carrier": "colissimo",
                "tracking_number": "6A12345678901",
                "tracking_url": tracking_url,
                "status": "out_for_delivery",
                "carrier_status": "OutForDelivery_001",
                "occurred_at": "2026-11-22T08:00:00+01:00",
            },
            subject="order/1042",
        ),
    )
    drain(runtime)
    [mail] = smtp_server.parsed()
    html_part = mail.get_body(preferencelist=("html",))
    assert html_part is not None
    html_text = html_part.get_content()
    # The worker tracked the mail as it sent it: its links go through the redirect.
    rewritten = html_text
    assert tracking_url not in {href for href in links(rewritten).hrefs}
    tracked = [href for href in links(rewritten).hrefs if href.startswith(PUBLIC_URL)]
    targets = {unwrap(href)[1]: href for href in tracked}
    assert tracking_url in targets  # the action button, &amp; and all
    assert all(not h.startswith("mailto:") for h in tracked)
    assert any(h.startswith("mailto:") for h in links(rewritten).hrefs)

    parts = urlsplit(targets[tracking_url])
    answer = client.get(f"{parts.path}?{parts.query}", follow_redirects=False)
    assert answer.status_code == 302
    assert answer.headers["location"] == tracking_url
    [image] = [i for i in links(rewritten).images if str(i["src"]).startswith(PUBLIC_URL)]
    pixel = client.get(urlsplit(str(image["src"])).path)
    assert pixel.content == PIXEL
    assert [r["outcome"] for r in receipt_rows(runtime)] == ["clicked", "opened"]
    assert email_notification(runtime)["status"] == "acknowledged"
