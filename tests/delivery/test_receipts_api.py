"""Provider receipts through the real app: Twilio status callbacks and STOP/START replies,
Postmark webhooks, and what they do to notifications, the suppression list and the audit.

Notifications are made the way production makes them: a refund event is posted, the worker
sends the email over SMTP and the SMS through the configured Twilio provider to a loopback
stand-in for Twilio's Messages API, which keeps the StatusCallback URL each message was
created with.
Twilio's signatures are computed here with an implementation written from Twilio's
"Webhooks security" page, not with the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import select

from tests.support.events import CAMILLE, refund_authorized
from tests.support.http_stub import HttpStub, Reply, Request
from tests.support.work import drain
from tidings.api.keys import create_key
from tidings.audit.chain import verify
from tidings.config import Settings
from tidings.db.schema import audit_log, notifications, receipts, rejects, suppressions
from tidings.db.types import utcnow
from tidings.delivery.receipts import PROGRESS, next_status
from tidings.delivery.suppressions import suppress, suppression_for
from tidings.engine.rules import BUILTIN_RULES
from tidings.runtime import Runtime

PUBLIC_URL = "https://tidings.example.com"
AUTH_TOKEN = "9f" * 16
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
SENDER = "+15005550006"
POSTMARK_USER = "postmark-hooks"
POSTMARK_PASSWORD = "correct horse: battery"  # a colon is allowed in the password
STRUCTURED = {"Content-Type": "application/cloudevents+json"}
FORM = "application/x-www-form-urlencoded"


# ------------------------------------------------------------------ Twilio, independently


def twilio_sign(url: str, params: dict[str, str]) -> str:
    """Twilio "Webhooks security": the full URL, then each POST field name followed by its
    value, fields sorted by name; HMAC-SHA1 keyed with the Auth Token; Base64."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(AUTH_TOKEN.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass
class TwilioMessagesApi:
    """Create a Message (Messages resource): checks what the real API checks and remembers
    each Message's sid and StatusCallback, as Twilio does to call it back later."""

    created: list[dict[str, str]] = field(default_factory=list)

    def __call__(self, request: Request) -> Reply:
        if request.method != "POST" or request.path != (
            f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        ):
            return Reply(404, {"code": 20404, "message": "Not found", "status": 404})
        expected = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return Reply(401, {"code": 20003, "message": "Authenticate", "status": 401})
        if not request.headers.get("content-type", "").startswith(FORM):
            return Reply(400, {"code": 21604, "message": "'To' is required", "status": 400})
        fields = {name: values[0] for name, values in request.form().items()}
        if not fields.get("To") or not fields.get("Body") or fields.get("From") != SENDER:
            return Reply(400, {"code": 21602, "message": "Missing field", "status": 400})
        sid = "SM" + secrets.token_hex(16)
        self.created.append({**fields, "sid": sid})
        return Reply(201, {"sid": sid, "status": "queued", "to": fields["To"]})


@pytest.fixture
def twilio_api() -> TwilioMessagesApi:
    return TwilioMessagesApi()


@pytest.fixture
def twilio_stub(twilio_api: TwilioMessagesApi) -> Iterator[HttpStub]:
    stub = HttpStub(twilio_api).start()
    yield stub
    stub.stop()


@pytest.fixture
def settings(settings: Settings, tmp_path: Path, twilio_stub: HttpStub) -> Settings:
    # The built-in rules, with refunds also sent by SMS and no quiet hours (SMS waits for
    # the end of quiet hours, which would make the test depend on the clock).
    rules = BUILTIN_RULES.read_text(encoding="utf-8")
    refund_rule = "kind: refund_authorized, category: refund, priority: critical, channels: "
    assert rules.count(refund_rule + "[email, in_app]") == 1
    rules = rules.replace(refund_rule + "[email, in_app]", refund_rule + "[email, sms, in_app]")
    rules = rules.replace('quiet_hours: "21:00-08:00"', "quiet_hours: null")
    path = tmp_path / "rules.yaml"
    path.write_text(rules, encoding="utf-8")
    return settings.model_copy(
        update={
            "rules_path": path,
            "public_url": PUBLIC_URL,
            "twilio_auth_token": SecretStr(AUTH_TOKEN),
            "postmark_webhook_user": POSTMARK_USER,
            "postmark_webhook_password": SecretStr(POSTMARK_PASSWORD),
            # SMS through TwilioSmsProvider, to the stand-in; its StatusCallback is built
            # from TIDINGS_PUBLIC_URL.
            "sms_providers": "twilio",
            "twilio_account_sid": ACCOUNT_SID,
            "twilio_from": SENDER,
            "twilio_api_url": twilio_stub.url,
        }
    )


@pytest.fixture
def sent(
    client: TestClient, runtime: Runtime, twilio_api: TwilioMessagesApi
) -> dict[str, dict[str, Any]]:
    """A refund told by email, SMS and in-app, all sent: the notification rows by channel."""
    post_event(client, refund_authorized("1042", customer=CAMILLE))
    drain(runtime)
    rows = notification_rows(runtime)
    assert {channel: row["status"] for channel, row in rows.items()} == {
        "email": "sent",
        "sms": "sent",
        "in_app": "sent",
    }
    [created] = twilio_api.created
    assert rows["sms"]["provider_message_id"] == created["sid"]
    return rows


def post_event(client: TestClient, event: dict[str, Any]) -> None:
    response = client.post("/api/events", content=json.dumps(event), headers=STRUCTURED)
    assert response.status_code in (200, 202), response.text


def notification_rows(runtime: Runtime) -> dict[str, dict[str, Any]]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(select(notifications)).mappings().all()
    return {row["channel"]: dict(row) for row in rows}


def status_of(runtime: Runtime, notification_id: str) -> dict[str, Any]:
    with runtime.engine.connect() as conn:
        row = conn.execute(
            select(notifications).where(notifications.c.id == notification_id)
        ).mappings()
        return dict(row.one())


def receipt_rows(runtime: Runtime) -> list[dict[str, Any]]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(select(receipts).order_by(receipts.c.id)).mappings().all()
    return [dict(row) for row in rows]


def suppression_rows(runtime: Runtime) -> dict[tuple[str, str], dict[str, Any]]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(select(suppressions)).mappings().all()
    return {(row["channel"], row["address"]): dict(row) for row in rows}


def audit_actions(runtime: Runtime) -> list[tuple[str, str, str]]:
    with runtime.engine.connect() as conn:
        assert verify(conn).ok
        rows = conn.execute(select(audit_log).order_by(audit_log.c.seq)).all()
    return [(row.action, row.subject_type, row.subject_id) for row in rows]


def reject_rows(runtime: Runtime) -> list[dict[str, Any]]:
    with runtime.engine.connect() as conn:
        return [dict(row) for row in conn.execute(select(rejects)).mappings().all()]


def twilio_post(
    client: TestClient,
    params: dict[str, str],
    *,
    query: str = "",
    signature: str | None = None,
) -> Any:
    """POST as Twilio does: form-encoded, signed over the public URL it was told to call."""
    path = "/api/receipts/twilio" + (f"?{query}" if query else "")
    headers = {
        "Content-Type": FORM,
        "X-Twilio-Signature": signature or twilio_sign(PUBLIC_URL + path, params),
        # Twilio sends no API key; the client fixture's must not be what lets it in.
        "Authorization": "",
    }
    return client.post(path, content=urlencode(params), headers=headers)


def status_callback(sid: str, status: str, **extra: str) -> dict[str, str]:
    # Track the message status of outbound messages: the fields of a status callback.
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "From": SENDER,
        "MessageSid": sid,
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": str(CAMILLE["phone"]),
        **extra,
    }


def inbound(body: str, **extra: str) -> dict[str, str]:
    # The incoming message webhook's fields (SmsStatus is "received", there is no
    # MessageStatus).
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "Body": body,
        "From": str(CAMILLE["phone"]),
        "MessageSid": "SM" + secrets.token_hex(16),
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "To": SENDER,
        **extra,
    }


def callback_query(twilio_api: TwilioMessagesApi) -> str:
    """The query of the StatusCallback URL the message was created with."""
    [created] = twilio_api.created
    callback = urlsplit(created["StatusCallback"])
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == (
        f"{PUBLIC_URL}/api/receipts/twilio"
    )
    return callback.query


# ------------------------------------------------------------------ Twilio status callbacks


def test_twilio_delivered_moves_the_sms_forward_and_a_sent_callback_does_not(
    client: TestClient,
    runtime: Runtime,
    sent: dict[str, dict[str, Any]],
    twilio_api: TwilioMessagesApi,
) -> None:
    sms = sent["sms"]
    query = callback_query(twilio_api)
    assert query == urlencode({"notification": f"{sms['id']}.sms"})

    answer = twilio_post(client, status_callback(sms["provider_message_id"], "sent"), query=query)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/xml")
    assert "<Response/>" in answer.text
    assert status_of(runtime, sms["id"])["status"] == "sent"

    answer = twilio_post(
        client, status_callback(sms["provider_message_id"], "delivered"), query=query
    )
    assert answer.status_code == 200
    row = status_of(runtime, sms["id"])
    assert row["status"] == "delivered"
    assert row["delivered_at"] is not None
    assert row["acknowledged_at"] is None
    assert [(r["outcome"], r["notification_id"]) for r in receipt_rows(runtime)] == [
        ("sent", sms["id"]),
        ("delivered", sms["id"]),
    ]
    # Only the move is audited, once, under the notification.
    assert audit_actions(runtime).count(("receipt.delivered", "notification", sms["id"])) == 1
    assert ("receipt.sent", "notification", sms["id"]) not in audit_actions(runtime)
    # The other channels are untouched.
    assert status_of(runtime, sent["email"]["id"])["status"] == "sent"


def test_a_callback_without_our_id_finds_the_message_by_its_sid(
    client: TestClient, runtime: Runtime, sent: dict[str, dict[str, Any]]
) -> None:
    sms = sent["sms"]
    answer = twilio_post(client, status_callback(sms["provider_message_id"], "delivered"))
    assert answer.status_code == 200
    assert status_of(runtime, sms["id"])["status"] == "delivered"


def test_an_unknown_handset_bounces_the_sms_and_suppresses_the_number(
    client: TestClient,
    runtime: Runtime,
    sent: dict[str, dict[str, Any]],
    twilio_api: TwilioMessagesApi,
) -> None:
    sms = sent["sms"]
    params = status_callback(sms["provider_message_id"], "undelivered", ErrorCode="30005")
    assert twilio_post(client, params, query=callback_query(twilio_api)).status_code == 200
    assert status_of(runtime, sms["id"])["status"] == "bounced"
    suppressed = suppression_rows(runtime)[("sms", str(CAMILLE["phone"]))]
    assert suppressed["reason"] == "hard_bounce"
    assert suppressed["source"] == "twilio"
    with runtime.engine.connect() as conn:
        # Dead for everything, refunds included.
        assert suppression_for(conn, channel="sms", address=CAMILLE["phone"], critical=True)
        assert suppression_for(conn, channel="email", address=CAMILLE["email"], critical=True) is (
            None
        )
    actions = audit_actions(runtime)
    assert ("receipt.bounced", "notification", sms["id"]) in actions
    assert ("suppression.added", "suppression", f"sms:{CAMILLE['phone']}") in actions


def test_a_carrier_failure_fails_the_sms_without_suppressing_the_number(
    client: TestClient, runtime: Runtime, sent: dict[str, dict[str, Any]]
) -> None:
    sms = sent["sms"]
    params = status_callback(sms["provider_message_id"], "undelivered", ErrorCode="30003")
    assert twilio_post(client, params).status_code == 200
    assert status_of(runtime, sms["id"])["status"] == "failed"
    assert suppression_rows(runtime) == {}
    # A later "delivered" cannot resurrect it, but is kept.
    params = status_callback(sms["provider_message_id"], "delivered")
    assert twilio_post(client, params).status_code == 200
    assert status_of(runtime, sms["id"])["status"] == "failed"
    assert [r["outcome"] for r in receipt_rows(runtime)] == ["failed", "delivered"]


def test_a_callback_for_an_unknown_message_is_kept_and_acknowledged(
    client: TestClient, runtime: Runtime, sent: dict[str, dict[str, Any]]
) -> None:
    answer = twilio_post(
        client,
        status_callback("SM" + "0" * 32, "delivered"),
        query=urlencode({"notification": "ntf_NOSUCHTHING.sms"}),
    )
    assert answer.status_code == 200
    [row] = receipt_rows(runtime)
    assert row["notification_id"] is None
    assert row["provider_message_id"] == "SM" + "0" * 32
    assert row["outcome"] == "delivered"
    assert {r["status"] for r in notification_rows(runtime).values()} == {"sent"}


# ------------------------------------------------------------------ Twilio: refusals


def test_a_tampered_twilio_request_is_refused_and_kept(
    client: TestClient,
    runtime: Runtime,
    sent: dict[str, dict[str, Any]],
    twilio_api: TwilioMessagesApi,
) -> None:
    sms = sent["sms"]
    query = callback_query(twilio_api)
    genuine = status_callback(sms["provider_message_id"], "delivered")
    signature = twilio_sign(f"{PUBLIC_URL}/api/receipts/twilio?{query}", genuine)
    forged = {**genuine, "MessageStatus": "undelivered", "ErrorCode": "30005"}

    answer = twilio_post(client, forged, query=query, signature=signature)
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["code"] == "invalid_signature"
    # Signed for another URL (here: without our id in the query): refused too.
    moved = twilio_post(
        client,
        genuine,
        query=query,
        signature=twilio_sign(f"{PUBLIC_URL}/api/receipts/twilio", genuine),
    )
    assert moved.status_code == 401
    # The genuine request itself passes.
    assert twilio_post(client, genuine, query=query, signature=signature).status_code == 200

    kept = {row["id"]: row for row in reject_rows(runtime)}
    assert set(kept) == {problem["reject_id"], moved.json()["reject_id"]}
    row = kept[problem["reject_id"]]
    assert (row["channel"], row["source"]) == ("receipts", "twilio")
    assert row["code"] == "invalid_signature"
    assert "MessageStatus=undelivered" in row["payload"]
    assert row["headers"]["x-tidings-query"] == query
    assert "authorization" not in row["headers"]
    assert status_of(runtime, sms["id"])["status"] == "delivered"
    assert suppression_rows(runtime) == {}


def test_twilio_receipts_wait_for_configuration_and_are_kept(
    client: TestClient, runtime: Runtime
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"twilio_auth_token": None})
    params = status_callback("SM" + "1" * 32, "delivered")
    answer = twilio_post(client, params)
    assert answer.status_code == 503
    assert answer.json()["code"] == "provider_not_configured"
    [row] = reject_rows(runtime)
    assert row["id"] == answer.json()["reject_id"]
    assert row["source"] == "twilio"
    assert receipt_rows(runtime) == []


def test_an_unknown_provider_is_not_found(client: TestClient) -> None:
    answer = client.post("/api/receipts/sendgrid", content=b"{}")
    assert answer.status_code == 404
    assert answer.json()["code"] == "unknown_provider"


# ------------------------------------------------------------------ STOP / START


def test_stop_suppresses_every_sms_to_the_number_and_start_lifts_it(
    client: TestClient, runtime: Runtime
) -> None:
    phone = str(CAMILLE["phone"])
    answer = twilio_post(client, inbound(" stop "))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/xml")
    assert "<Response/>" in answer.text  # Twilio sends its own confirmation, not us
    row = suppression_rows(runtime)[("sms", phone)]
    assert (row["reason"], row["source"]) == ("stop", "twilio")
    with runtime.engine.connect() as conn:
        # Carriers require STOP to end every message from the sender, critical ones too.
        assert "STOP" in (suppression_for(conn, channel="sms", address=phone, critical=True) or "")
        assert suppression_for(conn, channel="sms", address=phone, critical=False)
        assert suppression_for(conn, channel="email", address=CAMILLE["email"], critical=False) is (
            None
        )

    listed = client.get("/api/suppressions").json()["suppressions"]
    assert [(s["channel"], s["address"], s["reason"]) for s in listed] == [("sms", phone, "stop")]
    # Only the person can lift a STOP.
    refused = client.delete(f"/api/suppressions/sms/{phone}")
    assert refused.status_code == 409
    assert ("sms", phone) in suppression_rows(runtime)

    # Not a keyword: a sentence that contains one changes nothing.
    assert twilio_post(client, inbound("Please START the refund")).status_code == 200
    assert ("sms", phone) in suppression_rows(runtime)

    assert twilio_post(client, inbound("Start")).status_code == 200
    assert suppression_rows(runtime) == {}
    with runtime.engine.connect() as conn:
        assert suppression_for(conn, channel="sms", address=phone, critical=False) is None
    assert [r["outcome"] for r in receipt_rows(runtime)] == ["opted_out", "opted_in"]
    subject = ("suppression", f"sms:{phone}")
    assert [a for a, kind, sid in audit_actions(runtime) if (kind, sid) == subject] == [
        "suppression.added",
        "suppression.lifted",
    ]


def test_advanced_opt_out_keywords_are_taken_from_opt_out_type(
    client: TestClient, runtime: Runtime
) -> None:
    # A custom keyword configured on the Messaging Service ("ARRET"): Twilio classifies it.
    answer = twilio_post(client, inbound("ARRET", OptOutType="STOP"))
    assert answer.status_code == 200
    assert suppression_rows(runtime)[("sms", str(CAMILLE["phone"]))]["reason"] == "stop"
    assert twilio_post(client, inbound("HELP", OptOutType="HELP")).status_code == 200
    assert ("sms", str(CAMILLE["phone"])) in suppression_rows(runtime)


def test_start_does_not_lift_a_bounce(client: TestClient, runtime: Runtime) -> None:
    with runtime.engine.begin() as conn:
        suppress(
            conn,
            channel="sms",
            address=str(CAMILLE["phone"]),
            reason="hard_bounce",
            source="twilio",
            detail="ErrorCode=30005",
            now=utcnow(),
        )
    assert twilio_post(client, inbound("START")).status_code == 200
    assert suppression_rows(runtime)[("sms", str(CAMILLE["phone"]))]["reason"] == "hard_bounce"


# ------------------------------------------------------------------ Postmark


def postmark_post(client: TestClient, payload: dict[str, Any], *, password: str = "") -> Any:
    credentials = f"{POSTMARK_USER}:{password or POSTMARK_PASSWORD}".encode()
    return client.post(
        "/api/receipts/postmark",
        content=json.dumps(payload),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(credentials).decode(),
        },
    )


def postmark_record(record_type: str, email: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A Postmark webhook body as its webhook pages document it."""
    base: dict[str, Any] = {
        "RecordType": record_type,
        "MessageStream": "outbound",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Tag": "",
        "Metadata": {"notification_id": email["id"]},
        "ServerID": 23,
    }
    if record_type == "Delivery":
        base |= {
            "Recipient": email["recipient"],
            "DeliveredAt": "2026-11-21T10:00:05Z",
            "Details": "Test delivery webhook details",
        }
    elif record_type == "Open":
        base |= {
            "Recipient": email["recipient"],
            "FirstOpen": True,
            "ReceivedAt": "2026-11-21T10:05:00Z",
            "Platform": "WebMail",
            "ReadSeconds": 5,
            "UserAgent": "Mozilla/5.0",
        }
    else:  # Bounce, SpamComplaint
        base |= {
            "ID": 4323372036854775807,
            "Type": "HardBounce",
            "TypeCode": 1,
            "Name": "Hard bounce",
            "Description": "The server was unable to deliver your message.",
            "Details": "smtp;550 5.1.1 The email account does not exist.",
            "Email": email["recipient"].upper(),
            "From": "orders@tidings.localhost",
            "BouncedAt": "2026-11-21T10:00:05Z",
            "DumpAvailable": True,
            "Inactive": True,
            "CanActivate": True,
            "Subject": "Refund",
        }
    return base | fields


def test_postmark_delivery_then_open_then_late_delivery(
    client: TestClient, runtime: Runtime, sent: dict[str, dict[str, Any]]
) -> None:
    email = sent["email"]
    answer = postmark_post(client, postmark_record("Delivery", email))
    assert answer.status_code == 200
    assert answer.json()["status"] == "delivered"
    assert postmark_post(client, postmark_record("Open", email)).json()["status"] == (
        "acknowledged"
    )
    late = postmark_post(client, postmark_record("Delivery", email))
    assert late.status_code == 200
    row = status_of(runtime, email["id"])
    assert row["status"] == "acknowledged"  # never backwards
    assert row["delivered_at"] is not None
    assert row["acknowledged_at"] is not None
    assert [r["outcome"] for r in receipt_rows(runtime)] == ["delivered", "opened", "delivered"]
    moves = [a for a, _, sid in audit_actions(runtime) if sid == email["id"] and "receipt" in a]
    assert moves == ["receipt.delivered", "receipt.opened"]


def test_postmark_hard_bounce_suppresses_the_address_for_every_message(
    client: TestClient, runtime: Runtime, sent: dict[str, dict[str, Any]]
) -> None:
    email = sent["email"]
    answer = postmark_post(client, postmark_record("Bounce", email))
    assert answer.status_code == 200
    assert status_of(runtime, email["id"])["status"] == "bounced"
    row = suppression_rows(runtime)[("email", str(CAMILLE["email"]))]
    assert (row["reason"], row["source"]) == ("hard_bounce", "postmark")
    with runtime.engine.connect() as conn:
        why = suppression_for(
            conn, channel="email", address=str(CAMILLE["email"]).upper(), critical=True
        )
    assert why is not None
    assert "bounced" in why


def test_postmark_soft_bounce_is_recorded_without_suppression(
    client: TestClient, runtime: Runtime, sent: dict[str, dict[str, Any]]
) -> None:
    email = sent["email"]
    payload = postmark_record("Bounce", email, Type="Transient", TypeCode=2, Inactive=False)
    assert postmark_post(client, payload).status_code == 200
    assert status_of(runtime, email["id"])["status"] == "sent"
    assert suppression_rows(runtime) == {}
    [row] = receipt_rows(runtime)
    assert (row["outcome"], row["notification_id"]) == ("soft_bounce", email["id"])


def test_postmark_complaint_after_an_open_wins_and_suppresses(
    client: TestClient, runtime: Runtime, sent: dict[str, dict[str, Any]]
) -> None:
    email = sent["email"]
    assert postmark_post(client, postmark_record("Open", email)).status_code == 200
    complaint = postmark_record("SpamComplaint", email, Type="SpamComplaint", TypeCode=512)
    assert postmark_post(client, complaint).status_code == 200
    assert status_of(runtime, email["id"])["status"] == "complained"
    assert suppression_rows(runtime)[("email", str(CAMILLE["email"]))]["reason"] == "complaint"


def test_postmark_with_wrong_credentials_is_refused_and_kept_without_them(
    client: TestClient, runtime: Runtime, sent: dict[str, dict[str, Any]]
) -> None:
    email = sent["email"]
    answer = postmark_post(client, postmark_record("Bounce", email), password="guess")
    assert answer.status_code == 401
    assert answer.json()["code"] == "invalid_credentials"
    [row] = reject_rows(runtime)
    assert (row["source"], row["code"]) == ("postmark", "invalid_credentials")
    assert json.loads(row["payload"])["RecordType"] == "Bounce"
    assert "authorization" not in row["headers"]
    assert status_of(runtime, email["id"])["status"] == "sent"
    assert suppression_rows(runtime) == {}
    assert receipt_rows(runtime) == []


def test_postmark_payload_that_is_not_a_webhook_is_refused_and_kept(
    client: TestClient, runtime: Runtime
) -> None:
    answer = postmark_post(client, {"RecordType": "Inbound", "MessageID": "x"})
    assert answer.status_code == 422
    assert answer.json()["reject_id"] == reject_rows(runtime)[0]["id"]


def test_postmark_unconfigured_is_refused_and_kept(client: TestClient, runtime: Runtime) -> None:
    runtime.settings = runtime.settings.model_copy(update={"postmark_webhook_password": None})
    answer = postmark_post(client, {"RecordType": "Delivery"})
    assert answer.status_code == 503
    assert [row["code"] for row in reject_rows(runtime)] == ["provider_not_configured"]


# ------------------------------------------------------------------ operators' routes


def test_an_operator_lifts_a_bounce_and_it_is_audited(
    client: TestClient, runtime: Runtime, sent: dict[str, dict[str, Any]]
) -> None:
    assert postmark_post(client, postmark_record("Bounce", sent["email"])).status_code == 200
    address = str(CAMILLE["email"])
    with runtime.engine.begin() as conn:
        _, reader = create_key(
            conn, name="support", scopes=["customers:read"], actor="alex", now=utcnow()
        )
        _, writer = create_key(
            conn, name="ops", scopes=["customers:write"], actor="sam", now=utcnow()
        )
    as_reader = {"Authorization": f"Bearer {reader}"}
    listed = client.get("/api/suppressions?channel=email", headers=as_reader)
    assert listed.status_code == 200
    assert [s["address"] for s in listed.json()["suppressions"]] == [address]
    assert client.get("/api/suppressions?channel=sms", headers=as_reader).json() == {
        "suppressions": []
    }
    assert client.delete(f"/api/suppressions/email/{address}", headers=as_reader).status_code == (
        403
    )
    assert client.get("/api/suppressions", headers={"Authorization": ""}).status_code == 401

    as_writer = {"Authorization": f"Bearer {writer}"}
    lifted = client.delete(f"/api/suppressions/email/{address}", headers=as_writer)
    assert lifted.status_code == 200
    assert lifted.json()["reason"] == "hard_bounce"
    assert suppression_rows(runtime) == {}
    again = client.delete(f"/api/suppressions/email/{address}", headers=as_writer)
    assert again.status_code == 404
    with runtime.engine.connect() as conn:
        entry = conn.execute(
            select(audit_log).where(audit_log.c.action == "suppression.lifted")
        ).one()
    assert (entry.actor, entry.subject_id) == ("sam", f"email:{address}")


# ------------------------------------------------------------------ the state machine


OUTCOMES = ["delivered", "opened", "clicked", "bounced", "complained", "failed", "sent"]


@given(st.lists(st.tuples(st.sampled_from(OUTCOMES), st.booleans()), max_size=12))
def test_receipts_never_move_a_notification_backwards(steps: list[tuple[str, bool]]) -> None:
    status = "sent"
    for outcome, hard in steps:
        moved = next_status(status, outcome, hard=hard)
        if moved is None:
            continue
        if status in PROGRESS and moved in PROGRESS:
            assert PROGRESS[moved] > PROGRESS[status]
        status = moved
    # An ending is an ending: no receipt leaves it.
    if status not in PROGRESS:
        assert all(next_status(status, o, hard=True) is None for o in OUTCOMES)


@pytest.mark.parametrize(
    ("current", "outcome", "hard", "expected"),
    [
        ("sent", "delivered", False, "delivered"),
        ("acknowledged", "delivered", False, None),
        ("delivered", "opened", False, "acknowledged"),
        ("delivered", "bounced", True, "bounced"),  # an asynchronous bounce
        ("acknowledged", "bounced", True, None),  # it was opened: not a bounce
        ("acknowledged", "complained", True, "complained"),
        ("sent", "bounced", False, None),  # soft
        ("delivered", "failed", False, None),
        ("sent", "failed", False, "failed"),
        ("dead", "delivered", False, None),
    ],
)
def test_next_status_table(current: str, outcome: str, hard: bool, expected: str | None) -> None:
    assert next_status(current, outcome, hard=hard) == expected
