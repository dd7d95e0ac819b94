"""VonageSmsProvider against a loopback stand-in for the Vonage SMS API.

The stand-in checks each request as "Send an SMS" documents it (POST /sms/json, form-encoded
api_key, api_secret, from, to as 7-15 digits, text, optional type, client-ref up to 40
characters, callback) and answers as the API does: HTTP 200 with ``message-count`` and one
``messages`` entry per segment whose ``status`` is "0" or an error code with ``error-text``.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

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
from tidings.delivery.providers.sms_vonage import VonageSmsProvider
from tidings.delivery.sms_segments import measure
from tidings.templates.rendering import RenderedMessage

API_KEY = "abcd1234"
API_SECRET = "abcdef0123456789"
SENDER = "Tidings"
DLR_URL = "https://tidings.example.com/api/receipts/vonage"
TO_PATTERN = re.compile(r"\d{7,15}")
TYPES = {"text", "binary", "wappush", "unicode", "vcal", "vcard"}
TIMEOUT = 0.5


def refusal(status: str, error_text: str, count: int = 1) -> dict[str, Any]:
    return {
        "message-count": str(count),
        "messages": [{"status": status, "error-text": error_text}] * count,
    }


@dataclass
class VonageApi:
    """Send an SMS, as the SMS API reference documents it."""

    # Numbers (digits only) the API refuses, with the per-message status it answers.
    refusals: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Answered instead once the request has passed every check.
    fault: Reply | None = None
    sent: list[dict[str, str]] = field(default_factory=list)

    def __call__(self, request: Request) -> Reply:
        if request.method != "POST" or request.path != "/sms/json":
            return Reply(404, "Not Found")
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return Reply(200, refusal("2", "Missing api_key"))
        form = request.form()
        if any(len(values) != 1 for values in form.values()):
            return Reply(200, refusal("3", "Parameter sent more than once"))
        fields = {name: values[0] for name, values in form.items()}
        for name in ("api_key", "api_secret", "from", "to", "text"):
            if not fields.get(name):
                return Reply(200, refusal("2", f"Missing {name} param"))
        if (fields["api_key"], fields["api_secret"]) != (API_KEY, API_SECRET):
            return Reply(200, refusal("4", "Bad Credentials"))
        if not TO_PATTERN.fullmatch(fields["to"]):
            return Reply(200, refusal("3", "Invalid to address"))
        if fields.get("type", "text") not in TYPES:
            return Reply(200, refusal("3", "Invalid message type"))
        if len(fields.get("client-ref", "")) > 40:
            return Reply(200, refusal("3", "Invalid client-ref"))
        if fields["to"] in self.refusals:
            return Reply(200, self.refusals[fields["to"]])
        if self.fault is not None:
            return self.fault
        self.sent.append(fields)
        return Reply(200, self.accepted(fields))

    @staticmethod
    def accepted(fields: dict[str, str]) -> dict[str, Any]:
        segments = max(1, measure(fields["text"]).segments)
        entry = {
            "to": fields["to"],
            "status": "0",
            "remaining-balance": "15.53590000",
            "message-price": "0.03330000",
            "network": "20801",
        }
        if "client-ref" in fields:
            entry["client-ref"] = fields["client-ref"]
        return {
            "message-count": str(segments),
            "messages": [
                {**entry, "message-id": secrets.token_hex(8).upper()} for _ in range(segments)
            ],
        }


@pytest.fixture
def api() -> VonageApi:
    return VonageApi()


@pytest.fixture
def stub(api: VonageApi) -> Iterator[HttpStub]:
    server = HttpStub(api).start()
    yield server
    server.stop()


def outbound(
    parts: dict[str, str] | None = None, *, address: str = "+33612345678"
) -> OutboundMessage:
    return OutboundMessage(
        notification_id="ntf_01JD3K5R8Q2W7Y4N6M1B9C0X5Z",
        channel="sms",
        kind="refund.succeeded",
        address=address,
        customer_id="cus_1",
        rendered=RenderedMessage(
            kind="refund.succeeded",
            channel="sms",
            locale="fr",
            parts=parts
            or {
                "txt": "Votre remboursement de 12,50 EUR pour la commande #1042 est effectué.",
                "txt_short": "Remboursement #1042 effectué.",
            },
            version="v1",
        ),
    )


def send(
    stub: HttpStub,
    message: OutboundMessage,
    *,
    api_secret: str = API_SECRET,
    callback: str | None = None,
    max_segments: int = 3,
) -> SendReceipt:
    async def run() -> SendReceipt:
        async with new_client(timeout=TIMEOUT) as client:
            provider = VonageSmsProvider(
                client,
                api_key=API_KEY,
                api_secret=api_secret,
                sender=SENDER,
                callback=callback,
                base_url=stub.url,
                max_segments=max_segments,
            )
            return await provider.send(message)

    return asyncio.run(run())


# ------------------------------------------------------------------ success


def test_a_message_is_sent_and_its_message_id_is_the_provider_id(
    stub: HttpStub, api: VonageApi
) -> None:
    message = outbound()
    receipt = send(stub, message)

    [sent] = api.sent
    assert receipt.provider_message_id is not None
    assert re.fullmatch(r"[0-9A-F]{16}", receipt.provider_message_id)
    assert sent["to"] == "33612345678"
    assert sent["from"] == SENDER
    assert sent["text"] == message.rendered.parts["txt"]
    assert "type" not in sent
    assert "callback" not in sent


def test_the_client_ref_is_the_stable_message_id(stub: HttpStub, api: VonageApi) -> None:
    message = outbound()
    send(stub, message)
    send(stub, message)
    assert [sent["client-ref"] for sent in api.sent] == [message.message_id] * 2


def test_a_callback_is_passed_when_configured(stub: HttpStub, api: VonageApi) -> None:
    send(stub, outbound(), callback=DLR_URL)
    assert api.sent[0]["callback"] == DLR_URL


def test_a_text_outside_the_gsm_alphabet_is_sent_as_unicode(stub: HttpStub, api: VonageApi) -> None:
    text = "Ваш возврат по заказу #1042 выполнен 😀"
    send(stub, outbound({"txt": text, "txt_short": text}))
    assert api.sent[0]["type"] == "unicode"
    assert api.sent[0]["text"] == text


def test_accented_text_of_the_gsm_alphabet_stays_text(stub: HttpStub, api: VonageApi) -> None:
    send(stub, outbound({"txt": "Remboursement effectué à 100 %: 12,50 €", "txt_short": "x"}))
    assert "type" not in api.sent[0]


def test_a_long_text_sends_the_short_variant(stub: HttpStub, api: VonageApi) -> None:
    long_text = " ".join(["Votre remboursement a bien été effectué sur votre carte."] * 12)
    assert measure(long_text).segments > 3
    send(stub, outbound({"txt": long_text, "txt_short": "Remboursement #1042 effectué."}))
    assert api.sent[0]["text"] == "Remboursement #1042 effectué."


# ------------------------------------------------------------------ refusals


def test_an_invalid_number_is_an_invalid_recipient(stub: HttpStub, api: VonageApi) -> None:
    api.refusals["999123456789"] = refusal("6", "Unroutable message - rejected")
    with pytest.raises(InvalidRecipientError, match="status 6"):
        send(stub, outbound(address="+999123456789"))


def test_a_deactivated_number_is_an_invalid_recipient(stub: HttpStub, api: VonageApi) -> None:
    api.refusals["33699999999"] = refusal("33", "Number de-activated")
    with pytest.raises(InvalidRecipientError, match="status 33"):
        send(stub, outbound(address="+33699999999"))


def test_a_malformed_number_is_permanent(stub: HttpStub) -> None:
    with pytest.raises(PermanentSendError, match="status 3"):
        send(stub, outbound(address="+33 6 12"))


@pytest.mark.parametrize(
    ("status", "error_text"),
    [("7", "Number barred"), ("29", "Non White-listed Destination - rejected")],
)
def test_a_barred_or_unlisted_destination_is_permanent_and_keeps_the_number(
    stub: HttpStub, api: VonageApi, status: str, error_text: str
) -> None:
    api.refusals["33612345678"] = refusal(status, error_text)
    with pytest.raises(PermanentSendError, match=f"status {status}") as caught:
        send(stub, outbound())
    assert not isinstance(caught.value, InvalidRecipientError)


def test_wrong_credentials_are_permanent(stub: HttpStub) -> None:
    with pytest.raises(PermanentSendError, match="status 4"):
        send(stub, outbound(), api_secret="0" * 16)


@pytest.mark.parametrize("status", ["1", "5", "9", "10"])
def test_throttling_and_platform_errors_are_transient(
    stub: HttpStub, api: VonageApi, status: str
) -> None:
    api.refusals["33612345678"] = refusal(status, "try again")
    with pytest.raises(TransientSendError, match=f"status {status}"):
        send(stub, outbound())


def test_a_refusal_of_some_segments_is_not_retried(stub: HttpStub, api: VonageApi) -> None:
    accepted = VonageApi.accepted({"to": "33612345678", "text": "a" * 200})
    accepted["messages"][1] = {"status": "5", "error-text": "Internal Error"}
    api.fault = Reply(200, accepted)
    with pytest.raises(PermanentSendError, match="1 of 2 segments"):
        send(stub, outbound())


# ------------------------------------------------------------------ faults


def test_too_many_requests_is_transient_and_says_when_to_retry(
    stub: HttpStub, api: VonageApi
) -> None:
    api.fault = Reply(429, "", headers={"Retry-After": "5"})
    with pytest.raises(TransientSendError) as caught:
        send(stub, outbound())
    assert caught.value.retry_after == 5.0


def test_a_server_error_is_transient(stub: HttpStub, api: VonageApi) -> None:
    api.fault = Reply(500, "Internal Server Error")
    with pytest.raises(TransientSendError):
        send(stub, outbound())


def test_a_reply_slower_than_the_timeout_is_transient(stub: HttpStub, api: VonageApi) -> None:
    api.fault = Reply(200, VonageApi.accepted({"to": "33612345678", "text": "x"}), hang=1.0)
    with pytest.raises(TransientSendError, match="timed out"):
        send(stub, outbound())


def test_a_connection_cut_mid_reply_is_transient(stub: HttpStub, api: VonageApi) -> None:
    api.fault = Reply(200, VonageApi.accepted({"to": "33612345678", "text": "x"}), cut=True)
    with pytest.raises(TransientSendError):
        send(stub, outbound())
