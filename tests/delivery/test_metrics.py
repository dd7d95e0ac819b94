"""Delivery metrics: messages sent through the real worker (SMTP, Postmark on loopback, the
inbox), statuses moved as receipts move them, then counted by ``GET /api/metrics/delivery``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, select, update

from tests.delivery.providers.test_email_postmark import TOKEN, postmark_api
from tests.delivery.test_receipts_api import (
    ACCOUNT_SID,
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    TwilioMessagesApi,
    postmark_post,
    postmark_record,
    status_callback,
    twilio_post,
)
from tests.delivery.test_receipts_api import AUTH_TOKEN as TWILIO_AUTH_TOKEN
from tests.delivery.test_receipts_api import PUBLIC_URL as TWILIO_PUBLIC_URL
from tests.delivery.test_receipts_api import SENDER as TWILIO_SENDER
from tests.support.events import refund_authorized
from tests.support.http_stub import HttpStub, Reply, Request
from tests.support.providers import write_refund_rules
from tests.support.smtp import SmtpServer
from tests.support.work import drain
from tidings.api.app import create_app
from tidings.api.keys import create_key
from tidings.config import Settings
from tidings.db.schema import delivery_attempts, notifications
from tidings.db.types import utcnow
from tidings.delivery.metrics import (
    Tally,
    WindowError,
    parse_window,
    rates,
    summarize,
)
from tidings.runtime import Runtime, build_runtime
from tidings.templates.rendering import Renderer
from tidings.templates.store import TemplateStore

STRUCTURED = {"Content-Type": "application/cloudevents+json"}
URL = "/api/metrics/delivery"


def customer(name: str) -> dict[str, str]:
    return {
        "id": f"cus_{name}",
        "name": name.capitalize(),
        "email": f"{name}@example.com",
        "locale": "en-US",
        "time_zone": "America/Chicago",
    }


def post_refunds(client: TestClient, *names: str) -> None:
    for name in names:
        event = refund_authorized(f"ord-{name}", customer=customer(name))
        response = client.post("/api/events", content=json.dumps(event), headers=STRUCTURED)
        assert response.status_code in (200, 202), response.text


def receipt(runtime: Runtime, name: str, channel: str, **values: Any) -> None:
    """Move a notification as a provider receipt (or a tracked open or click) would."""
    with runtime.engine.begin() as conn:
        changed = conn.execute(
            update(notifications)
            .where(notifications.c.customer_id == f"cus_{name}", notifications.c.channel == channel)
            .values(updated_at=utcnow(), **values)
        ).rowcount
    assert changed == 1


def read_inbox(client: TestClient, name: str) -> None:
    inbox = client.get(f"/api/customers/cus_{name}/inbox").json()
    [message] = inbox["messages"]
    response = client.post(f"/api/customers/cus_{name}/inbox/{message['id']}/read")
    assert response.status_code == 200


def age(runtime: Runtime, name: str, by: timedelta) -> None:
    """Move a customer's messages and their attempts back in time, as if sent earlier."""
    with runtime.engine.begin() as conn:
        rows = conn.execute(
            select(notifications.c.id, notifications.c.sent_at, notifications.c.updated_at).where(
                notifications.c.customer_id == f"cus_{name}"
            )
        ).all()
        for row in rows:
            conn.execute(
                update(notifications)
                .where(notifications.c.id == row.id)
                .values(sent_at=row.sent_at - by, updated_at=row.updated_at - by)
            )
            attempts = conn.execute(
                select(delivery_attempts).where(delivery_attempts.c.notification_id == row.id)
            ).all()
            for attempt in attempts:
                conn.execute(
                    update(delivery_attempts)
                    .where(delivery_attempts.c.id == attempt.id)
                    .values(
                        started_at=attempt.started_at - by, finished_at=attempt.finished_at - by
                    )
                )


def statuses(runtime: Runtime) -> dict[tuple[str, str], tuple[str, str | None]]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            select(
                notifications.c.customer_id,
                notifications.c.channel,
                notifications.c.status,
                notifications.c.provider,
            )
        ).all()
    return {(r.customer_id[4:], r.channel): (r.status, r.provider) for r in rows}


@pytest.fixture
def postmark() -> Iterator[HttpStub]:
    accept = postmark_api()
    refused_once: set[str] = set()

    def first_try_fails_for_paula(request: Request) -> Reply:
        # Postmark's own trouble is a 503 (API overview, "HTTP response codes").
        if request.json()["To"] == "paula@example.com" and not refused_once:
            refused_once.add("paula@example.com")
            return Reply(503, "Service Unavailable")
        return accept(request)

    stub = HttpStub(postmark_api(first_try_fails_for_paula)).start()
    yield stub
    stub.stop()


def build_mix(
    client: TestClient,
    runtime: Runtime,
    smtp_server: SmtpServer,
    postmark: HttpStub,
    tmp_path: Path,
) -> None:
    settings = runtime.settings
    # Two days ago, over SMTP: outside the default window.
    post_refunds(client, "olga")
    drain(runtime)
    age(runtime, "olga", timedelta(days=2))

    # SMTP: one clicked, one silent, one refused mailbox, one lost to an outage.
    smtp_server.refused.add("sara@example.com")
    post_refunds(client, "simon", "sophie", "sara")
    drain(runtime)
    smtp_server.stop()
    post_refunds(client, "stan")
    drain(runtime)
    smtp_server.start()

    # Postmark (on loopback), whose first answer for Paula is a 503.
    settings.email_providers = "postmark"
    settings.postmark_server_token = SecretStr(TOKEN)
    settings.postmark_api_url = postmark.url
    post_refunds(client, "paula", "peter", "pia", "pat", "pedro", "penny")
    drain(runtime)
    assert len(postmark.taken()) == 7
    settings.email_providers = "smtp"

    # Nina's email cannot be rendered: it fails before any provider sees it.
    broken = tmp_path / "templates" / "refund_authorized"
    broken.mkdir(parents=True)
    (broken / "email.en.subject").write_text("Refund {{ data.no_such_field.deeper }}")
    renderer = runtime.renderer
    runtime.renderer = Renderer(TemplateStore(override_dir=tmp_path / "templates"))
    post_refunds(client, "nina")
    drain(runtime)
    runtime.renderer = renderer

    now = utcnow()
    receipt(runtime, "simon", "email", status="acknowledged", acknowledged_at=now)  # a click
    receipt(runtime, "paula", "email", status="delivered", delivered_at=now)
    receipt(runtime, "peter", "email", status="acknowledged", delivered_at=now, acknowledged_at=now)
    receipt(runtime, "pia", "email", status="bounced")
    receipt(runtime, "pat", "email", status="complained")
    receipt(runtime, "penny", "email", status="failed")
    for name in ("simon", "paula", "peter"):
        read_inbox(client, name)

    assert statuses(runtime) == {
        ("olga", "email"): ("sent", "smtp"),
        ("olga", "in_app"): ("sent", "inbox"),
        ("simon", "email"): ("acknowledged", "smtp"),
        ("sophie", "email"): ("sent", "smtp"),
        ("sara", "email"): ("dead", "smtp"),
        ("stan", "email"): ("dead", "smtp"),
        ("paula", "email"): ("delivered", "postmark"),
        ("peter", "email"): ("acknowledged", "postmark"),
        ("pia", "email"): ("bounced", "postmark"),
        ("pat", "email"): ("complained", "postmark"),
        ("pedro", "email"): ("sent", "postmark"),
        ("penny", "email"): ("failed", "postmark"),
        ("nina", "email"): ("dead", None),
        **{(name, "in_app"): ("acknowledged", "inbox") for name in ("simon", "paula", "peter")},
        **{
            (name, "in_app"): ("sent", "inbox")
            for name in ("sophie", "sara", "stan", "pia", "pat", "pedro", "penny", "nina")
        },
    }


def counters(**values: Any) -> dict[str, Any]:
    base = dict.fromkeys(
        (
            "sent",
            "delivered",
            "failed",
            "bounced",
            "complained",
            "acknowledged",
            "attempts",
            "transient_failures",
        ),
        0,
    )
    return {**base, "delivery_rate": None, "acknowledgment_rate": None, **values}


def by_group(body: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (row["channel"], row["provider"]): {
            k: v for k, v in row.items() if k not in ("channel", "provider")
        }
        for row in body["channels"]
    }


def test_counts_and_rates_per_channel_and_provider(
    client: TestClient,
    runtime: Runtime,
    smtp_server: SmtpServer,
    postmark: HttpStub,
    tmp_path: Path,
) -> None:
    build_mix(client, runtime, smtp_server, postmark, tmp_path)
    outage_attempts = runtime.settings.retry_max_attempts

    before = utcnow()
    response = client.get(URL)
    after = utcnow()
    assert response.status_code == 200, response.text
    body = response.json()
    until = datetime.fromisoformat(body["until"])
    assert before <= until <= after
    assert until - datetime.fromisoformat(body["since"]) == timedelta(hours=24)

    groups = by_group(body)
    assert list(groups) == sorted(groups)
    assert groups == {
        # SMTP reports no deliveries: both rates unknown, though Simon clicked.
        ("email", "smtp"): counters(
            sent=2,  # Simon, Sophie
            delivered=1,  # Simon: a click proves delivery
            failed=2,  # Sara refused, Stan's retries ran out
            acknowledged=1,
            attempts=3 + outage_attempts,
            transient_failures=outage_attempts - 1,
        ),
        ("email", "postmark"): counters(
            sent=5,  # Paula, Peter, Pia, Pat, Pedro; Penny failed after leaving
            delivered=2,
            failed=1,
            bounced=1,
            complained=1,
            acknowledged=1,
            delivery_rate=2 / 5,
            acknowledgment_rate=1 / 2,
            attempts=7,  # six messages, Paula's twice
            transient_failures=1,
        ),
        # Written to the inbox is delivered.
        ("in_app", "inbox"): counters(
            sent=11,
            delivered=11,
            acknowledged=3,
            delivery_rate=1.0,
            acknowledgment_rate=3 / 11,
            attempts=11,
        ),
        # Nina's email never reached a provider.
        ("email", "none"): counters(failed=1, attempts=1),
    }
    assert body["totals"] == counters(
        sent=2 + 5 + 11,
        delivered=1 + 2 + 11,
        failed=2 + 1 + 1,
        bounced=1,
        complained=1,
        acknowledged=1 + 1 + 3,
        # Over the rows whose delivery is known: Postmark and the inbox, not SMTP.
        delivery_rate=pytest.approx((2 + 11) / (5 + 11)),
        acknowledgment_rate=pytest.approx((1 + 3) / (2 + 11)),
        attempts=(3 + outage_attempts) + 7 + 11 + 1,
        transient_failures=(outage_attempts - 1) + 1,
    )

    # Two days back, written with offsets other than Z: only Olga's messages.
    now = utcnow()
    since = (now - timedelta(days=3)).astimezone(_zone(+2)).isoformat()
    until_text = (now - timedelta(days=1)).astimezone(_zone(-5)).isoformat()
    older = client.get(URL, params={"since": since, "until": until_text})
    assert older.status_code == 200, older.text
    assert by_group(older.json()) == {
        ("email", "smtp"): counters(sent=1, attempts=1),
        ("in_app", "inbox"): counters(
            sent=1, delivered=1, delivery_rate=1.0, acknowledgment_rate=0.0, attempts=1
        ),
    }
    assert older.json()["totals"]["delivery_rate"] == 1.0

    # A window after everything: empty, and rates unknown rather than zero.
    empty = client.get(
        URL,
        params={"since": _z(now + timedelta(minutes=1)), "until": _z(now + timedelta(hours=1))},
    )
    assert empty.status_code == 200, empty.text
    assert empty.json()["channels"] == []
    assert empty.json()["totals"] == counters()


def _zone(hours: int) -> timezone:
    return timezone(timedelta(hours=hours))


def _z(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"since": "2026-11-21T10:00:00"}, "invalid_time", "since"),
        ({"since": "2026-11-21"}, "invalid_time", "since"),
        ({"until": "yesterday"}, "invalid_time", "until"),
        # An unencoded '+' arrives as a space.
        ({"until": "2026-11-21T10:00:00 01:00"}, "invalid_time", "until"),
        (
            {"since": "2026-11-21T10:00:00Z", "until": "2026-11-21T10:00:00Z"},
            "invalid_window",
            "until",
        ),
        (
            {"since": "2026-11-21T12:00:00+01:00", "until": "2026-11-21T10:30:00Z"},
            "invalid_window",
            "until",
        ),
        (
            {"since": "2026-10-01T00:00:00Z", "until": "2026-11-01T00:00:01Z"},
            "window_too_long",
            "since",
        ),
    ],
)
def test_bad_window_is_a_problem_naming_the_field(
    client: TestClient, params: dict[str, str], code: str, field: str
) -> None:
    response = client.get(URL, params=params)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == code
    assert problem["field"] == field


def test_thirty_one_days_is_allowed(client: TestClient) -> None:
    response = client.get(
        URL, params={"since": "2026-10-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"}
    )
    assert response.status_code == 200, response.text


def test_needs_the_metrics_scope(client: TestClient, runtime: Runtime) -> None:
    with runtime.engine.begin() as conn:
        _, inbox_only = create_key(
            conn, name="inbox", scopes=["inbox:read"], actor="tester", now=utcnow()
        )
        _, metrics_key = create_key(
            conn, name="metrics", scopes=["metrics:read"], actor="tester", now=utcnow()
        )
    refused = client.get(URL, headers={"Authorization": f"Bearer {inbox_only}"})
    assert refused.status_code == 403
    assert refused.json()["code"] == "insufficient_scope"
    assert refused.json()["required_scope"] == "metrics:read"
    # Scope is checked before parameters: no hint about the window without the scope.
    bad_window = client.get(
        URL, params={"since": "nope"}, headers={"Authorization": f"Bearer {inbox_only}"}
    )
    assert bad_window.status_code == 403
    assert client.get(URL, headers={"Authorization": f"Bearer {metrics_key}"}).status_code == 200
    assert client.get(URL, headers={"Authorization": ""}).status_code == 401

    described = client.get("/openapi.json").json()["paths"][URL]["get"]["description"]
    assert "delivery_rate" in described
    assert "SMTP" in described


# --- the rate rules, without a database ----------------------------------------------


def test_rates_are_unknown_rather_than_zero() -> None:
    assert rates(sent=10, delivered=0, acknowledged=0, delivery_known=False).delivery_rate is None
    unknown = rates(sent=10, delivered=3, acknowledged=3, delivery_known=False)
    assert (unknown.delivery_rate, unknown.acknowledgment_rate) == (None, None)
    nothing_sent = rates(sent=0, delivered=0, acknowledged=0, delivery_known=True)
    assert (nothing_sent.delivery_rate, nothing_sent.acknowledgment_rate) == (None, None)
    none_delivered = rates(sent=4, delivered=0, acknowledged=0, delivery_known=True)
    assert (none_delivered.delivery_rate, none_delivered.acknowledgment_rate) == (0.0, None)
    known = rates(sent=8, delivered=6, acknowledged=3, delivery_known=True)
    assert (known.delivery_rate, known.acknowledgment_rate) == (6 / 8, 3 / 6)


def test_summary_applies_the_channel_and_receipt_rules() -> None:
    rows, totals = summarize(
        [
            Tally("sms", "twilio", sent=4, delivered=3, delivery_receipts=3, attempts=5),
            # No receipt ever, only a click: delivery unknown, not 1 of 6.
            Tally("email", "smtp", sent=6, delivered=1, acknowledged=1, attempts=6),
            # Unread messages are in_app "sent" but already delivered.
            Tally("in_app", "inbox", sent=5, delivered=2, acknowledged=2, attempts=5),
            # An acknowledged message whose receipt set delivered_at counts as a receipt.
            Tally("email", "postmark", sent=2, delivered=1, acknowledged=1, delivery_receipts=1),
        ]
    )
    by_key = {(r.channel, r.provider): r.counters for r in rows}
    assert [(r.channel, r.provider) for r in rows] == sorted(by_key)
    assert by_key["sms", "twilio"].delivery_rate == 3 / 4
    assert by_key["sms", "twilio"].acknowledgment_rate == 0.0
    assert by_key["email", "smtp"].delivered == 1
    assert by_key["email", "smtp"].delivery_rate is None
    assert by_key["email", "smtp"].acknowledgment_rate is None
    assert by_key["in_app", "inbox"].delivered == 5
    assert by_key["in_app", "inbox"].delivery_rate == 1.0
    assert by_key["in_app", "inbox"].acknowledgment_rate == 2 / 5
    assert by_key["email", "postmark"].delivery_rate == 1 / 2
    assert totals.sent == 17
    assert totals.delivered == 3 + 1 + 5 + 1
    assert totals.attempts == 16
    assert totals.delivery_rate == pytest.approx((3 + 5 + 1) / (4 + 5 + 2))
    assert totals.acknowledgment_rate == pytest.approx((0 + 2 + 1) / (3 + 5 + 1))

    _, only_smtp = summarize([Tally("email", "smtp", sent=3)])
    assert only_smtp.delivery_rate is None
    assert only_smtp.acknowledgment_rate is None
    _, empty = summarize([])
    assert (empty.sent, empty.delivery_rate, empty.acknowledgment_rate) == (0, None, None)


def test_window_defaults_and_limits() -> None:
    now = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    assert parse_window(since=None, until=None, now=now) == (now - timedelta(hours=24), now)
    assert parse_window(since=None, until="2026-11-20T12:00:00+02:00", now=now) == (
        datetime(2026, 11, 19, 10, 0, tzinfo=UTC),
        datetime(2026, 11, 20, 10, 0, tzinfo=UTC),
    )
    with pytest.raises(WindowError) as future:
        parse_window(since="2026-11-22T00:00:00Z", until=None, now=now)
    assert (future.value.code, future.value.field) == ("invalid_window", "until")
    with pytest.raises(WindowError) as basic:
        parse_window(since="20261121T100000Z", until=None, now=now)
    assert (basic.value.code, basic.value.field) == ("invalid_time", "since")


# --- receipts through their routes, email and SMS ------------------------------------


def test_counts_and_rates_follow_receipts_posted_to_the_postmark_and_twilio_routes(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    """Email by Postmark and SMS by Twilio (both on loopback), each outcome then reported
    the way the provider reports it: Postmark's webhooks with its Basic credentials, Twilio's
    status callbacks signed with the Auth Token over the StatusCallback URL."""
    messages = TwilioMessagesApi()
    busy_once: set[str] = set()

    def twilio(request: Request) -> Reply:
        # Twilio's own trouble for Sam's first send: a 503 ("Twilio API responses").
        if request.form().get("To") == [SMS_CUSTOMERS["sam"]] and not busy_once:
            busy_once.add("sam")
            return Reply(503, {"code": 20503, "message": "Service unavailable", "status": 503})
        return messages(request)

    twilio_stub = HttpStub(twilio).start()
    postmark_stub = HttpStub(postmark_api()).start()
    runtime = build_runtime(
        settings.model_copy(
            update={
                "rules_path": write_refund_rules(tmp_path),
                "email_providers": "postmark",
                "postmark_server_token": SecretStr(TOKEN),
                "postmark_api_url": postmark_stub.url,
                "postmark_webhook_user": POSTMARK_USER,
                "postmark_webhook_password": SecretStr(POSTMARK_PASSWORD),
                "sms_providers": "twilio",
                "twilio_account_sid": ACCOUNT_SID,
                "twilio_auth_token": SecretStr(TWILIO_AUTH_TOKEN),
                "twilio_from": TWILIO_SENDER,
                "twilio_api_url": twilio_stub.url,
                "public_url": TWILIO_PUBLIC_URL,
            }
        ),
        engine=engine,
    )
    with runtime.engine.begin() as conn:
        _, key = create_key(conn, name="t", scopes=["admin"], actor="t", now=utcnow())
    try:
        with TestClient(create_app(runtime)) as client:
            client.headers["Authorization"] = f"Bearer {key}"
            for name, phone in SMS_CUSTOMERS.items():
                person = {**customer(name), "phone": phone}
                event = refund_authorized(f"ord-{name}", customer=person)
                response = client.post("/api/events", content=json.dumps(event), headers=STRUCTURED)
                assert response.status_code in (200, 202), response.text
            drain(runtime)
            rows = notification_rows(runtime)
            assert {at: row["status"] for at, row in rows.items()} == {
                (name, channel): "sent" for name in SMS_CUSTOMERS for channel in ("email", "sms")
            }
            assert len(postmark_stub.taken()) == 5
            assert len(twilio_stub.taken()) == 6  # Sam's SMS twice
            callbacks = {
                created["To"]: (created["sid"], urlsplit(created["StatusCallback"]).query)
                for created in messages.created
            }

            def email(name: str, record: str, **fields: Any) -> str:
                row = rows[name, "email"]
                payload = postmark_record(
                    record, {"id": row["id"], "recipient": row["recipient"]}, **fields
                )
                answer = postmark_post(client, payload)
                assert answer.status_code == 200, answer.text
                return str(answer.json()["status"])

            def sms(name: str, status: str, **fields: str) -> None:
                sid, query = callbacks[SMS_CUSTOMERS[name]]
                params = status_callback(sid, status, To=SMS_CUSTOMERS[name], **fields)
                answer = twilio_post(client, params, query=query)
                assert answer.status_code == 200, answer.text

            assert email("sam", "Delivery") == "delivered"
            assert email("suki", "Delivery") == "delivered"
            assert email("suki", "Open") == "acknowledged"
            assert email("sven", "Bounce") == "bounced"
            assert email("sol", "SpamComplaint", Type="SpamComplaint", TypeCode=512) == (
                "complained"
            )
            # Sid: sent, no word since.
            sms("sam", "delivered")
            sms("suki", "sent")
            sms("suki", "delivered")
            sms("sven", "undelivered", ErrorCode="30003")  # handset off: failed
            sms("sol", "sent")
            # Sid: no callback at all.

            assert {at: row["status"] for at, row in notification_rows(runtime).items()} == {
                ("sam", "email"): "delivered",
                ("suki", "email"): "acknowledged",
                ("sven", "email"): "bounced",
                ("sol", "email"): "complained",
                ("sid", "email"): "sent",
                ("sam", "sms"): "delivered",
                ("suki", "sms"): "delivered",
                ("sven", "sms"): "failed",
                ("sol", "sms"): "sent",
                ("sid", "sms"): "sent",
            }
            response = client.get(URL)
    finally:
        twilio_stub.stop()
        postmark_stub.stop()
    assert response.status_code == 200, response.text
    body = response.json()
    assert by_group(body) == {
        ("email", "postmark"): counters(
            sent=5,  # every one left; Sven's bounced and Sol's complaint came after
            delivered=2,  # Sam; Suki, opened
            bounced=1,
            complained=1,
            acknowledged=1,
            delivery_rate=2 / 5,
            acknowledgment_rate=1 / 2,
            attempts=5,
            transient_failures=0,
        ),
        ("sms", "twilio"): counters(
            sent=4,  # Sam, Suki, Sol, Sid; Sven's failed and is counted as failed
            delivered=2,  # Sam, Suki
            failed=1,
            acknowledged=0,
            delivery_rate=2 / 4,
            acknowledgment_rate=0.0,
            attempts=6,  # five messages, Sam's twice
            transient_failures=1,
        ),
    }
    assert body["totals"] == counters(
        sent=9,
        delivered=4,
        failed=1,
        bounced=1,
        complained=1,
        acknowledged=1,
        delivery_rate=4 / 9,
        acknowledgment_rate=1 / 4,
        attempts=11,
        transient_failures=1,
    )


SMS_CUSTOMERS = {
    "sam": "+14155550101",
    "suki": "+14155550102",
    "sven": "+14155550103",
    "sol": "+14155550104",
    "sid": "+14155550105",
}


def notification_rows(runtime: Runtime) -> dict[tuple[str, str], dict[str, Any]]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(select(notifications)).mappings().all()
    return {(row["customer_id"][4:], row["channel"]): dict(row) for row in rows}
