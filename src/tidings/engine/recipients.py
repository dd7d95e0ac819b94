"""Who a notification is for, with the preferences that decide how to reach them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tidings.engine.policy import DailyWindow

# Push goes to every active device of the customer, looked up when the message is sent,
# so the notification records this marker rather than one token.
PUSH_DEVICES = "devices"


STAKEHOLDER_PREFIX = "stakeholder:"


@dataclass(frozen=True, slots=True)
class Recipient:
    customer_id: str
    name: str | None
    email: str | None
    phone: str | None
    locale: str | None
    time_zone: str | None
    opted_out: frozenset[str]
    segment: str | None = None
    muted_channels: frozenset[str] = frozenset()
    quiet_hours: DailyWindow | None = None
    has_own_quiet_hours: bool = False
    digest_categories: frozenset[str] = frozenset()
    digest_hour: int | None = None
    push_devices: tuple[str, ...] = ()  # ids of the customer's active push devices
    webhook: str | None = None  # stakeholders only: a Slack hook or a signed endpoint

    @property
    def is_stakeholder(self) -> bool:
        return self.customer_id.startswith(STAKEHOLDER_PREFIX)

    def address_for(self, channel: str) -> str | None:
        if channel == "email":
            return self.email
        if channel == "sms":
            return self.phone
        if channel == "in_app":
            return None if self.is_stakeholder else self.customer_id
        if channel == "webhook":
            return self.webhook
        if channel == "push":
            return PUSH_DEVICES if self.push_devices else None
        return None

    def as_context(self) -> dict[str, Any]:
        return {
            "id": self.customer_id,
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "locale": self.locale,
            "time_zone": self.time_zone,
            "segment": self.segment,
        }


def recipient_from_row(row: Mapping[str, Any], *, push_devices: Iterable[str] = ()) -> Recipient:
    """Profile columns filled by sources, overridden by what the customer chose; plus the
    ids of the customer's active push devices (``delivery.devices.active_device_ids``)."""
    preferences: Mapping[str, Any] = row.get("preferences") or {}
    return Recipient(
        customer_id=str(row["id"]),
        name=row.get("name"),
        email=preferences.get("email") or row.get("email"),
        phone=preferences.get("phone") or row.get("phone"),
        locale=preferences.get("locale") or row.get("locale"),
        time_zone=preferences.get("time_zone") or row.get("time_zone"),
        opted_out=frozenset(preferences.get("opted_out") or ()),
        segment=row.get("segment"),
        muted_channels=frozenset(
            channel for channel, on in (preferences.get("channels") or {}).items() if not on
        ),
        quiet_hours=DailyWindow.parse(quiet) if (quiet := preferences.get("quiet_hours")) else None,
        has_own_quiet_hours="quiet_hours" in preferences,
        digest_categories=frozenset((preferences.get("digest") or {}).get("categories") or ()),
        digest_hour=(preferences.get("digest") or {}).get("hour"),
        push_devices=tuple(push_devices),
    )
