"""Twilio webhook signatures, status callbacks and inbound keywords."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.delivery.receipts_twilio import (
    TwilioInbound,
    parse_inbound,
    parse_status_callback,
    twilio_signature,
    verify_twilio_signature,
)

# The worked example of Twilio's request validation: auth token "12345", this URL and these
# POST parameters, and the signature Twilio prints for them (twilio-php documentation
# "Validate Incoming Requests", also the fixture of twilio-python's RequestValidator tests).
DOC_TOKEN = "12345"
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
DOC_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


# ------------------------------------------------------------------ signature


def test_the_documented_example_signature_is_reproduced() -> None:
    assert twilio_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS) == DOC_SIGNATURE
    assert verify_twilio_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS, DOC_SIGNATURE)


def test_a_parameter_sent_twice_is_signed_once_per_value_in_order() -> None:
    # twilio-python's fixture for repeated parameters, with its expected signature.
    params = {"Sid": "CA123", "SidAccount": "AC123", "Digits": ["5678", "1234"]}
    assert twilio_signature(DOC_TOKEN, DOC_URL, params) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_a_url_signed_with_its_default_port_still_verifies() -> None:
    # twilio-python's fixture: the same request signed for https://mycompany.com:443/...
    assert verify_twilio_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w=")


def test_a_url_received_with_a_port_verifies_against_the_signature_without_it() -> None:
    with_port = DOC_URL.replace("mycompany.com", "mycompany.com:1234")
    assert verify_twilio_signature(DOC_TOKEN, with_port, DOC_PARAMS, DOC_SIGNATURE)


@pytest.mark.parametrize(
    ("token", "url", "params"),
    [
        ("54321", DOC_URL, DOC_PARAMS),
        (DOC_TOKEN, DOC_URL.replace("https://", "http://"), DOC_PARAMS),
        (DOC_TOKEN, DOC_URL.replace("foo=1", "foo=2"), DOC_PARAMS),
        (DOC_TOKEN, DOC_URL, {**DOC_PARAMS, "Digits": "1235"}),
        (DOC_TOKEN, DOC_URL, {**DOC_PARAMS, "Extra": ""}),
    ],
)
def test_any_change_to_the_request_breaks_the_signature(
    token: str, url: str, params: dict[str, str]
) -> None:
    assert not verify_twilio_signature(token, url, params, DOC_SIGNATURE)


def test_a_missing_or_truncated_signature_is_refused() -> None:
    assert not verify_twilio_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS, "")
    assert not verify_twilio_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS, DOC_SIGNATURE[:-1])


@given(
    params=st.dictionaries(
        st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=8),
        st.text(max_size=20),
        max_size=6,
    )
)
def test_the_signature_does_not_depend_on_parameter_order(params: dict[str, str]) -> None:
    reordered = dict(reversed(list(params.items())))
    signature = twilio_signature(DOC_TOKEN, DOC_URL, params)
    assert twilio_signature(DOC_TOKEN, DOC_URL, reordered) == signature
    assert verify_twilio_signature(DOC_TOKEN, DOC_URL, reordered, signature)


# ------------------------------------------------------------------ status callbacks

CALLBACK_URL = "https://tidings.example.com/api/receipts/twilio?notification=ntf_01ABC.sms"


def callback(status: str, error_code: str | None = None) -> dict[str, str]:
    params = {
        "AccountSid": "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "From": "+15005550006",
        "MessageSid": "SM" + "1" * 32,
        "MessageStatus": status,
        "SmsSid": "SM" + "1" * 32,
        "SmsStatus": status,
        "To": "+33612345678",
    }
    if error_code is not None:
        params["ErrorCode"] = error_code
    return params


@pytest.mark.parametrize(
    ("status", "error_code", "outcome"),
    [
        ("sent", None, "sent"),
        ("delivered", None, "delivered"),
        ("read", None, "delivered"),
        ("undelivered", "30003", "failed"),
        ("undelivered", "30007", "failed"),
        ("failed", "30008", "failed"),
        ("undelivered", "30005", "bounced"),
        ("undelivered", "30006", "bounced"),
        ("failed", "30006", "bounced"),
        ("canceled", None, "failed"),
        ("queued", None, None),
        ("accepted", None, None),
        ("sending", None, None),
        ("DELIVERED", None, "delivered"),
    ],
)
def test_message_status_maps_to_an_outcome(
    status: str, error_code: str | None, outcome: str | None
) -> None:
    parsed = parse_status_callback(callback(status, error_code), url=CALLBACK_URL)
    assert parsed.status == outcome
    assert parsed.error_code == error_code
    assert parsed.message_status == status.lower()


def test_a_status_callback_maps_back_to_its_notification() -> None:
    parsed = parse_status_callback(callback("delivered"), url=CALLBACK_URL)
    assert parsed.message_sid == "SM" + "1" * 32
    assert parsed.notification == "ntf_01ABC.sms"


def test_the_notification_is_read_from_merged_parameters_without_a_url() -> None:
    params = {**callback("sent"), "notification": "ntf_01XYZ.sms"}
    assert parse_status_callback(params).notification == "ntf_01XYZ.sms"
    assert parse_status_callback(callback("sent")).notification is None


# ------------------------------------------------------------------ inbound


def inbound(body: str) -> dict[str, str]:
    return {
        "MessageSid": "SM" + "2" * 32,
        "AccountSid": "AC" + "0" * 32,
        "From": "+33612345678",
        "To": "+15005550006",
        "Body": body,
        "NumMedia": "0",
    }


@pytest.mark.parametrize(
    "body",
    [
        "STOP",
        "stop",
        " Stop\n",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "REVOKE",
        "OPTOUT",
    ],
)
def test_opt_out_keywords_are_stop(body: str) -> None:
    assert parse_inbound(inbound(body)).keyword == "stop"


@pytest.mark.parametrize("body", ["START", "yes", "Unstop "])
def test_opt_in_keywords_are_start(body: str) -> None:
    assert parse_inbound(inbound(body)).keyword == "start"


@pytest.mark.parametrize("body", ["HELP", "info"])
def test_help_keywords_are_help(body: str) -> None:
    assert parse_inbound(inbound(body)).keyword == "help"


@pytest.mark.parametrize(
    "body", ["STOP PLEASE", "please stop", "STOP.", "Where is my parcel?", "", "ST OP"]
)
def test_anything_but_a_whole_keyword_is_no_keyword(body: str) -> None:
    assert parse_inbound(inbound(body)).keyword is None


def test_an_inbound_message_keeps_its_numbers_and_body() -> None:
    assert parse_inbound(inbound(" Stop ")) == TwilioInbound(
        from_number="+33612345678", to_number="+15005550006", body=" Stop ", keyword="stop"
    )
