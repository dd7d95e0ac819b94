"""Builders for CloudEvents as a source would send them."""

from __future__ import annotations

import itertools
from typing import Any

SOURCE = "https://shop.example.com/oms"
_counter = itertools.count(1)

CAMILLE = {
    "id": "cus_camille",
    "name": "Camille Durand",
    "email": "camille@example.fr",
    "phone": "+33612345678",
    "locale": "fr",
    "time_zone": "Europe/Paris",
}
JORDAN = {
    "id": "cus_jordan",
    "name": "Jordan Smith",
    "email": "jordan@example.com",
    "locale": "en-US",
    "time_zone": "America/Chicago",
}


def cloudevent(
    event_type: str,
    data: dict[str, Any],
    *,
    id: str | None = None,
    source: str = SOURCE,
    **attributes: Any,
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": id or f"evt-{next(_counter)}",
        "source": source,
        "type": event_type,
        "time": "2026-11-21T10:00:00Z",
        "datacontenttype": "application/json",
        "data": data,
        **attributes,
    }


def order_placed(
    order_id: str, customer: dict[str, Any], *, currency: str = "EUR", **kwargs: Any
) -> dict[str, Any]:
    return cloudevent(
        "order.placed",
        {
            "order_id": order_id,
            "order_number": f"#{order_id}",
            "currency": currency,
            "total": 10150,
            "customer": customer,
            "lines": [
                {"sku": "LAMP-01", "name": "Lampe Opaline", "quantity": 1, "unit_price": 8900}
            ],
        },
        id=f"order-{order_id}",
        **kwargs,
    )


def refund_authorized(
    order_id: str,
    *,
    amount: int = 1250,
    currency: str = "EUR",
    customer: dict[str, Any] | None = None,
    id: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "order_id": order_id,
        "refund_id": f"re_{order_id}",
        "payment_id": f"pay_{order_id}",
        "amount": amount,
        "currency": currency,
        "reason_code": "requested_by_customer",
        "method": "card",
        "authorized_at": "2026-11-21T10:00:00+00:00",
    }
    if customer is not None:
        data["customer"] = customer
    return cloudevent("refund.authorized", data, id=id or f"refund-{order_id}", **kwargs)
