"""``POST /api/receipts/{provider}``: delivery receipts and SMS replies from providers; and the
operators' view of the suppression list.

The receipt routes take no API key: the provider's own credential is the proof (DESIGN
invariant 8), checked before anything is read. Twilio signs each request with the account's
Auth Token over the exact URL it called and the POST parameters (Twilio docs "Webhooks
security"); that URL is TIDINGS_PUBLIC_URL plus the path and query we received, since behind
a proxy the request line is not what Twilio saw. Postmark signs nothing and sends the HTTP
Basic credentials set on its webhook (Postmark "Protecting your webhooks"). A request that
fails the check, or that arrives before the provider is configured, is answered with a
problem document and kept in the reject log with its reason, like intake's webhooks.

Twilio expects TwiML back from its messaging webhooks; an empty ``<Response/>`` asks it to
send nothing (Twilio error 11750: "use an empty TwiML response"). Twilio itself answers
STOP, START and HELP with its own confirmation texts, so we must not send another.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from tidings.api.auth import scope
from tidings.api.keys import Principal
from tidings.api.problems import ApiProblem
from tidings.db.engine import read_transaction
from tidings.db.types import utcnow
from tidings.delivery import suppressions
from tidings.delivery.receipts import (
    REJECT_CHANNEL,
    Keyword,
    Receipt,
    apply_keyword,
    apply_receipt,
)
from tidings.delivery.receipts_postmark import check_basic_auth, parse_postmark_webhook
from tidings.delivery.receipts_twilio import (
    parse_inbound,
    parse_status_callback,
    verify_twilio_signature,
)
from tidings.intake import rejects

if TYPE_CHECKING:
    from tidings.runtime import Runtime

router = APIRouter(tags=["receipts"])

PROVIDERS = ("twilio", "postmark")
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
# Never stored with a reject: our credentials, a proxy's, or Postmark's Basic credentials.
_DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
QUERY_MARK = "x-tidings-query"  # the request's query string, kept with the reject
# Advanced Opt-Out (Twilio support: "Track Opt-Out, Opt-In and Help Messages Using the
# OptOutType Parameter"): the keyword Twilio matched, custom keywords and languages included.
_OPT_OUT_TYPES: Mapping[str, Keyword] = {"STOP": "stop", "START": "start", "HELP": "help"}


@dataclass(frozen=True, slots=True)
class Incoming:
    path: str
    query: str  # as received, still percent-encoded: Twilio signed these characters
    headers: dict[str, str]  # names lower-cased
    body: bytes
    received_at: datetime

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class ReceiptRefused(Exception):
    def __init__(self, status: int, code: str, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field


@router.post(
    "/api/receipts/{provider}",
    summary="Receive a delivery receipt or an SMS reply from a provider",
    description=(
        "Twilio status callbacks and incoming messages (STOP, START, HELP), verified with "
        "X-Twilio-Signature, TIDINGS_TWILIO_AUTH_TOKEN and TIDINGS_PUBLIC_URL; Postmark "
        "webhooks (Delivery, Bounce, SpamComplaint, Open, Click, SubscriptionChange), "
        "verified with the Basic credentials TIDINGS_POSTMARK_WEBHOOK_USER and "
        "TIDINGS_POSTMARK_WEBHOOK_PASSWORD. No API key."
    ),
    responses={
        401: {"description": "Bad or missing provider credentials (the request is kept)"},
        503: {"description": "The provider is not configured yet (the request is kept)"},
    },
)
async def receive_receipt(provider: str, request: Request) -> Response:
    if provider not in PROVIDERS:
        raise ApiProblem(
            404,
            "unknown_provider",
            f"No receipts from '{provider}'. Known: {', '.join(PROVIDERS)}.",
        )
    incoming = Incoming(
        path=request.url.path,
        query=request.scope.get("query_string", b"").decode("latin-1"),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=await request.body(),
        received_at=utcnow(),
    )
    runtime: Runtime = request.app.state.runtime
    handle = _twilio if provider == "twilio" else _postmark
    try:
        return await run_in_threadpool(handle, runtime, incoming)
    except ReceiptRefused as refused:
        reject_id = await run_in_threadpool(_keep, runtime, provider, incoming, refused)
        raise ApiProblem(
            refused.status,
            refused.code,
            refused.detail,
            field=refused.field,
            reject_id=reject_id,
        ) from refused


def _twilio(runtime: Runtime, incoming: Incoming) -> Response:
    settings = runtime.settings
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
    if not token or not settings.public_url:
        raise ReceiptRefused(
            503,
            "provider_not_configured",
            "Receipts from twilio are not accepted yet: set TIDINGS_TWILIO_AUTH_TOKEN and "
            "TIDINGS_PUBLIC_URL and restart.",
        )
    params = _form(incoming)
    url = settings.public_url + incoming.path + (f"?{incoming.query}" if incoming.query else "")
    signature = incoming.header("x-twilio-signature")
    if not signature or not verify_twilio_signature(token, url, params, signature):
        raise ReceiptRefused(
            401,
            "invalid_signature",
            "X-Twilio-Signature does not match this request. Check that "
            "TIDINGS_TWILIO_AUTH_TOKEN is the account's Auth Token and that TIDINGS_PUBLIC_URL "
            "is the address Twilio calls.",
        )
    if "MessageStatus" in params:
        status = parse_status_callback(params, url=url)
        detail = f"MessageStatus={status.message_status}"
        if status.error_code:
            detail += f" ErrorCode={status.error_code}"
        receipt = Receipt(
            provider="twilio",
            channel="sms",
            outcome=status.status or "pending",
            provider_message_id=status.message_sid or None,
            notification=status.notification,
            address=_first(params, "To"),
            hard=status.status == "bounced",
            detail=detail,
        )
        with runtime.engine.begin() as conn:
            apply_receipt(conn, receipt=receipt, now=incoming.received_at)
        return _twiml()
    if "Body" in params:
        inbound = parse_inbound(params)
        keyword = _OPT_OUT_TYPES.get((_first(params, "OptOutType") or "").upper())
        keyword = keyword or inbound.keyword
        if keyword is None:
            return _twiml()  # a reply we have no use for: nobody reads this number
        if not inbound.from_number:
            raise ReceiptRefused(
                422, "invalid_receipt", "An incoming message without From.", field="From"
            )
        with runtime.engine.begin() as conn:
            apply_keyword(
                conn,
                provider="twilio",
                keyword=keyword,
                address=inbound.from_number,
                provider_message_id=_first(params, "MessageSid"),
                detail=f"{inbound.body.strip()[:64]} to {inbound.to_number}",
                now=incoming.received_at,
            )
        return _twiml()
    raise ReceiptRefused(
        422,
        "invalid_receipt",
        "Neither a status callback (MessageStatus) nor an incoming message (Body).",
    )


def _postmark(runtime: Runtime, incoming: Incoming) -> Response:
    settings = runtime.settings
    user = settings.postmark_webhook_user
    password = settings.postmark_webhook_password
    if not user or not password:
        raise ReceiptRefused(
            503,
            "provider_not_configured",
            "Receipts from postmark are not accepted yet: set TIDINGS_POSTMARK_WEBHOOK_USER "
            "and TIDINGS_POSTMARK_WEBHOOK_PASSWORD and restart.",
        )
    if not check_basic_auth(
        incoming.header("authorization"), username=user, password=password.get_secret_value()
    ):
        raise ReceiptRefused(
            401,
            "invalid_credentials",
            "The Basic credentials are not the ones set on the Postmark webhook. Set the same "
            "user and password in TIDINGS_POSTMARK_WEBHOOK_USER and "
            "TIDINGS_POSTMARK_WEBHOOK_PASSWORD.",
        )
    try:
        payload = json.loads(incoming.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReceiptRefused(422, "invalid_receipt", f"The body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ReceiptRefused(422, "invalid_receipt", "The body is not a JSON object.")
    try:
        parsed = parse_postmark_webhook(payload)
    except ValueError as exc:
        raise ReceiptRefused(422, "invalid_receipt", str(exc), field="RecordType") from exc
    if parsed is None:
        # A reactivation: Postmark sends to the address again, so may we; the suppression
        # itself is lifted by an operator, who can see why it was there.
        return JSONResponse({"receipt_id": None, "notification_id": None, "status": None})
    receipt = Receipt(
        provider="postmark",
        channel="email",
        outcome=parsed.outcome,
        provider_message_id=parsed.provider_message_id,
        notification=parsed.notification,
        address=parsed.recipient,
        hard=parsed.hard,
        detail=parsed.detail,
    )
    with runtime.engine.begin() as conn:
        applied = apply_receipt(conn, receipt=receipt, now=incoming.received_at)
    return JSONResponse(
        {
            "receipt_id": applied.receipt_id,
            "notification_id": applied.notification_id,
            "status": applied.status,
        }
    )


def _form(incoming: Incoming) -> dict[str, list[str]]:
    content_type = (incoming.header("content-type") or "").split(";")[0].strip().lower()
    if incoming.body and content_type != "application/x-www-form-urlencoded":
        raise ReceiptRefused(
            415, "unsupported_media_type", "Twilio posts application/x-www-form-urlencoded."
        )
    try:
        text = incoming.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReceiptRefused(400, "invalid_receipt", "The form is not UTF-8.") from exc
    # Blank values are signed too (Twilio "Webhooks security"), so they are kept.
    return parse_qs(text, keep_blank_values=True)


def _first(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


def _twiml() -> Response:
    return Response(EMPTY_TWIML, media_type="text/xml")


def _keep(runtime: Runtime, provider: str, incoming: Incoming, refused: ReceiptRefused) -> str:
    headers = {k: v for k, v in incoming.headers.items() if k not in _DROPPED_HEADERS}
    if incoming.query:
        headers[QUERY_MARK] = incoming.query
    with runtime.engine.begin() as conn:
        return rejects.record(
            conn,
            channel=REJECT_CHANNEL,
            code=refused.code,
            detail=refused.detail,
            field=refused.field,
            payload=incoming.body.decode("utf-8", errors="replace"),
            content_type=incoming.header("content-type"),
            headers=headers,
            source=provider,
            now=incoming.received_at,
        )


# ---------------------------------------------------------------- the suppression list


class Suppression(BaseModel):
    channel: str
    address: str
    reason: str
    detail: str | None
    source: str
    created_at: datetime


class SuppressionList(BaseModel):
    suppressions: list[Suppression]


@router.get("/api/suppressions", response_model=SuppressionList, tags=["suppressions"])
def get_suppressions(
    request: Request,
    channel: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    _: Principal = scope("customers:read"),
) -> SuppressionList:
    with read_transaction(request.app.state.runtime.engine) as conn:
        rows = suppressions.list_suppressions(conn, channel=channel, limit=limit)
    return SuppressionList(suppressions=[Suppression.model_validate(row) for row in rows])


@router.delete(
    "/api/suppressions/{channel}/{address}",
    response_model=Suppression,
    tags=["suppressions"],
    responses={409: {"description": "An SMS STOP: only the person can lift it, with START"}},
)
def delete_suppression(
    channel: str,
    address: str,
    request: Request,
    principal: Principal = scope("customers:write"),
) -> Suppression:
    with request.app.state.runtime.engine.begin() as conn:
        row = suppressions.get(conn, channel=channel, address=address)
        if row is None:
            raise ApiProblem(
                404, "suppression_not_found", f"{address} is not suppressed on {channel}."
            )
        if row["reason"] == "stop":
            # Carriers require a STOP to hold until the person texts START (CTIA Messaging
            # Principles and Best Practices, 5.1.3); Twilio would refuse the sends anyway.
            raise ApiProblem(
                409,
                "opt_out_by_recipient",
                f"{address} texted STOP; only a START from that number lifts it.",
            )
        lifted = suppressions.lift(
            conn,
            channel=channel,
            address=address,
            only_reason=row["reason"],
            actor=principal.actor,
            now=utcnow(),
        )
    return Suppression.model_validate(lifted or row)
