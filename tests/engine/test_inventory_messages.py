"""What a restock-date message says once the worker has delivered it."""

from __future__ import annotations

from sqlalchemy import select

from tests.support.smtp import SmtpServer
from tests.support.work import drain
from tidings.db.schema import inbox_messages
from tidings.db.types import utcnow
from tidings.events.envelope import CanonicalEvent
from tidings.intake.service import DeliveryDefaults, ingest
from tidings.runtime import Runtime

SKU = "LAMP-01"


def test_a_delivered_restock_date_change_names_the_date_it_replaces(
    runtime: Runtime, smtp_server: SmtpServer
) -> None:
    order = CanonicalEvent(
        "shop",
        "placed-1042",
        "order.placed",
        None,
        None,
        {
            "order_id": "1042",
            "order_number": "#1042",
            "currency": "EUR",
            "total": 8900,
            "customer": {
                "id": "ana",
                "name": "Ana",
                "email": "ana@example.com",
                "locale": "en",
                "time_zone": "UTC",
            },
            "lines": [{"sku": SKU, "name": "Opaline lamp", "quantity": 1}],
        },
    )

    def eta(date: str, n: int) -> CanonicalEvent:
        data = {"sku": SKU, "available": 0, "restock_eta": date}
        return CanonicalEvent("erp", f"eta-{n}", "inventory.restock_eta_changed", None, None, data)

    for batch in ([order, eta("2026-12-05", 1)], [eta("2026-12-20", 2)]):
        with runtime.engine.begin() as conn:
            ingest(
                conn,
                batch,
                rules=runtime.rules,
                delivery=DeliveryDefaults(3),
                now=utcnow(),
                actor="test",
            )
    drain(runtime)

    mails = smtp_server.wait_for(2)
    texts = [
        part.get_content()
        for mail in mails
        for part in mail.walk()
        if part.get_content_type() == "text/plain"
    ]
    later = [text for text in texts if "December 20, 2026" in text]
    assert later
    assert all("previously December 5, 2026" in text for text in later)
    with runtime.engine.connect() as conn:
        bodies = conn.scalars(select(inbox_messages.c.body)).all()
    assert any("previously December 5, 2026" in body for body in bodies)
