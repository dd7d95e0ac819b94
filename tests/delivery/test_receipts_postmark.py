"""Postmark webhook authentication and payload reading, on payloads shaped like Postmark's
documented examples."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tidings.delivery.receipts_postmark import check_basic_auth, parse_postmark_webhook

MESSAGE_ID = "883953f4-6105-42a2-a16a-77a8eac79483"
METADATA = {"notification_id": "ntf_01JPOSTMARK", "message_id": "ntf_01JPOSTMARK.email"}


def basic(credentials: bytes) -> str:
    return "Basic " + base64.b64encode(credentials).decode()


def bounce(type_: str, *, inactive: bool = False, record_type: str = "Bounce") -> dict[str, Any]:
    return {
        "RecordType": record_type,
        "ID": 4323372036854775807,
        "Type": type_,
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "Test",
        "MessageID": MESSAGE_ID,
        "Metadata": METADATA,
        "ServerID": 23,
        "MessageStream": "outbound",
        "Description": "The server was unable to deliver your message.",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": "camille@example.fr",
        "From": "orders@lumen.example",
        "BouncedAt": "2026-11-21T16:09:19Z",
        "DumpAvailable": True,
        "Inactive": inactive,
        "CanActivate": True,
        "Subject": "Votre commande",
    }


# Basic auth


def test_basic_auth_accepts_the_configured_credentials() -> None:
    assert check_basic_auth(basic(b"postmark:s3cret"), username="postmark", password="s3cret")


def test_basic_auth_scheme_is_case_insensitive() -> None:
    header = "basic " + base64.b64encode(b"postmark:s3cret").decode()
    assert check_basic_auth(header, username="postmark", password="s3cret")


def test_basic_auth_password_may_contain_colons_and_utf8() -> None:
    header = basic("postmark:pa:ss:wörd".encode())
    assert check_basic_auth(header, username="postmark", password="pa:ss:wörd")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        basic(b"postmark:wrong"),
        basic(b"other:s3cret"),
        basic(b"postmark:s3cret2"),
        basic(b"postmark"),
        basic(b"postmarks3cret"),
        "Bearer " + base64.b64encode(b"postmark:s3cret").decode(),
        "Basic !!!not-base64!!!",
        "Basic",
    ],
)
def test_basic_auth_refuses_anything_else(header: str | None) -> None:
    assert not check_basic_auth(header, username="postmark", password="s3cret")


# Payloads


def test_delivery() -> None:
    receipt = parse_postmark_webhook(
        {
            "RecordType": "Delivery",
            "ServerID": 23,
            "MessageStream": "outbound",
            "MessageID": MESSAGE_ID,
            "Recipient": "camille@example.fr",
            "Tag": "welcome-email",
            "DeliveredAt": "2026-11-21T16:33:54.9070259Z",
            "Details": "Test delivery webhook details",
            "Metadata": METADATA,
        }
    )

    assert receipt is not None
    assert receipt.outcome == "delivered"
    assert receipt.provider_message_id == MESSAGE_ID
    assert receipt.notification == METADATA["notification_id"]
    assert receipt.recipient == "camille@example.fr"
    assert not receipt.hard


@pytest.mark.parametrize("type_", ["HardBounce", "BadEmailAddress", "ManuallyDeactivated"])
def test_hard_bounce_types_are_hard(type_: str) -> None:
    receipt = parse_postmark_webhook(bounce(type_))

    assert receipt is not None
    assert receipt.outcome == "bounced"
    assert receipt.hard
    assert receipt.recipient == "camille@example.fr"
    assert receipt.detail is not None
    assert "550 5.1.1" in receipt.detail


@pytest.mark.parametrize(
    "type_",
    ["SoftBounce", "Transient", "DnsError", "AutoResponder", "SpamNotification", "Blocked"],
)
def test_soft_bounce_types_are_soft(type_: str) -> None:
    receipt = parse_postmark_webhook(bounce(type_))

    assert receipt is not None
    assert receipt.outcome == "bounced"
    assert not receipt.hard


def test_any_bounce_that_deactivated_the_address_is_hard() -> None:
    receipt = parse_postmark_webhook(bounce("SoftBounce", inactive=True))

    assert receipt is not None
    assert receipt.hard


def test_postmark_side_failures_are_failed() -> None:
    receipt = parse_postmark_webhook(bounce("SMTPApiError"))

    assert receipt is not None
    assert receipt.outcome == "failed"
    assert not receipt.hard


@pytest.mark.parametrize(
    ("record_type", "type_"),
    [("SpamComplaint", "SpamComplaint"), ("Bounce", "SpamComplaint"), ("Bounce", "Unsubscribe")],
)
def test_complaints_are_hard_complaints(record_type: str, type_: str) -> None:
    receipt = parse_postmark_webhook(bounce(type_, inactive=True, record_type=record_type))

    assert receipt is not None
    assert receipt.outcome == "complained"
    assert receipt.hard
    assert receipt.notification == METADATA["notification_id"]


def test_open() -> None:
    receipt = parse_postmark_webhook(
        {
            "RecordType": "Open",
            "MessageStream": "outbound",
            "Metadata": METADATA,
            "FirstOpen": True,
            "Recipient": "camille@example.fr",
            "MessageID": MESSAGE_ID,
            "ReceivedAt": "2026-11-21T16:33:54.9070259Z",
            "Platform": "WebMail",
            "ReadSeconds": 5,
            "Tag": "welcome-email",
            "UserAgent": "Mozilla/5.0",
            "OS": {"Name": "OS X 10.7 Lion", "Family": "OS X", "Company": "Apple"},
            "Client": {"Name": "Chrome 35", "Family": "Chrome", "Company": "Google"},
            "Geo": {"IP": "188.2.95.4", "City": "Novi Sad", "Country": "Serbia"},
        }
    )

    assert receipt is not None
    assert receipt.outcome == "opened"
    assert receipt.provider_message_id == MESSAGE_ID
    assert receipt.notification == METADATA["notification_id"]


def test_click_keeps_the_link() -> None:
    receipt = parse_postmark_webhook(
        {
            "RecordType": "Click",
            "MessageStream": "outbound",
            "Metadata": METADATA,
            "Recipient": "camille@example.fr",
            "MessageID": MESSAGE_ID,
            "ReceivedAt": "2026-11-21T16:33:54.9070259Z",
            "Platform": "Desktop",
            "ClickLocation": "HTML",
            "OriginalLink": "https://lumen.example/orders/1042",
            "Tag": "welcome-email",
            "UserAgent": "Mozilla/5.0",
            "OS": {"Name": "OS X 10.7 Lion", "Family": "OS X", "Company": "Apple"},
            "Client": {"Name": "Chrome 35", "Family": "Chrome", "Company": "Google"},
            "Geo": {"IP": "188.2.95.4"},
        }
    )

    assert receipt is not None
    assert receipt.outcome == "clicked"
    assert receipt.detail == "https://lumen.example/orders/1042"


def subscription_change(*, suppress: bool, reason: str | None, message_id: Any) -> dict[str, Any]:
    return {
        "RecordType": "SubscriptionChange",
        "MessageID": message_id,
        "ServerID": 23,
        "MessageStream": "outbound",
        "ChangedAt": "2026-11-21T16:33:54.9070259Z",
        "Recipient": "camille@example.fr",
        "Origin": "Recipient",
        "SuppressSending": suppress,
        "SuppressionReason": reason,
        "Tag": "my-tag",
        "Metadata": METADATA,
    }


@pytest.mark.parametrize(
    ("reason", "outcome"),
    [
        ("HardBounce", "bounced"),
        ("SpamComplaint", "complained"),
        ("ManualSuppression", "complained"),
    ],
)
def test_suppression_stops_the_address(reason: str, outcome: str) -> None:
    receipt = parse_postmark_webhook(
        subscription_change(suppress=True, reason=reason, message_id=MESSAGE_ID)
    )

    assert receipt is not None
    assert receipt.outcome == outcome
    assert receipt.hard
    assert receipt.recipient == "camille@example.fr"


def test_manual_suppression_without_message_id() -> None:
    receipt = parse_postmark_webhook(
        subscription_change(suppress=True, reason="ManualSuppression", message_id=None)
    )

    assert receipt is not None
    assert receipt.provider_message_id is None


def test_reactivation_is_no_outcome() -> None:
    assert (
        parse_postmark_webhook(subscription_change(suppress=False, reason=None, message_id=None))
        is None
    )


def test_mail_sent_without_metadata_has_no_notification() -> None:
    payload = bounce("HardBounce")
    del payload["Metadata"]

    receipt = parse_postmark_webhook(payload)

    assert receipt is not None
    assert receipt.notification is None


@pytest.mark.parametrize("record_type", ["Inbound", "bounce", None, 42])
def test_unknown_record_type_is_a_clear_error(record_type: Any) -> None:
    payload = bounce("HardBounce")
    payload["RecordType"] = record_type

    with pytest.raises(ValueError, match="RecordType"):
        parse_postmark_webhook(payload)


def test_missing_recipient_is_a_clear_error() -> None:
    payload = bounce("HardBounce")
    del payload["Email"]

    with pytest.raises(ValueError, match="Email"):
        parse_postmark_webhook(payload)
