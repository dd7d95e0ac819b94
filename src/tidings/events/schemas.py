"""Typed ``data`` for every canonical event type. Sources may add fields; known ones are checked.

Money is an integer amount in minor units plus an ISO 4217 currency code.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal
from zoneinfo import available_timezones

from babel.numbers import list_currencies
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    model_validator,
)

_CURRENCIES = frozenset(list_currencies())
_TIME_ZONES = frozenset(available_timezones())


def _currency(value: str) -> str:
    if value not in _CURRENCIES:
        raise ValueError("must be an ISO 4217 currency code in upper case, such as EUR or USD")
    return value


def _time_zone(value: str) -> str:
    if value not in _TIME_ZONES:
        raise ValueError("must be an IANA time zone name, such as Europe/Paris")
    return value


Currency = Annotated[str, AfterValidator(_currency)]
TimeZone = Annotated[str, AfterValidator(_time_zone)]
# Minor units (cents): an integer, never a float, so no amount is ever rounded.
Amount = Annotated[StrictInt, Field(ge=0)]
Id = Annotated[str, Field(min_length=1, max_length=128)]
Locale = Annotated[str, Field(pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$", max_length=35)]


class Data(BaseModel):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)


class Customer(Data):
    id: Id
    name: str | None = None
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)
    # E.164: a plus and up to 15 digits.
    phone: str | None = Field(default=None, pattern=r"^\+[1-9]\d{1,14}$")
    locale: Locale | None = None
    time_zone: TimeZone | None = None
    segment: str | None = Field(default=None, max_length=64)


class OrderScoped(Data):
    order_id: Id
    customer: Customer | None = None


class OrderLine(Data):
    sku: Id
    name: str | None = None
    quantity: Annotated[StrictInt, Field(gt=0)]
    unit_price: Amount | None = None


class OrderPlaced(OrderScoped):
    order_number: str | None = None
    currency: Currency
    total: Amount
    customer: Customer
    lines: list[OrderLine] = Field(default_factory=list)


class OrderCanceled(OrderScoped):
    reason: str | None = None


class Payment(OrderScoped):
    payment_id: Id
    amount: Amount
    currency: Currency
    gateway: str | None = None


class PaymentFailed(Payment):
    decline_code: str | None = None
    attempt: Annotated[StrictInt, Field(ge=1)] = 1
    network: str | None = None
    # Set on the events billing's retry workflows emit (source tidings:billing): whether
    # the card may go through later, where the customer updates it, when we try again.
    decline_category: Literal["hard", "soft"] | None = None
    update_payment_url: str | None = Field(default=None, pattern=r"^https?://", max_length=2048)
    next_attempt_at: AwareDatetime | None = None
    retry_workflow_id: Id | None = None


class PaymentRetryScheduled(PaymentFailed):
    next_attempt_at: AwareDatetime
    attempts_left: Annotated[StrictInt, Field(ge=0)] | None = None


class PaymentRetriesExhausted(PaymentFailed):
    final_action: Literal["cancel_order", "mark_uncollectible", "escalate"] | None = None
    attempts: Annotated[StrictInt, Field(ge=0)] | None = None


class PaymentRecovered(Payment):
    attempt: Annotated[StrictInt, Field(ge=0)] | None = None
    retry_workflow_id: Id | None = None


class Refund(OrderScoped):
    refund_id: Id
    payment_id: Id | None = None
    amount: Amount
    currency: Currency
    reason_code: str | None = None
    reason: str | None = None
    method: str | None = None
    succeeded_at: AwareDatetime | None = None  # the refund messages print it when given


class RefundAuthorized(Refund):
    authorized_at: AwareDatetime | None = None


class RefundRejected(Refund):
    reason: str | None = None


class InventoryLevel(Data):
    sku: Id
    location: str | None = None
    available: StrictInt
    restock_eta: date | None = None


ShipmentStatus = Literal[
    "pending",
    "info_received",
    "in_transit",
    "out_for_delivery",
    "available_for_pickup",
    "delivered",
    "attempt_failed",
    "exception",
    "return_to_sender",
    "expired",
    "canceled",
]


class ShipmentStatusChanged(Data):
    # Carriers' trackers often know only the tracking number; the engine finds the
    # order from an earlier event that named both.
    order_id: Id | None = None
    customer: Customer | None = None
    shipment_id: Id
    carrier: str | None = None
    tracking_number: str | None = None
    tracking_url: str | None = None
    status: ShipmentStatus
    carrier_status: str | None = None
    occurred_at: AwareDatetime | None = None
    estimated_delivery: date | None = None

    @model_validator(mode="after")
    def _traceable(self) -> ShipmentStatusChanged:
        if not self.order_id and not self.tracking_number:
            raise ValueError("a shipment update needs an order_id or a tracking_number")
        return self


ReturnStatus = Literal[
    "requested",
    "approved",
    "declined",
    "label_issued",
    "in_transit",
    "received",
    "inspected",
    "restocked",
    "refund_authorized",
    "refunded",
    "closed",
    "canceled",
]


class ReturnLine(Data):
    sku: Id
    quantity: Annotated[StrictInt, Field(gt=0)]


class ReturnStatusChanged(OrderScoped):
    outcome: Literal["accepted", "rejected"] | None = None
    return_id: Id
    return_reference: str | None = None
    status: ReturnStatus
    lines: list[ReturnLine] = Field(default_factory=list)
    label_url: str | None = None
    reason: str | None = None
    occurred_at: AwareDatetime | None = None


class MessageReceipt(Data):
    notification_id: Id
    channel: str | None = None
    provider: str | None = None
    reason: str | None = None
    occurred_at: AwareDatetime | None = None


class RecipientOptedOut(Data):
    channel: str
    address: str
    customer_id: Id | None = None
    category: str | None = None


class PaymentDisputed(OrderScoped):
    """The customer disputed a payment of the order (a chargeback): its retries stop."""

    payment_id: Id
    amount: Amount | None = None
    currency: Currency | None = None
    reason: str | None = None


class PaymentMethodUpdated(Data):
    """The customer gave a new card for a payment: a retry is due now."""

    payment_id: Id
    order_id: Id | None = None
    customer: Customer | None = None


CATALOGUE: dict[str, type[Data]] = {
    "order.placed": OrderPlaced,
    "order.canceled": OrderCanceled,
    "payment.captured": Payment,
    "payment.failed": PaymentFailed,
    "payment.retry_scheduled": PaymentRetryScheduled,
    "payment.recovered": PaymentRecovered,
    "payment.retries_exhausted": PaymentRetriesExhausted,
    "payment.disputed": PaymentDisputed,
    "payment.method_updated": PaymentMethodUpdated,
    "refund.requested": Refund,
    "refund.approved": Refund,
    "refund.rejected": RefundRejected,
    "refund.authorized": RefundAuthorized,
    "refund.succeeded": Refund,
    "refund.failed": Refund,
    "inventory.level_changed": InventoryLevel,
    "inventory.backordered": InventoryLevel,
    "inventory.restock_eta_changed": InventoryLevel,
    "inventory.back_in_stock": InventoryLevel,
    "shipment.status_changed": ShipmentStatusChanged,
    "return.status_changed": ReturnStatusChanged,
    "message.delivered": MessageReceipt,
    "message.bounced": MessageReceipt,
    "message.opened": MessageReceipt,
    "message.clicked": MessageReceipt,
    "message.complained": MessageReceipt,
    "recipient.opted_out": RecipientOptedOut,
}
