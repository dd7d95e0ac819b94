"""Due payment retries go to the gateway, and what it says comes back to the workflows.

In three steps, like refund submission (submission.py), so no attempt is made twice:

1. Claim: due ``retry_scheduled`` workflows move to ``retrying`` in a short transaction
   of their own (retry_repository.claim_due), before anything is sent.
2. Charge: ``gateway.retry_payment(...)`` runs outside any transaction, with the
   attempt's own idempotency key (retries.attempt_key), so a repeat of the request can
   only ever answer with the first outcome.
3. Record, in a new transaction: approved recovers the payment, a decline follows the
   policy (retry_service.record_attempt).

An unknown outcome (a timeout, a transient gateway error, anything unexpected) leaves
the workflow ``retrying``. Once its claim is older than ``stale_after`` it is claimed
again and the same attempt, with the same key, is asked again. A permanent gateway
refusal (the gateway does not know the payment, the request can never work) counts as
a hard decline: retrying the same request cannot succeed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine

from tidings.billing import retry_repository as repo
from tidings.billing import retry_service
from tidings.billing.gateways import loop as gateway_loop
from tidings.billing.gateways.base import Gateway, GatewayError, GatewayTimeout
from tidings.billing.retries import attempt_key
from tidings.billing.retry_repository import Workflow
from tidings.billing.retry_service import Outcome, RetryContext

log = logging.getLogger(__name__)

T = TypeVar("T")

STALE_AFTER = timedelta(minutes=5)

# (workflow, attempt number) -> the gateway to charge, or None when none can.
GatewayChoice = Callable[[Workflow, int], Gateway | None]


def run_due(
    engine: Engine,
    ctx: RetryContext,
    choose: GatewayChoice,
    *,
    now: datetime,
    actor: str = "billing",
    stale_after: timedelta = STALE_AFTER,
    limit: int = 20,
) -> int:
    """Claim up to ``limit`` due workflows, attempt each and record it; returns how many."""
    stale_before = now - stale_after
    with engine.connect() as conn:
        if not repo.any_due(conn, now=now, stale_before=stale_before):
            return 0
    with engine.begin() as conn:
        claimed = repo.claim_due(conn, now=now, stale_before=stale_before, limit=limit)
    for workflow in claimed:
        attempt(engine, ctx, choose, workflow, now=now, actor=actor)
    return len(claimed)


def attempt(
    engine: Engine,
    ctx: RetryContext,
    choose: GatewayChoice,
    workflow: Workflow,
    *,
    now: datetime,
    actor: str,
) -> None:
    """Charge one claimed workflow once and record what the gateway said."""
    number = workflow.attempts + 1
    gateway = choose(workflow, number)
    if gateway is None:
        outcome = Outcome(
            "declined",
            workflow.gateway,
            decline_code="gateway_not_configured",
            permanent=True,
            detail=f"no gateway named {workflow.gateway!r} is configured to charge this payment",
        )
    else:
        outcome = _charge(gateway, workflow, number)
    try:
        with engine.begin() as conn:
            retry_service.record_attempt(
                conn,
                ctx,
                workflow_id=workflow.id,
                number=number,
                outcome=outcome,
                now=now,
                actor=actor,
            )
    except Exception:
        # Left retrying: the claim goes stale and the same attempt is asked again.
        log.exception("retry workflow %s: recording attempt %s failed", workflow.id, number)


def _charge(gateway: Gateway, workflow: Workflow, number: int) -> Outcome:
    try:
        answer = _wait(
            gateway.retry_payment(
                payment_id=workflow.payment_id,
                amount=workflow.amount,
                currency=workflow.currency,
                idempotency_key=attempt_key(workflow.id, number),
            )
        )
    except GatewayTimeout as exc:
        return Outcome("unknown", gateway.name, detail=str(exc))
    except GatewayError as exc:
        if not exc.permanent:
            return Outcome("unknown", gateway.name, detail=str(exc))
        code = exc.code or "gateway_refused"
        return Outcome("declined", gateway.name, decline_code=code, permanent=True, detail=str(exc))
    except Exception as exc:
        log.exception("retry workflow %s: the gateway call failed", workflow.id)
        return Outcome("unknown", gateway.name, detail=repr(exc))
    return Outcome(
        answer.outcome,
        gateway.name,
        decline_code=answer.decline_code,
        network=answer.network,
    )


def _wait(call: Coroutine[Any, Any, T]) -> T:
    return gateway_loop.call(call)
