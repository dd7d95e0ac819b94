"""TwilioSmsProvider against a loopback stand-in for the Programmable Messaging API.

The stand-in checks each request as the Messages resource documents it (POST to
/2010-04-01/Accounts/{AccountSid}/Messages.json, HTTP Basic AccountSid:AuthToken,
form-encoded To, From or MessagingServiceSid, Body) and answers with the documented shapes:
201 with a Message, or an error object ``code``, ``message``, ``more_info``, ``status``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.http_stub import HttpStub, Reply, Request
from tidings.delivery.providers.base import (
    InvalidRecipientError,
    OutboundMessage,
    PermanentSendError,
    SendReceipt,
    TransientSendError,
)
from tidings.delivery.providers.http import new_client
from tidings.delivery.providers.sms_twilio import TwilioSmsProvider
from tidings.delivery.sms_segments import measure
from tidings.templates.rendering import RenderedMessage

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f" * 32
SENDER = "+15005550006"
SERVICE_SID = "MG" + "fedcba9876543210" * 2
CALLBACK = "https://tidings.example.com/api/receipts/twilio"
E164 = re.compile(r"\+[1-9]\d{6,14}")
TIMEOUT = 0.5


def twilio_error(status: int, code: int, message: str) -> Reply:
    return Reply(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


@dataclass
class TwilioApi:
    """Create a Message, as the Messages resource documents it."""

    # Numbers the API refuses, with the documented error it answers.
    refusals: dict[str, Reply] = field(default_factory=dict)
    # Answered instead of a Message once the request has passed every check.
    fault: Reply | None = None
    created: list[dict[str, str]] = field(default_factory=list)

    def __call__(self, request: Request) -> Reply:
        if request.method != "POST" or request.path != (
            f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        ):
            return twilio_error(404, 20404, "The requested resource was not found")
        expected = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return twilio_error(401, 20003, "Authenticate")
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        form = request.form()
        if any(len(values) != 1 for values in form.values()):
            return twilio_error(400, 20001, "A parameter was sent more than once")
        fields = {name: values[0] for name, values in form.items()}
        if not fields.get("To"):
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not fields.get("From") and not fields.get("MessagingServiceSid"):
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if not fields.get("Body"):
            return twilio_error(400, 21602, "Message body is required.")
        if len(fields["Body"]) > 1600:
            return twilio_error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        if not E164.fullmatch(fields["To"]):
            return twilio_error(
                400, 21211, f"The 'To' number {fields['To']} is not a valid phone number."
            )
        if fields["To"] in self.refusals:
            return self.refusals[fields["To"]]
        if self.fault is not None:
            return self.fault
        self.created.append(fields)
        return Reply(201, self.message(fields))

    @staticmethod
    def message(fields: dict[str, str]) -> dict[str, Any]:
        sid = "SM" + secrets.token_hex(16)
        return {
            "account_sid": ACCOUNT_SID,
            "api_version": "2010-04-01",
            "body": fields["Body"],
            "date_created": "Thu, 24 Aug 2023 05:01:45 +0000",
            "date_sent": None,
            "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000",
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": fields.get("From"),
            "messaging_service_sid": fields.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": str(measure(fields["Body"]).segments),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if "MessagingServiceSid" in fields else "queued",
            "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}/Media.json"
            },
            "to": fields["To"],
            "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
        }


@pytest.fixture
def api() -> TwilioApi:
    return TwilioApi()


@pytest.fixture
def stub(api: TwilioApi) -> Iterator[HttpStub]:
    server = HttpStub(api).start()
    yield server
    server.stop()


def outbound(
    parts: dict[str, str] | None = None, *, address: str = "+33612345678"
) -> OutboundMessage:
    return OutboundMessage(
        notification_id="ntf_01JD3K5R8Q2W7Y4N6M1B9C0X5Z",
        channel="sms",
        kind="shipment.out_for_delivery",
        address=address,
        customer_id="cus_1",
        rendered=RenderedMessage(
            kind="shipment.out_for_delivery",
            channel="sms",
            locale="fr",
            parts=parts
            or {
                "txt": "Votre colis #1042 est en cours de livraison aujourd'hui.",
                "txt_short": "Colis #1042 en livraison.",
            },
            version="v1",
        ),
    )


def send(
    stub: HttpStub,
    message: OutboundMessage,
    *,
    auth_token: str = AUTH_TOKEN,
    sender: str = SENDER,
    status_callback: str | None = CALLBACK,
    max_segments: int = 3,
) -> SendReceipt:
    async def run() -> SendReceipt:
        async with new_client(timeout=TIMEOUT) as client:
            provider = TwilioSmsProvider(
                client,
                account_sid=ACCOUNT_SID,
                auth_token=auth_token,
                sender=sender,
                status_callback=status_callback,
                base_url=stub.url,
                max_segments=max_segments,
            )
            return await provider.send(message)

    return asyncio.run(run())


# ------------------------------------------------------------------ success


def test_a_message_is_created_and_its_sid_is_the_provider_id(
    stub: HttpStub, api: TwilioApi
) -> None:
    message = outbound()
    receipt = send(stub, message)

    [created] = api.created
    assert receipt.provider_message_id is not None
    assert receipt.provider_message_id.startswith("SM")
    assert created["To"] == "+33612345678"
    assert created["From"] == SENDER
    assert "MessagingServiceSid" not in created
    assert created["Body"] == message.rendered.parts["txt"]


def test_the_status_callback_carries_the_stable_message_id(stub: HttpStub, api: TwilioApi) -> None:
    message = outbound()
    send(stub, message)
    send(stub, message)

    callbacks = [created["StatusCallback"] for created in api.created]
    assert callbacks[0] == callbacks[1]
    url = urlsplit(callbacks[0])
    assert f"{url.scheme}://{url.netloc}{url.path}" == CALLBACK
    assert parse_qs(url.query) == {"notification": [message.message_id]}


def test_a_callback_url_with_a_query_keeps_it(stub: HttpStub, api: TwilioApi) -> None:
    send(stub, outbound(), status_callback=CALLBACK + "?tenant=eu")
    query = parse_qs(urlsplit(api.created[0]["StatusCallback"]).query)
    assert query == {"tenant": ["eu"], "notification": [outbound().message_id]}


def test_without_a_callback_none_is_sent(stub: HttpStub, api: TwilioApi) -> None:
    send(stub, outbound(), status_callback=None)
    assert "StatusCallback" not in api.created[0]


def test_a_messaging_service_sender_goes_as_messaging_service_sid(
    stub: HttpStub, api: TwilioApi
) -> None:
    send(stub, outbound(), sender=SERVICE_SID)
    assert api.created[0]["MessagingServiceSid"] == SERVICE_SID
    assert "From" not in api.created[0]


# ------------------------------------------------------------------ text choice


def test_a_text_too_long_for_the_segment_limit_sends_the_short_variant(
    stub: HttpStub, api: TwilioApi
) -> None:
    long_text = " ".join(["Votre colis arrive aujourd'hui entre 9h et 13h."] * 12)
    assert measure(long_text).segments > 3
    send(stub, outbound({"txt": long_text, "txt_short": "Colis #1042 en livraison."}))
    assert api.created[0]["Body"] == "Colis #1042 en livraison."


def test_when_no_variant_fits_the_body_is_cut_to_the_limit(stub: HttpStub, api: TwilioApi) -> None:
    long_text = " ".join(["Votre colis arrive aujourd'hui entre 9h et 13h."] * 12)
    send(stub, outbound({"txt": long_text, "txt_short": long_text}), max_segments=2)
    body = api.created[0]["Body"]
    assert body.endswith("...")
    assert long_text.startswith(body.removesuffix("..."))
    assert measure(body).segments <= 2


def test_a_message_without_text_is_permanent_and_not_sent(stub: HttpStub, api: TwilioApi) -> None:
    with pytest.raises(PermanentSendError):
        send(stub, outbound({"title": "Colis"}))
    assert stub.taken() == []


# ------------------------------------------------------------------ refusals


def test_an_invalid_number_is_an_invalid_recipient(stub: HttpStub, api: TwilioApi) -> None:
    with pytest.raises(InvalidRecipientError, match="21211"):
        send(stub, outbound(address="0612345678"))


def test_a_number_that_is_not_mobile_is_an_invalid_recipient(
    stub: HttpStub, api: TwilioApi
) -> None:
    api.refusals["+33140000000"] = twilio_error(
        400, 21614, "'To' number is not a valid mobile number"
    )
    with pytest.raises(InvalidRecipientError, match="21614"):
        send(stub, outbound(address="+33140000000"))


def test_an_opted_out_recipient_is_permanent_but_keeps_the_number(
    stub: HttpStub, api: TwilioApi
) -> None:
    api.refusals["+33612345678"] = twilio_error(
        400,
        21610,
        "Attempt to send to unsubscribed recipient",
    )
    with pytest.raises(PermanentSendError, match="21610") as caught:
        send(stub, outbound())
    assert not isinstance(caught.value, InvalidRecipientError)


def test_wrong_credentials_are_permanent(stub: HttpStub) -> None:
    with pytest.raises(PermanentSendError, match="20003"):
        send(stub, outbound(), auth_token="0" * 32)


# ------------------------------------------------------------------ faults


def test_too_many_requests_is_transient_and_says_when_to_retry(
    stub: HttpStub, api: TwilioApi
) -> None:
    api.fault = Reply(
        429,
        {
            "code": 20429,
            "message": "Too Many Requests",
            "more_info": "https://www.twilio.com/docs/errors/20429",
            "status": 429,
        },
        headers={"Retry-After": "7"},
    )
    with pytest.raises(TransientSendError) as caught:
        send(stub, outbound())
    assert caught.value.retry_after == 7.0


def test_a_server_error_is_transient(stub: HttpStub, api: TwilioApi) -> None:
    api.fault = twilio_error(500, 20500, "Internal Server Error")
    with pytest.raises(TransientSendError):
        send(stub, outbound())


def test_a_reply_slower_than_the_timeout_is_transient(stub: HttpStub, api: TwilioApi) -> None:
    api.fault = Reply(201, TwilioApi.message({"To": "+33612345678", "Body": "x"}), hang=1.0)
    with pytest.raises(TransientSendError, match="timed out"):
        send(stub, outbound())


def test_a_connection_cut_mid_reply_is_transient(stub: HttpStub, api: TwilioApi) -> None:
    api.fault = Reply(201, TwilioApi.message({"To": "+33612345678", "Body": "x"}), cut=True)
    with pytest.raises(TransientSendError):
        send(stub, outbound())


def test_an_api_that_is_down_is_transient(stub: HttpStub) -> None:
    stub.down()
    with pytest.raises(TransientSendError):
        send(stub, outbound())
