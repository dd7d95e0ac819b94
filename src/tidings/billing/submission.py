"""Approved refunds go to the gateway, and what the gateway says comes back to the refunds.

Submission (``submit_due``), in three steps so no refund is ever sent twice:

1. Claim: approved refunds move to ``submitted`` in a short transaction of their own,
   before anything is sent. PostgreSQL skips rows another worker holds (FOR UPDATE SKIP
   LOCKED), SQLite runs one writer at a time, and the status guard in the UPDATE means
   each refund is claimed by exactly one caller.
2. Send: ``gateway.refund(...)`` runs outside any transaction, with the refund's own id
   as the gateway idempotency key (gateways/base.py), so a repeat of the request can
   only ever answer the refund the first one made.
3. Record, in a new transaction: ``pending`` keeps the refund ``submitted`` with the
   gateway's refund id; ``succeeded`` authorizes it (the refund confirmation goes out,
   DESIGN.md "Authorization Complete") and then marks it succeeded; ``failed`` marks it
   failed, which gives its amount back to the payment.

An unknown outcome (``GatewayTimeout``, a transient ``GatewayError``, anything
unexpected) leaves the refund ``submitted`` without a gateway id: the request may have
been acted on, so it is never simply sent again (gateways/base.py). A permanent
``GatewayError`` fails the refund with the gateway's message.

Reconciliation (``reconcile``) asks the gateway about refunds not changed for
``older_than`` (so it never races a submission still waiting for its answer):

- ``submitted`` or ``authorized`` ones: ``refund_status`` by gateway id, or, without
  one, ``find_refund`` by payment and idempotency key. ``pending`` authorizes a
  submitted refund (the gateway initiated the funds); ``succeeded`` authorizes if need
  be and succeeds; ``failed`` fails it (releasing an authorization).
- ``succeeded`` ones changed within ``late_failure_window``: a gateway that now reports
  one failed reverses it in the ledger (DESIGN.md, refund state machine).
- ``find_refund`` answering None means the gateway holds no refund under the key: the
  request never arrived, and only then is it sent again, with the same key, which the
  gateway answers with the first refund should the lost request turn up after all
  (gateways/base.py: "Only None makes submitting again ... safe").

Gateways are async and this module is sync, like the worker tick that runs it in a
thread of its own: each gateway call runs on the process's gateway loop
(gateways/loop.py), where the gateway's pooled connections live.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from tidings.audit.chain import AuditEntry, append
from tidings.billing import payment_feed, repository, retry_runner, service
from tidings.billing.context import Billing
from tidings.billing.gateways import loop as gateway_loop
from tidings.billing.gateways.base import Gateway, GatewayError, GatewayRefund, GatewayTimeout
from tidings.billing.refunds import transition
from tidings.billing.repository import Refund
from tidings.db.types import utcnow

log = logging.getLogger(__name__)

T = TypeVar("T")

APPROVED = "approved"
SUBMITTED = transition(APPROVED, "submit")
AUTHORIZED = transition(SUBMITTED, "authorize")
SUCCEEDED = transition(AUTHORIZED, "succeed")

OLDER_THAN = timedelta(minutes=2)
LATE_FAILURE_WINDOW = timedelta(days=30)
FAILED_WITHOUT_REASON = "the gateway reported the refund failed"


def gateway_moves(status: str, gateway_status: str, *, pending_authorizes: bool) -> list[str]:
    """The refund actions that bring a refund in ``status`` in line with the gateway.

    ``pending_authorizes``: whether a pending gateway refund counts as authorized (funds
    initiated). The first answer to a submission does not; a later status query does.
    """
    if gateway_status == "failed":
        return ["fail"] if status in (SUBMITTED, AUTHORIZED, SUCCEEDED) else []
    if status == SUBMITTED:
        if gateway_status == "succeeded":
            return ["authorize", "succeed"]
        return ["authorize"] if pending_authorizes else []
    if status == AUTHORIZED and gateway_status == "succeeded":
        return ["succeed"]
    return []


def submit_due(
    engine: Engine, billing: Billing, *, now: datetime, actor: str = "billing", limit: int = 20
) -> int:
    """Claim up to ``limit`` approved refunds, send each to the gateway and record its
    answer; returns how many were claimed."""
    with engine.connect() as conn:
        if not repository.any_refund_in(conn, APPROVED):
            return 0
    with engine.begin() as conn:
        claimed = repository.claim_refunds(
            conn, status=APPROVED, new_status=SUBMITTED, now=now, limit=limit
        )
        if claimed:
            entries = [
                AuditEntry(
                    actor,
                    f"refund.{SUBMITTED}",
                    "refund",
                    refund.id,
                    {"gateway": _payment_gateway_name(conn, refund)},
                )
                for refund in claimed
            ]
            append(conn, entries, at=now)
    for refund in claimed:
        _send(engine, billing, refund, now=now, actor=actor)
    return len(claimed)


def reconcile(
    engine: Engine,
    billing: Billing,
    *,
    now: datetime,
    actor: str = "billing",
    older_than: timedelta = OLDER_THAN,
    late_failure_window: timedelta = LATE_FAILURE_WINDOW,
    limit: int = 100,
) -> int:
    """Ask the gateway about refunds in flight and recently succeeded ones; returns how
    many changed state."""
    with engine.connect() as conn:
        candidates = repository.refunds_to_reconcile(
            conn,
            in_flight=(SUBMITTED, AUTHORIZED),
            settled=SUCCEEDED,
            changed_before=now - older_than,
            settled_since=now - late_failure_window,
            limit=limit,
        )
    changed = 0
    for refund in candidates:
        try:
            answer = _ask(engine, billing, refund)
        except (GatewayError, GatewayTimeout) as exc:
            log.warning("refund %s: the gateway could not say where it stands: %s", refund.id, exc)
            continue
        if answer is None:
            if refund.status == SUBMITTED:
                changed += _send(engine, billing, refund, now=now, actor=actor)
            else:
                log.error("refund %s is %s but the gateway has no record", refund.id, refund.status)
            continue
        try:
            changed += _record(
                engine, billing, refund.id, answer, now=now, actor=actor, pending_authorizes=True
            )
        except Exception:
            log.exception("refund %s: recording the gateway's answer failed", refund.id)
    return changed


@dataclass
class BillingTick:
    """Billing's share of a worker tick: act on new payment events, submit approved
    refunds and attempt due payment retries every time, reconcile refunds at most every
    ``reconcile_every``. Returns how many refunds it submitted or moved,
    so an idle tick counts zero."""

    engine: Engine
    billing: Billing
    actor: str = "billing"
    reconcile_every: timedelta = timedelta(minutes=1)
    older_than: timedelta = OLDER_THAN
    _next_reconcile: datetime | None = field(default=None, init=False)

    def __call__(self) -> int:
        now = utcnow()
        retries = self.billing.retries
        # Events first: a payment that failed or was captured since the last tick is
        # known before anything is charged or refunded.
        done = payment_feed.apply_pending(self.engine, retries, now=now, actor=self.actor)
        done += submit_due(self.engine, self.billing, now=now, actor=self.actor)
        done += retry_runner.run_due(
            self.engine, retries, self.billing.retry_gateway, now=now, actor=self.actor
        )
        if self._next_reconcile is None or now >= self._next_reconcile:
            self._next_reconcile = now + self.reconcile_every
            done += reconcile(
                self.engine, self.billing, now=now, actor=self.actor, older_than=self.older_than
            )
        return done


def _wait(call: Coroutine[Any, Any, T]) -> T:
    return gateway_loop.call(call)


def _payment_gateway_name(conn: Connection, refund: Refund) -> str:
    payment = repository.get_payment(conn, refund.payment_id)
    return payment.gateway if payment is not None else "unknown"


def _at_gateway(engine: Engine, billing: Billing, refund: Refund) -> tuple[Gateway, str]:
    """The gateway that took the refund's payment, and the id it knows the payment by."""
    with engine.connect() as conn:
        payment = repository.get_payment(conn, refund.payment_id)
    if payment is None:
        raise RuntimeError(f"payment {refund.payment_id} of refund {refund.id} is missing")
    gateway = billing.gateways.for_payment(
        gateway=payment.gateway, store=billing.store, currency=payment.currency
    )
    if gateway is None:
        raise GatewayError(
            f"payment {payment.id} was taken by gateway {payment.gateway!r}, which is not "
            f"configured (configured: {', '.join(billing.gateways.names)})",
            permanent=True,
            code="gateway_not_configured",
            gateway=payment.gateway,
        )
    # The gateway knows the payment by its own id when it gave one.
    return gateway, payment.gateway_payment_id or payment.id


def _ask(engine: Engine, billing: Billing, refund: Refund) -> GatewayRefund | None:
    gateway, payment_id = _at_gateway(engine, billing, refund)
    if refund.gateway_refund_id is not None:
        return _wait(gateway.refund_status(refund.gateway_refund_id))
    return _wait(gateway.find_refund(payment_id=payment_id, idempotency_key=refund.id))


def _send(engine: Engine, billing: Billing, refund: Refund, *, now: datetime, actor: str) -> int:
    """Send one claimed refund and record the answer; returns 1 if its state changed."""
    try:
        gateway, payment_id = _at_gateway(engine, billing, refund)
        answer = _wait(
            gateway.refund(
                payment_id=payment_id,
                amount=refund.amount,
                currency=refund.currency,
                idempotency_key=refund.id,
            )
        )
    except GatewayError as exc:
        if exc.permanent:
            return _fail(engine, billing, refund.id, str(exc), now=now, actor=actor)
        # Transient after the request left: it may have been acted on, like a timeout.
        return _unknown(engine, refund.id, str(exc), now=now, actor=actor)
    except GatewayTimeout as exc:
        return _unknown(engine, refund.id, str(exc), now=now, actor=actor)
    except Exception as exc:
        log.exception("refund %s: sending it to the gateway failed", refund.id)
        return _unknown(engine, refund.id, repr(exc), now=now, actor=actor)
    try:
        return _record(
            engine, billing, refund.id, answer, now=now, actor=actor, pending_authorizes=False
        )
    except Exception:
        # Left submitted: the reconciler asks the gateway again later.
        log.exception("refund %s: recording the gateway's answer failed", refund.id)
        return 0


def _unknown(engine: Engine, refund_id: str, why: str, *, now: datetime, actor: str) -> int:
    log.warning("refund %s: outcome unknown, left for reconciliation: %s", refund_id, why)
    with engine.begin() as conn:
        entry = AuditEntry(actor, "refund.outcome_unknown", "refund", refund_id, {"why": why})
        append(conn, [entry], at=now)
    return 0


def _fail(
    engine: Engine, billing: Billing, refund_id: str, reason: str, *, now: datetime, actor: str
) -> int:
    with engine.begin() as conn:
        refund = repository.get_refund(conn, refund_id, for_update=True)
        if refund is None or refund.status != SUBMITTED:
            return 0
        service.mark_failed(
            conn,
            refund_id=refund_id,
            actor=actor,
            reason=reason,
            now=now,
            emitter=billing.emitter,
        )
    return 1


def _record(
    engine: Engine,
    billing: Billing,
    refund_id: str,
    answer: GatewayRefund,
    *,
    now: datetime,
    actor: str,
    pending_authorizes: bool,
) -> int:
    """Apply the gateway's answer to the refund as it stands now (another worker may have
    applied it already); returns 1 if its state changed."""
    with engine.begin() as conn:
        refund = repository.get_refund(conn, refund_id, for_update=True)
        if refund is None:
            return 0
        if refund.gateway_refund_id is None:
            _note_gateway_id(conn, refund, answer, now=now, actor=actor)
        moves = gateway_moves(refund.status, answer.status, pending_authorizes=pending_authorizes)
        for action in moves:
            _apply(conn, billing, refund_id, action, answer, now=now, actor=actor)
    return 1 if moves else 0


def _note_gateway_id(
    conn: Connection, refund: Refund, answer: GatewayRefund, *, now: datetime, actor: str
) -> None:
    repository.update_refund(
        conn,
        refund.id,
        refund.status,
        gateway_refund_id=answer.gateway_refund_id,
        updated_at=now,
    )
    detail = {"gateway_refund_id": answer.gateway_refund_id, "gateway_status": answer.status}
    append(
        conn, [AuditEntry(actor, "refund.gateway_answered", "refund", refund.id, detail)], at=now
    )


def _apply(
    conn: Connection,
    billing: Billing,
    refund_id: str,
    action: str,
    answer: GatewayRefund,
    *,
    now: datetime,
    actor: str,
) -> None:
    emitter = billing.emitter
    if action == "authorize":
        service.mark_authorized(conn, refund_id=refund_id, actor=actor, now=now, emitter=emitter)
    elif action == "succeed":
        service.mark_succeeded(conn, refund_id=refund_id, actor=actor, now=now, emitter=emitter)
    else:
        service.mark_failed(
            conn,
            refund_id=refund_id,
            actor=actor,
            reason=answer.failure_reason or FAILED_WITHOUT_REASON,
            now=now,
            emitter=emitter,
        )
