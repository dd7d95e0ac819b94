"""Twilio, Vonage and Postmark on loopback for the delivery fault tests.

Each stand-in checks a request with the handler of that provider's own tests, which follow
the provider's documentation (Twilio "Messages resource", Vonage API reference "SMS API",
Postmark "Email API"), so a request the real API would refuse is refused here too. On top of
that it records the stable message id of every send it accepted, read from the field each
provider documents for carrying our own reference:

- Twilio: the ``notification`` query parameter of ``StatusCallback`` (the Messages resource
  keeps that URL with the Message and calls it for every status change);
- Vonage: ``client-ref`` (echoed in the reply and in every delivery receipt);
- Postmark: ``Metadata.message_id`` (returned in every webhook for the message), which must
  agree with the RFC 5322 ``Message-ID`` header the SMTP provider writes too.

Faults are planned per request from the stable id and how many requests for it came before.
A fault says whether the API had already accepted the message when the reply went wrong:
after acceptance a retry is a duplicate at the provider, before it the retry is the first
copy. Counting both is how the tests bound the duplicates at-least-once delivery can cause.
"""

from __future__ import annotations

import abc
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import SecretStr

from tests.delivery.providers import test_email_postmark as postmark_docs
from tests.delivery.providers import test_sms_twilio as twilio_docs
from tests.delivery.providers import test_sms_vonage as vonage_docs
from tests.support.http_stub import HttpStub, Reply, Request

# Twilio Messages resource: our StatusCallback carries ``?notification=<stable id>``.
TWILIO_CALLBACK_PARAMETER = "notification"
PUBLIC_URL = "https://tidings.example.com"


@dataclass(frozen=True)
class Fault:
    """What goes wrong with one request that the API would otherwise have accepted."""

    # Answered instead of the API's reply; the API took nothing.
    reply: Reply | None = None
    hang: float = 0.0  # seconds before the reply starts (past the client's timeout: lost)
    cut: bool = False  # the connection closes in the middle of the reply
    # The API created the message before the reply was lost: a retry sends it twice.
    after_acceptance: bool = False


# (stable message id, requests for it before this one) -> the fault of this request, if any.
FaultPlan = Callable[[str, int], Fault | None]

# What a provider's front end answers when its backend dies before taking the message.
BACKEND_GONE = Reply(502, "Bad Gateway")


class ProviderApi(abc.ABC):
    """One provider's API on loopback, with the record the fault tests read."""

    name: str

    def __init__(self) -> None:
        self.faults: FaultPlan | None = None
        # Seconds every reply takes, as a real API's do: sends stay in flight for a while.
        self.latency = 0.0
        # How often each stable message id was accepted: more than once is a duplicate.
        self.accepted: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.faulted: list[tuple[str, Fault]] = []
        self.accepted_without_id = 0
        self._lock = threading.Lock()
        self.server = HttpStub(self)

    @abc.abstractmethod
    def stable_id(self, request: Request) -> str | None:
        """The stable message id the request carries in the provider's documented field."""

    @abc.abstractmethod
    def answer(self, request: Request, fault: Reply | None) -> tuple[Reply, bool]:
        """The API's reply (``fault`` instead of acceptance once the request passed every
        check), and whether the message was accepted."""

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """The ``Settings`` fields that point a deployment at this stand-in."""

    def start(self) -> ProviderApi:
        self.server.start()
        return self

    @property
    def url(self) -> str:
        return self.server.url

    def down(self) -> None:
        self.server.down()

    def up(self) -> None:
        self.server.up()

    def __call__(self, request: Request) -> Reply:
        # One request at a time through the checks and the record; the hang and the cut
        # happen after this returns, so slow replies still overlap.
        with self._lock:
            stable = self.stable_id(request)
            before = self.requests[stable] if stable else 0
            if stable:
                self.requests[stable] += 1
            fault = self.faults(stable, before) if self.faults and stable else None
            if fault is not None and not fault.after_acceptance:
                stand_in = fault.reply or BACKEND_GONE
                reply, accepted = self.answer(request, stand_in)
                if reply is stand_in and stable:
                    self.faulted.append((stable, fault))
                    reply = replace(reply, hang=fault.hang, cut=fault.cut)
            else:
                reply, accepted = self.answer(request, None)
                if accepted and fault is not None and stable:
                    self.faulted.append((stable, fault))
                    reply = replace(reply, hang=fault.hang, cut=fault.cut)
            if not reply.hang:
                reply = replace(reply, hang=self.latency)
            if accepted:
                if stable:
                    self.accepted[stable] += 1
                else:
                    self.accepted_without_id += 1
            return reply

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.accepted)

    def duplicates(self) -> int:
        """Copies accepted beyond the first, over every stable id."""
        with self._lock:
            return sum(count - 1 for count in self.accepted.values())

    def faults_after_acceptance(self) -> list[str]:
        with self._lock:
            return [stable for stable, fault in self.faulted if fault.after_acceptance]

    def faults_before_acceptance(self) -> list[str]:
        with self._lock:
            return [stable for stable, fault in self.faulted if not fault.after_acceptance]


class TwilioApi(ProviderApi):
    name = "twilio"

    def __init__(self) -> None:
        super().__init__()
        self.documented = twilio_docs.TwilioApi()

    def stable_id(self, request: Request) -> str | None:
        callbacks = request.form().get("StatusCallback") or [""]
        query = parse_qs(urlsplit(callbacks[0]).query)
        return next(iter(query.get(TWILIO_CALLBACK_PARAMETER, [])), None)

    def answer(self, request: Request, fault: Reply | None) -> tuple[Reply, bool]:
        created = len(self.documented.created)
        self.documented.fault = fault
        try:
            reply = self.documented(request)
        finally:
            self.documented.fault = None
        return reply, len(self.documented.created) > created

    def settings(self) -> dict[str, Any]:
        return {
            "twilio_api_url": self.url,
            "twilio_account_sid": twilio_docs.ACCOUNT_SID,
            "twilio_auth_token": SecretStr(twilio_docs.AUTH_TOKEN),
            "twilio_from": twilio_docs.SENDER,
            # Without a public URL there is no StatusCallback, so no stable id at Twilio.
            "public_url": PUBLIC_URL,
        }


def twilio_error(status: int, code: int, message: str, **headers: str) -> Reply:
    """An error as Twilio documents it ("Twilio API responses")."""
    return replace(twilio_docs.twilio_error(status, code, message), headers=headers)


class VonageApi(ProviderApi):
    name = "vonage"

    def __init__(self) -> None:
        super().__init__()
        self.documented = vonage_docs.VonageApi()

    def stable_id(self, request: Request) -> str | None:
        return next(iter(request.form().get("client-ref", [])), None)

    def answer(self, request: Request, fault: Reply | None) -> tuple[Reply, bool]:
        sent = len(self.documented.sent)
        self.documented.fault = fault
        try:
            reply = self.documented(request)
        finally:
            self.documented.fault = None
        return reply, len(self.documented.sent) > sent

    def settings(self) -> dict[str, Any]:
        return {
            "vonage_api_url": self.url,
            "vonage_api_key": vonage_docs.API_KEY,
            "vonage_api_secret": SecretStr(vonage_docs.API_SECRET),
            "vonage_from": vonage_docs.SENDER,
        }


class PostmarkApi(ProviderApi):
    name = "postmark"

    def __init__(self) -> None:
        super().__init__()
        # Sends whose Message-ID header does not carry the same stable id as the Metadata.
        self.mismatched_message_ids: list[str] = []

    def stable_id(self, request: Request) -> str | None:
        try:
            body = request.json()
        except ValueError:
            return None
        metadata = body.get("Metadata") if isinstance(body, dict) else None
        stable = metadata.get("message_id") if isinstance(metadata, dict) else None
        if not isinstance(stable, str):
            return None
        headers = body.get("Headers") or []
        said = [h.get("Value") for h in headers if str(h.get("Name")).lower() == "message-id"]
        if len(said) != 1 or stable_id_of(str(said[0])) != stable:
            self.mismatched_message_ids.append(stable)
        return stable

    def answer(self, request: Request, fault: Reply | None) -> tuple[Reply, bool]:
        outcome = None if fault is None else (lambda _: fault)
        reply = postmark_docs.postmark_api(outcome)(request)
        return reply, fault is None and reply.status == 200

    def settings(self) -> dict[str, Any]:
        return {
            "postmark_api_url": self.url,
            "postmark_server_token": SecretStr(postmark_docs.TOKEN),
        }


def stable_id_of(message_id_header: str) -> str:
    """``<ntf_x.email@domain>`` (RFC 5322 msg-id as both email providers write it) ->
    ``ntf_x.email``."""
    return message_id_header.strip().lstrip("<").rpartition("@")[0]


def as_environment(values: dict[str, Any]) -> dict[str, str]:
    """Settings values as ``tidings_env`` takes them (secrets in clear)."""
    return {
        name: value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        for name, value in values.items()
    }


# Refunds on SMS and email. Quiet hours are off so a run at night sends at once; refunds
# are critical anyway, which skips quiet hours (engine/policy.py send_time).
REFUND_RULES = """\
categories:
  refund:
    critical: true
    description: Refund confirmations.
policy:
  quiet_hours: null
rules:
  - {id: refund-authorized, event: refund.authorized, kind: refund_authorized,
     category: refund, priority: critical, channels: [sms, email]}
"""


def write_refund_rules(directory: Path) -> Path:
    path = directory / "refund_rules.yaml"
    path.write_text(REFUND_RULES, encoding="utf-8")
    return path


def customer(number: int, *, phone: bool, email: bool) -> dict[str, Any]:
    """A customer reachable by SMS, email or both (the rules send on both)."""
    person: dict[str, Any] = {
        "id": f"cus_fault_{number}",
        "name": f"Customer {number}",
        "locale": "en",
        "time_zone": "Europe/Paris",
    }
    if phone:
        person["phone"] = f"+3361{number:07d}"
    if email:
        person["email"] = f"customer{number}@example.com"
    return person
