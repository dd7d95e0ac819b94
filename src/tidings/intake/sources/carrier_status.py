"""Carrier aggregators' tracking statuses, in Tidings' canonical shipment taxonomy.

Canonical progress (rank): ``pending`` < ``info_received`` < ``in_transit`` <
``out_for_delivery`` < ``available_for_pickup`` < ``delivered``; side states
``attempt_failed``, ``exception``, ``return_to_sender``, ``expired``, ``canceled``.

AfterShip Tracking tags its trackings with one of nine delivery statuses (``tag``) and a
finer sub-status (``subtag``, such as ``InTransit_002``); see
https://www.aftership.com/docs/tracking/enum/delivery-statuses and
https://www.aftership.com/docs/tracking/enum/delivery-sub-statuses. Two sub-statuses of
``Exception`` mean the parcel goes back to the shop: ``Exception_010`` "Returning to
sender" and ``Exception_011`` "Returned to sender" (AfterShip's own ``return_to_sender``
flag is defined by exactly these two).

EasyPost trackers carry a ``status`` (``unknown``, ``pre_transit``, ``in_transit``,
``out_for_delivery``, ``delivered``, ``available_for_pickup``, ``return_to_sender``,
``failure``, ``cancelled``, ``error``) and a ``status_detail``; see
https://docs.easypost.com/docs/trackers. The detail refines the message the carrier gave
and is kept in ``carrier_status``; it does not change the canonical status.

Pure tables and functions (no I/O), plus the small payload-reading helpers the carrier
and returns adapters share.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import date, datetime
from types import MappingProxyType
from typing import Any

from tidings.events.schemas import ShipmentStatus
from tidings.intake.sources.base import MappingError


class UnknownCarrierStatus(ValueError):
    """The provider reported a status this table does not know (yet)."""


AFTERSHIP_TAGS: Mapping[str, ShipmentStatus] = MappingProxyType(
    {
        "Pending": "pending",
        "InfoReceived": "info_received",
        "InTransit": "in_transit",
        "OutForDelivery": "out_for_delivery",
        "AttemptFail": "attempt_failed",
        "AvailableForPickup": "available_for_pickup",
        "Delivered": "delivered",
        "Exception": "exception",
        "Expired": "expired",
    }
)

# Exception_010 "Returning to sender", Exception_011 "Returned to sender".
AFTERSHIP_RETURN_TO_SENDER_SUBTAGS = frozenset({"Exception_010", "Exception_011"})

EASYPOST_STATUSES: Mapping[str, ShipmentStatus] = MappingProxyType(
    {
        "unknown": "pending",
        "pre_transit": "info_received",
        "in_transit": "in_transit",
        "out_for_delivery": "out_for_delivery",
        "available_for_pickup": "available_for_pickup",
        "delivered": "delivered",
        "return_to_sender": "return_to_sender",
        "failure": "exception",
        "error": "exception",
        "cancelled": "canceled",
    }
)


def aftership_status(tag: str, subtag: str | None = None) -> ShipmentStatus:
    """The canonical status for an AfterShip ``tag`` (and ``subtag``).

    Raises UnknownCarrierStatus for a tag AfterShip does not document.
    """
    status = AFTERSHIP_TAGS.get(tag)
    if status is None:
        raise UnknownCarrierStatus(
            f"AfterShip tag '{tag}' is not one of {', '.join(AFTERSHIP_TAGS)}."
        )
    if status == "exception" and subtag in AFTERSHIP_RETURN_TO_SENDER_SUBTAGS:
        return "return_to_sender"
    return status


def aftership_carrier_status(tag: str, subtag: str | None = None) -> str:
    """What AfterShip said, kept as is: the subtag (``InTransit_002``), else the tag."""
    return subtag or tag


def easypost_status(status: str, status_detail: str | None = None) -> ShipmentStatus:
    """The canonical status for an EasyPost tracker ``status``.

    ``status_detail`` is accepted for symmetry and kept by the caller in
    ``carrier_status``; EasyPost's status alone decides the canonical one. Raises
    UnknownCarrierStatus for a status EasyPost does not document.
    """
    canonical = EASYPOST_STATUSES.get(status)
    if canonical is None:
        raise UnknownCarrierStatus(
            f"EasyPost status '{status}' is not one of {', '.join(EASYPOST_STATUSES)}."
        )
    return canonical


def easypost_carrier_status(status: str, status_detail: str | None = None) -> str:
    """What EasyPost said, kept as is: ``in_transit:arrived_at_facility``."""
    return f"{status}:{status_detail}" if status_detail else status


# --- Reading provider payloads -----------------------------------------------------------
# Small pure helpers the AfterShip, EasyPost and returns adapters share: they all read
# loosely typed JSON from a provider and turn its wording into canonical values.


def json_object(body: bytes, *, provider: str) -> dict[str, Any]:
    """The body as a JSON object, or a MappingError saying why it is not one."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise MappingError(
            "invalid_json", f"The {provider} webhook body is not valid JSON: {exc}."
        ) from exc
    if not isinstance(document, dict):
        raise MappingError("invalid_payload", f"The {provider} webhook body is not a JSON object.")
    return document


def text(value: object) -> str | None:
    """A non-empty string from a string or integer field; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def instant(value: object) -> datetime | None:
    """An RFC 3339 timestamp with an offset; None for a missing, local or unreadable one.

    A time without an offset (AfterShip's local checkpoint times) names no instant, so it
    is not used: the caller falls back to a time that does.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def calendar_day(value: object) -> str | None:
    """``YYYY-MM-DD`` from a date or a date-time string; None if it holds no date."""
    if not isinstance(value, str) or len(value.strip()) < 10:
        return None
    try:
        return date.fromisoformat(value.strip()[:10]).isoformat()
    except ValueError:
        return None


def hmac_sha256(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).digest()


def same_signature(received: str, expected: str) -> bool:
    """Constant-time comparison that tolerates non-ASCII input (it is then just unequal)."""
    return hmac.compare_digest(received.strip().encode(), expected.encode())
