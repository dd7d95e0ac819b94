"""How payment retry workflows tell the customer: billing's events, handed to intake.

Each event's id is fixed per workflow and step, so emitting it again changes nothing; the
engine then plans the messages like for any other source (builtin_rules.yaml).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from tidings.billing import retry_repository as repo
from tidings.billing.errors import BillingError
from tidings.billing.gateways.declines import DeclineClassifier
from tidings.billing.refunds import EVENT_SOURCE
from tidings.billing.retry_repository import Workflow
from tidings.billing.service import Emitter
from tidings.events.envelope import CanonicalEvent
from tidings.events.schemas import CATALOGUE
from tidings.intake.service import ingest


@dataclass(frozen=True, slots=True)
class RetryContext:
    """What retry moves need from the wiring."""

    store: str
    emitter: Emitter
    # "https://shop.example/pay/{order_id}": where customers update their card; the
    # placeholders {order_id} and {payment_id} are filled in. None: no link.
    update_payment_url: str | None = None
    declines: DeclineClassifier = field(default_factory=DeclineClassifier)


def emit(
    conn: Connection,
    ctx: RetryContext,
    workflow: Workflow,
    event_type: str,
    suffix: str,
    now: datetime,
    actor: str,
    **extra: Any,
) -> str | None:
    """Hand the event to intake; its id is fixed per workflow and step, so emitting it
    again changes nothing. A payment without an order has no order to tell about."""
    if workflow.order_id is None:
        return None
    data: dict[str, Any] = {
        "order_id": workflow.order_id,
        "payment_id": workflow.payment_id,
        "amount": workflow.amount,
        "currency": workflow.currency,
        "gateway": workflow.gateway,
        "decline_code": workflow.decline_code,
        "retry_workflow_id": workflow.id,
    }
    if ctx.update_payment_url and event_type != "payment.recovered":
        data["update_payment_url"] = ctx.update_payment_url.format(
            order_id=workflow.order_id, payment_id=workflow.payment_id
        )
    if workflow.customer_id:
        data["customer"] = {"id": workflow.customer_id}
    data.update({k: v for k, v in extra.items() if v is not None})
    event = _event(event_type, f"{workflow.id}.{suffix}", workflow.order_id, data, now)
    ingest(
        conn, [event], rules=ctx.emitter.rules, delivery=ctx.emitter.delivery, now=now, actor=actor
    )
    return event.id


def emit_order_canceled(
    conn: Connection, ctx: RetryContext, workflow: Workflow, now: datetime, actor: str
) -> None:
    """The order is canceled for every family: a backorder no longer waits on it."""
    order_id = workflow.order_id
    if order_id is None:
        return
    data = {"order_id": order_id, "reason": "payment_not_collected"}
    event = _event("order.canceled", f"{workflow.id}.order-canceled", order_id, data, now)
    ingest(
        conn, [event], rules=ctx.emitter.rules, delivery=ctx.emitter.delivery, now=now, actor=actor
    )


def _event(
    event_type: str, event_id: str, order_id: str, data: Mapping[str, Any], at: datetime
) -> CanonicalEvent:
    canonical = CATALOGUE[event_type].model_validate(dict(data)).model_dump(mode="json")
    return CanonicalEvent(
        source=EVENT_SOURCE,
        id=event_id,
        type=event_type,
        subject=f"order/{order_id}",
        time=at,
        data=canonical,
    )


def require(conn: Connection, workflow_id: str, *, lock: bool = False) -> Workflow:
    """The workflow, or the ``retry_workflow_not_found`` refusal."""
    workflow = repo.get_workflow(conn, workflow_id, for_update=lock)
    if workflow is None:
        raise BillingError(
            "retry_workflow_not_found", f"No retry workflow with id {workflow_id}.", "workflow_id"
        )
    return workflow
