"""Who a notification is for, with the preferences that decide how to reach them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Recipient:
    customer_id: str
    name: str | None
    email: str | None
    phone: str | None
    locale: str | None
    time_zone: str | None
    opted_out: frozenset[str]

    def address_for(self, channel: str) -> str | None:
        if channel == "email":
            return self.email
        if channel == "in_app":
            return self.customer_id
        return None

    def as_context(self) -> dict[str, Any]:
        return {
            "id": self.customer_id,
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "locale": self.locale,
            "time_zone": self.time_zone,
        }


def recipient_from_row(row: Mapping[str, Any]) -> Recipient:
    """Profile columns filled by sources, overridden by what the customer chose."""
    preferences: Mapping[str, Any] = row.get("preferences") or {}
    return Recipient(
        customer_id=str(row["id"]),
        name=row.get("name"),
        email=row.get("email"),
        phone=row.get("phone"),
        locale=preferences.get("locale") or row.get("locale"),
        time_zone=preferences.get("time_zone") or row.get("time_zone"),
        opted_out=frozenset(preferences.get("opted_out") or ()),
    )
