"""AfterShip Tracking webhooks: ``POST /api/intake/aftership`` → ``shipment.status_changed``.

Signature (https://www.aftership.com/docs/tracking/webhook/webhook-signature): every
request carries an ``aftership-hmac-sha256`` header, the base64-encoded HMAC-SHA256 of
the raw request body keyed with the webhook secret (Settings > Webhooks in the
AfterShip admin; ``TIDINGS_AFTERSHIP_WEBHOOK_SECRET`` here). Nothing else is signed and
no timestamp is sent, so there is no replay window to check: redeliveries are harmless
because event ids are derived from the business fact. AfterShip's Returns and Warranty
products sign with other headers (``as-signature-hmac-sha256``); this adapter is for
Tracking only.

Body (https://www.aftership.com/docs/tracking/webhook/webhook-specifications)::

    {"event": "tracking_update", "event_id": "<uuid>", "is_tracking_first_tag": true,
     "ts": 1712741696, "msg": {<the Tracking object>}}

Only ``tracking_update`` carries a status; ``edd_revise`` and ``tracking_pending_time``
are answered 200 and not stored. From ``msg``: ``id``, ``tracking_number``, ``slug``,
``tag``, ``subtag``, ``subtag_message``, ``order_id``, ``order_number``,
``checkpoints[].checkpoint_time``, ``updated_at``, the tracking link
(``aftership_tracking_url`` or ``courier_tracking_link``) and the estimated delivery
(``latest_estimated_delivery.datetime``, ``courier_estimated_delivery_date
.estimated_delivery_date``, the legacy ``expected_delivery``, or
``aftership_estimated_delivery_date.estimated_delivery_date``, first found).

The event id is ``shipment/<tracking number>/<canonical status>``: a redelivery, or a
new checkpoint that keeps the parcel in the same canonical status, stores nothing new.

Strict mode requires ``msg.order_id`` (a complete integration creates trackings with
it). Lenient mode accepts a tracking update without one; the engine then finds the order
from the tracking number. Either way an update naming neither is refused.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from tidings.intake.sources.base import (
    MapOptions,
    MappingError,
    SignatureError,
    SourceAdapter,
    WebhookRequest,
)
from tidings.intake.sources.carrier_status import (
    UnknownCarrierStatus,
    aftership_carrier_status,
    aftership_status,
    calendar_day,
    hmac_sha256,
    instant,
    json_object,
    same_signature,
    text,
)

SIGNATURE_HEADER = "aftership-hmac-sha256"
TRACKING_EVENT = "tracking_update"


class AfterShipAdapter(SourceAdapter):
    name = "aftership"

    def verify(self, request: WebhookRequest, secret: str) -> None:
        received = request.header(SIGNATURE_HEADER)
        if not received:
            raise SignatureError(
                f"The request has no {SIGNATURE_HEADER} header. AfterShip signs every "
                "Tracking webhook with it; check that the URL is an AfterShip Tracking webhook."
            )
        expected = base64.b64encode(hmac_sha256(secret.encode(), request.body)).decode()
        if not same_signature(received, expected):
            raise SignatureError(
                f"The {SIGNATURE_HEADER} signature does not match the body. Check that "
                "TIDINGS_AFTERSHIP_WEBHOOK_SECRET is the webhook secret shown in AfterShip "
                "(Settings > Webhooks)."
            )

    def account(self, request: WebhookRequest) -> str | None:
        # AfterShip names no account in its requests; an operator may add ?account=.
        return text(request.query.get("account"))

    def map(self, request: WebhookRequest, options: MapOptions) -> list[dict[str, Any]]:
        document = json_object(request.body, provider="AfterShip")
        if document.get("event") != TRACKING_EVENT:
            return []
        msg = document.get("msg")
        if not isinstance(msg, dict):
            raise MappingError(
                "invalid_payload", "A tracking_update needs the tracking in 'msg'.", field="msg"
            )
        tag = text(msg.get("tag"))
        if tag is None:
            raise MappingError(
                "invalid_payload", "The tracking has no delivery status ('tag').", field="msg.tag"
            )
        subtag = text(msg.get("subtag"))
        try:
            status = aftership_status(tag, subtag)
        except UnknownCarrierStatus as exc:
            raise MappingError("unknown_status", str(exc), field="msg.tag") from exc

        order_id = text(msg.get("order_id"))
        tracking_number = text(msg.get("tracking_number"))
        if options.strict and order_id is None:
            raise MappingError(
                "invalid_payload",
                "The tracking has no order_id. Create AfterShip trackings with the store's "
                "order id, or set this source to lenient.",
                field="msg.order_id",
            )
        if order_id is None and tracking_number is None:
            raise MappingError(
                "invalid_payload",
                "The tracking names neither an order_id nor a tracking_number, so it cannot "
                "be tied to an order.",
                field="msg.tracking_number",
            )
        shipment_id = text(msg.get("id")) or tracking_number
        if shipment_id is None:
            raise MappingError(
                "invalid_payload", "The tracking has no id and no tracking_number.", field="msg.id"
            )
        parcel = tracking_number or shipment_id
        occurred = _occurred_at(msg, document)
        data: dict[str, Any] = {
            "order_id": order_id,
            "order_number": text(msg.get("order_number")),
            "shipment_id": shipment_id,
            "carrier": text(msg.get("slug")),
            "tracking_number": tracking_number,
            "tracking_url": text(msg.get("aftership_tracking_url"))
            or text(msg.get("courier_tracking_link")),
            "status": status,
            "carrier_status": aftership_carrier_status(tag, subtag),
            "status_message": text(msg.get("subtag_message")),
            "occurred_at": occurred.isoformat() if occurred else None,
            "estimated_delivery": _estimated_delivery(msg),
        }
        return [
            {
                "specversion": "1.0",
                "id": f"shipment/{parcel}/{status}",
                "source": f"aftership:{options.account or 'default'}",
                "type": "shipment.status_changed",
                "subject": f"order/{order_id}" if order_id else f"shipment/{parcel}",
                "time": (occurred or request.received_at).isoformat(),
                "data": data,
            }
        ]


def _occurred_at(msg: dict[str, Any], document: dict[str, Any]) -> datetime | None:
    """The latest checkpoint's time when it has an offset, else when AfterShip updated
    the tracking, else when the webhook event occurred (``ts``)."""
    checkpoints = msg.get("checkpoints")
    times = [
        moment
        for checkpoint in (checkpoints if isinstance(checkpoints, list) else [])
        if isinstance(checkpoint, dict)
        and (moment := instant(checkpoint.get("checkpoint_time"))) is not None
    ]
    if times:
        return max(times)
    updated = instant(msg.get("updated_at"))
    if updated is not None:
        return updated
    ts = document.get("ts")
    if isinstance(ts, int) and not isinstance(ts, bool):
        return datetime.fromtimestamp(ts, UTC)
    return None


def _estimated_delivery(msg: dict[str, Any]) -> str | None:
    candidates = (
        ("latest_estimated_delivery", "datetime"),
        ("courier_estimated_delivery_date", "estimated_delivery_date"),
        ("expected_delivery", None),
        ("aftership_estimated_delivery_date", "estimated_delivery_date"),
    )
    for outer, inner in candidates:
        value = msg.get(outer)
        if inner is not None:
            value = value.get(inner) if isinstance(value, dict) else None
        day = calendar_day(value)
        if day is not None:
            return day
    return None


ADAPTER = AfterShipAdapter()
