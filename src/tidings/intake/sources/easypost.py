"""EasyPost tracker webhooks: ``POST /api/intake/easypost`` → ``shipment.status_changed``.

Signature (https://docs.easypost.com/docs/webhooks, and ``validate_webhook`` in the
official client libraries, e.g. ``easypost/util.py`` of easypost-python): when the webhook
was created with a ``webhook_secret``, every request carries ``X-Hmac-Signature:
hmac-sha256-hex=<hex>``, the hex HMAC-SHA256 of the raw body keyed with the secret after
Unicode NFKD normalization, UTF-8 encoded. Set the same secret in
``TIDINGS_EASYPOST_WEBHOOK_SECRET``; a request without the header is refused.

Body: an ``Event`` (https://docs.easypost.com/docs/events)::

    {"object": "Event", "id": "evt_...", "mode": "test" | "production",
     "description": "tracker.updated", "created_at": "...", "updated_at": "...",
     "previous_attributes": {"status": "pre_transit"},
     "result": {"object": "Tracker", "id": "trk_...", "tracking_code": "...",
                "carrier": "USPS", "status": "in_transit",
                "status_detail": "arrived_at_facility", "public_url": "https://track...",
                "est_delivery_date": "...", "carrier_detail": {"est_delivery_date_local": ...},
                "shipment_id": "shp_..." | null, "tracking_details": [{"datetime": ...}]}}

Only ``tracker.created`` and ``tracker.updated`` are mapped; every other event
(``batch.*``, ``refund.*``, ``insurance.*``, ...) is answered 200 and not stored.

EasyPost trackers carry no order id: the event has none, and the engine finds the order
from the tracking number of an earlier event that named both. The source is
``easypost:test`` or ``easypost:production`` so test traffic never mixes with real
parcels. The event id is ``shipment/<tracking code>/<canonical status>``.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
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
    calendar_day,
    easypost_carrier_status,
    easypost_status,
    hmac_sha256,
    instant,
    json_object,
    same_signature,
    text,
)

SIGNATURE_HEADER = "x-hmac-signature"
SIGNATURE_PREFIX = "hmac-sha256-hex="
TRACKER_EVENTS = frozenset({"tracker.created", "tracker.updated"})
MODES = frozenset({"test", "production"})


def signature(secret: str, body: bytes) -> str:
    """The X-Hmac-Signature value EasyPost sends for ``body``."""
    key = unicodedata.normalize("NFKD", secret).encode("utf-8")
    return SIGNATURE_PREFIX + hmac_sha256(key, body).hex()


class EasyPostAdapter(SourceAdapter):
    name = "easypost"

    def verify(self, request: WebhookRequest, secret: str) -> None:
        received = request.header(SIGNATURE_HEADER)
        if not received:
            raise SignatureError(
                "The request has no X-Hmac-Signature header. Create the EasyPost webhook with "
                "a webhook_secret (the same as TIDINGS_EASYPOST_WEBHOOK_SECRET)."
            )
        if not same_signature(received, signature(secret, request.body)):
            raise SignatureError(
                "The X-Hmac-Signature does not match the body. Check that "
                "TIDINGS_EASYPOST_WEBHOOK_SECRET is the webhook_secret of this EasyPost webhook."
            )

    def map(self, request: WebhookRequest, options: MapOptions) -> list[dict[str, Any]]:
        event = json_object(request.body, provider="EasyPost")
        if event.get("description") not in TRACKER_EVENTS:
            return []
        tracker = event.get("result")
        if not isinstance(tracker, dict):
            raise MappingError(
                "invalid_payload", "A tracker event needs the Tracker in 'result'.", field="result"
            )
        mode = text(event.get("mode")) or text(tracker.get("mode"))
        if mode not in MODES:
            raise MappingError(
                "invalid_payload",
                f"The event's mode is {mode!r}; EasyPost sends 'test' or 'production'.",
                field="mode",
            )
        carrier_status = text(tracker.get("status"))
        if carrier_status is None:
            raise MappingError(
                "invalid_payload", "The tracker has no status.", field="result.status"
            )
        detail = text(tracker.get("status_detail"))
        try:
            status = easypost_status(carrier_status, detail)
        except UnknownCarrierStatus as exc:
            raise MappingError("unknown_status", str(exc), field="result.status") from exc
        tracking_code = text(tracker.get("tracking_code"))
        if tracking_code is None:
            raise MappingError(
                "invalid_payload",
                "The tracker has no tracking_code, so it cannot be tied to an order.",
                field="result.tracking_code",
            )
        details = [d for d in _list(tracker.get("tracking_details")) if isinstance(d, dict)]
        occurred = _occurred_at(details, tracker, event)
        data: dict[str, Any] = {
            "shipment_id": text(tracker.get("id")) or tracking_code,
            "carrier": text(tracker.get("carrier")),
            "tracking_number": tracking_code,
            "tracking_url": text(tracker.get("public_url")),
            "status": status,
            "carrier_status": easypost_carrier_status(carrier_status, detail),
            "status_message": text(details[-1].get("message")) if details else None,
            "occurred_at": occurred.isoformat() if occurred else None,
            "estimated_delivery": _estimated_delivery(tracker),
            "easypost_shipment_id": text(tracker.get("shipment_id")),
        }
        return [
            {
                "specversion": "1.0",
                "id": f"shipment/{tracking_code}/{status}",
                "source": f"easypost:{mode}",
                "type": "shipment.status_changed",
                "subject": f"shipment/{tracking_code}",
                "time": (occurred or request.received_at).isoformat(),
                "data": data,
            }
        ]


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _occurred_at(
    details: list[dict[str, Any]], tracker: dict[str, Any], event: dict[str, Any]
) -> datetime | None:
    """The latest scan's time, else when the tracker or the event was updated."""
    times = [moment for d in details if (moment := instant(d.get("datetime"))) is not None]
    if times:
        return max(times)
    for value in (tracker.get("updated_at"), event.get("updated_at"), event.get("created_at")):
        moment = instant(value)
        if moment is not None:
            return moment
    return None


def _estimated_delivery(tracker: dict[str, Any]) -> str | None:
    """The carrier's local delivery date when given, else the date of the UTC estimate."""
    carrier_detail = tracker.get("carrier_detail")
    local = (
        carrier_detail.get("est_delivery_date_local") if isinstance(carrier_detail, dict) else None
    )
    return calendar_day(local) or calendar_day(tracker.get("est_delivery_date"))


ADAPTER = EasyPostAdapter()
