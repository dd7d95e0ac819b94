"""An authorized refund reaches the customer as email through the engine, like any source."""

from __future__ import annotations

from sqlalchemy import select

from tests.support.events import CAMILLE, order_placed
from tests.support.smtp import SmtpServer
from tests.support.work import drain
from tidings.billing import service
from tidings.billing.service import Emitter
from tidings.db.schema import notifications
from tidings.db.types import utcnow
from tidings.events.envelope import parse_structured
from tidings.runtime import Runtime


def test_refund_authorized_reaches_the_customer_once(
    runtime: Runtime, smtp_server: SmtpServer
) -> None:
    runtime.intake.accept_events([parse_structured(order_placed("1042", CAMILLE))], actor="shop")
    outlet = Emitter(runtime.rules, runtime.intake.delivery)
    now = utcnow()
    with runtime.engine.begin() as conn:
        service.record_capture(
            conn,
            payment_id="pay_1042",
            store="lumen",
            order_id="1042",
            customer_id=CAMILLE["id"],
            gateway="sandbox",
            currency="EUR",
            amount=10_150,
            method="card",
            now=now,
            actor="gateway:sandbox",
        )
        refund, _ = service.request_refund(
            conn,
            payment_id="pay_1042",
            amount=1250,
            currency="EUR",
            reason_code="damaged",
            reason="cracked shade",
            lines=[{"sku": "LAMP-01", "quantity": 1}],
            idempotency_key="rma-7",
            requested_by="support:alice",
            approvals_needed=1,
            now=now,
        )
        service.approve(conn, refund_id=refund.id, actor="lead:bob", now=now)
        service.mark_submitted(
            conn, refund_id=refund.id, gateway_refund_id="gw_1", actor="worker", now=now
        )
        service.mark_authorized(conn, refund_id=refund.id, actor="worker", now=now, emitter=outlet)
    drain(runtime)

    mail = smtp_server.parsed()
    assert len(mail) == 1
    message = mail[0]
    assert message["To"] == CAMILLE["email"]
    assert message["Content-Language"] == "fr"
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "12,50\u00a0€" in text
    assert "1042" in text
    with runtime.engine.connect() as conn:
        sent = conn.execute(
            select(notifications.c.kind, notifications.c.channel, notifications.c.status)
        ).all()
    assert ("refund_authorized", "email", "sent") in sent
    assert {kind for kind, _, _ in sent} == {"refund_authorized"}
