"""The store's recorded captures of one gateway, as that gateway would hold them.

The sandbox takes no real payments; what it "took" are the payments the store's events
said it did (``payment.captured`` with gateway ``sandbox``). This view lets it answer
refunds for them and report their captures in ``activity``.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import Engine, and_, or_, select

from tidings.billing.gateways.base import Capture, Movement
from tidings.billing.reconciliation import captures_booked
from tidings.db.engine import read_transaction
from tidings.db.schema import payments


class RecordedPayments:
    def __init__(self, engine: Engine, gateway: str = "sandbox") -> None:
        self.engine = engine
        self.gateway = gateway

    def capture(self, payment_id: str) -> Capture | None:
        """The recorded capture of the payment the gateway knows as ``payment_id``."""
        known_as = or_(
            payments.c.gateway_payment_id == payment_id,
            and_(payments.c.id == payment_id, payments.c.gateway_payment_id.is_(None)),
        )
        with read_transaction(self.engine) as conn:
            row = conn.execute(
                select(payments.c.captured, payments.c.currency, payments.c.refunded).where(
                    payments.c.gateway == self.gateway, known_as, payments.c.captured > 0
                )
            ).first()
        if row is None:
            return None
        return Capture(payment_id, int(row.captured), row.currency, int(row.refunded))

    def captures_on(self, day: date) -> list[Movement]:
        with read_transaction(self.engine) as conn:
            booked = captures_booked(conn, gateway=self.gateway, day=day)
        return [Movement("in", b.reference, b.amount, b.currency) for b in booked]
