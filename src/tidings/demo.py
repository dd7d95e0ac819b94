"""A realistic stream of orders and refunds, for `tidings demo` and `make run`."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from tidings.events.envelope import CanonicalEvent

DEMO_SOURCE = "https://demo.tidings.localhost/shop"

_CUSTOMERS = [
    ("Camille Durand", "fr", "Europe/Paris", "+33612345678"),
    ("Léa Tremblay", "fr-CA", "America/Montreal", "+15145550101"),
    ("Jordan Smith", "en-US", "America/Chicago", "+13125550123"),
    ("Amelia Jones", "en-GB", "Europe/London", "+447700900123"),
    ("Lukas Schmidt", "de", "Europe/Berlin", "+4915123456789"),
    ("Lucía García", "es", "Europe/Madrid", "+34612345678"),
    ("Hiroshi Tanaka", "ja", "Asia/Tokyo", "+819012345678"),
]
_PRODUCTS = [
    ("LAMP-01", "Opaline lamp", 8900),
    ("BULB-4", "Warm LED bulb (4 pack)", 1250),
    ("SHADE-02", "Linen shade", 3400),
    ("CABLE-3M", "Braided cable, 3 m", 1900),
    ("VASE-07", "Stoneware vase", 5600),
]
_CURRENCY = {"fr": "EUR", "fr-CA": "CAD", "de": "EUR", "es": "EUR", "en-GB": "GBP", "ja": "JPY"}
_REASONS = ["requested_by_customer", "damaged", "late_delivery", "wrong_item"]
_METHODS = ["card", "card", "paypal", "store_credit"]
_CARRIERS = [("colissimo", "6A"), ("dhl", "JD"), ("ups", "1Z"), ("la_poste", "LP")]
_JOURNEYS = [
    ("info_received", "in_transit", "out_for_delivery", "delivered"),
    ("info_received", "in_transit", "out_for_delivery", "delivered"),
    ("info_received", "in_transit"),
    ("info_received", "in_transit", "attempt_failed", "available_for_pickup"),
    ("delivered",),
]


def demo_events(
    orders: int, *, refund_share: float = 0.4, seed: int = 1042, start: datetime | None = None
) -> list[CanonicalEvent]:
    """``orders`` orders placed over one day, a share of them refunded, in time order.

    The day starts a week ago, so that every shipment scan and refund that follows an
    order (up to about six days later) has already happened: no event is in the future.
    """
    rng = random.Random(seed)  # noqa: S311 - demo data, not security
    start = start or datetime.now(UTC) - timedelta(days=7)
    step = timedelta(hours=24) / max(orders, 1)
    stream: list[CanonicalEvent] = []
    for n in range(orders):
        order_id = str(1000 + n)
        name, locale, zone, phone = rng.choice(_CUSTOMERS)
        currency = _CURRENCY.get(locale, "USD")
        lines: list[dict[str, Any]] = [
            {
                "sku": sku,
                "name": title,
                "quantity": rng.randint(1, 3),
                "unit_price": price // 100 if currency == "JPY" else price,
            }
            for sku, title, price in rng.sample(_PRODUCTS, rng.randint(1, 3))
        ]
        total = sum(line["quantity"] * line["unit_price"] for line in lines)
        slug = name.split()[0].lower().encode("ascii", "ignore").decode() or "customer"
        customer = {
            "id": f"cus_{n % 400}",
            "name": name,
            "email": f"{slug}.{n % 400}@example.com",
            "phone": phone,
            "locale": locale,
            "time_zone": zone,
        }
        placed_at = start + step * n
        stream.append(
            CanonicalEvent(
                source=DEMO_SOURCE,
                id=f"order-{order_id}",
                type="order.placed",
                subject=f"order/{order_id}",
                time=placed_at,
                data={
                    "order_id": order_id,
                    "order_number": f"#{order_id}",
                    "currency": currency,
                    "total": total,
                    "customer": customer,
                    "lines": lines,
                },
            )
        )
        refunded = rng.random() < refund_share
        stream.append(_payment(rng, order_id, customer["id"], currency, total, placed_at, refunded))
        carrier, prefix = rng.choice(_CARRIERS)
        tracking = f"{prefix}{rng.randrange(10**9, 10**10)}"
        shipped_at = placed_at + timedelta(hours=rng.randint(2, 20))
        progress = rng.choice(_JOURNEYS)
        for hop, status in enumerate(progress):
            stream.append(
                _event(
                    "shipment.status_changed",
                    f"shipment-{order_id}-{status}",
                    order_id,
                    shipped_at + timedelta(hours=14 * hop),
                    {
                        "order_id": order_id,
                        "shipment_id": f"shp_{order_id}",
                        "carrier": carrier,
                        "tracking_number": tracking,
                        "tracking_url": f"https://track.example.com/{tracking}",
                        "status": status,
                        "carrier_status": status.upper(),
                        "occurred_at": (shipped_at + timedelta(hours=14 * hop)).isoformat(),
                        "estimated_delivery": (shipped_at + timedelta(days=3)).date().isoformat(),
                    },
                )
            )
        if refunded:
            line = rng.choice(lines)
            amount = line["unit_price"] * rng.randint(1, line["quantity"])
            authorized_at = shipped_at + timedelta(days=4, minutes=rng.randint(5, 600))
            return_id = f"rma_{order_id}"
            for hop, status in enumerate(("requested", "approved", "received")):
                stream.append(
                    _event(
                        "return.status_changed",
                        f"return-{order_id}-{status}",
                        order_id,
                        authorized_at - timedelta(hours=30 - 12 * hop),
                        {
                            "order_id": order_id,
                            "return_id": return_id,
                            "return_reference": f"R-{order_id}-1",
                            "status": status,
                            "lines": [{"sku": line["sku"], "quantity": 1}],
                            "label_url": None,
                            "reason": None,
                            "occurred_at": None,
                        },
                    )
                )
            stream.append(
                _event(
                    "refund.authorized",
                    f"refund-{order_id}",
                    order_id,
                    authorized_at,
                    {
                        "order_id": order_id,
                        "refund_id": f"re_{order_id}",
                        "payment_id": f"pay_{order_id}",
                        "amount": amount,
                        "currency": currency,
                        "reason_code": rng.choice(_REASONS),
                        "method": rng.choice(_METHODS),
                        "authorized_at": authorized_at.isoformat(),
                    },
                )
            )
    stream.sort(key=lambda event: event.time or start)
    return stream


# Sandbox card tokens (billing/gateways/sandbox.py) of the payments that fail, by how
# their recovery goes: recovered after retries, never, or a hard decline at once.
_FAILING_CARDS = (
    ("tok_flaky_1", "insufficient_funds"),
    ("tok_flaky_2", "processing_error"),
    ("tok_insufficient_funds", "insufficient_funds"),
    ("tok_stolen", "stolen_card"),
    ("tok_expired", "expired_card"),
)
FAILED_PAYMENT_SHARE = 0.08


def _payment(
    rng: random.Random,
    order_id: str,
    customer_id: str,
    currency: str,
    total: int,
    at: datetime,
    refunded: bool,
) -> CanonicalEvent:
    """The order's payment, captured, or (for a few never refunded) failed with a card the
    sandbox gateway declines, so the retry workflows have something to recover."""
    data: dict[str, Any] = {
        "order_id": order_id,
        "amount": total,
        "currency": currency,
        "gateway": "sandbox",
        "customer": {"id": customer_id},
    }
    if refunded or rng.random() >= FAILED_PAYMENT_SHARE:
        data["payment_id"] = f"pay_{order_id}"
        return _event("payment.captured", f"payment-{order_id}", order_id, at, data)
    card, decline_code = rng.choice(_FAILING_CARDS)
    data |= {
        "payment_id": f"pay_{order_id}_{card}",
        "decline_code": decline_code,
        "network": rng.choice(("visa", "mastercard")),
    }
    return _event("payment.failed", f"payment-{order_id}-failed", order_id, at, data)


def _event(
    event_type: str, event_id: str, order_id: str, at: datetime, data: dict[str, Any]
) -> CanonicalEvent:
    return CanonicalEvent(
        source=DEMO_SOURCE,
        id=event_id,
        type=event_type,
        subject=f"order/{order_id}",
        time=at,
        data=data,
    )
