"""Payment retry decisions as pure functions: the workflow's states and what follows a decline.

State machine (DESIGN.md, "Payment retry"): ``failed`` → ``retry_scheduled`` →
``retrying`` → ``recovered`` | ``retry_scheduled`` | ``exhausted`` → final action. Hard
declines skip straight to ``exhausted``. ``canceled``: stopped before the end because
the order was canceled, a refund or dispute opened, or a person canceled it.

An attempt that answers after its workflow was stopped still took the money: a late
approval moves even a canceled workflow to ``recovered``, as the money is real.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from tidings.billing.errors import BillingError
from tidings.billing.gateways.declines import DeclineCategory
from tidings.billing.retry_policy import RetryPolicy

OPEN = ("failed", "retry_scheduled", "retrying")
FINAL = ("recovered", "exhausted", "canceled")
STATES = OPEN + FINAL

TRANSITIONS: dict[tuple[str, str], str] = {
    ("failed", "schedule"): "retry_scheduled",
    ("failed", "exhaust"): "exhausted",
    ("retry_scheduled", "claim"): "retrying",
    ("retrying", "recover"): "recovered",
    ("retrying", "schedule"): "retry_scheduled",
    ("retrying", "exhaust"): "exhausted",
    # Paid some other way (the customer paid the invoice, a capture came in).
    ("failed", "recover"): "recovered",
    ("retry_scheduled", "recover"): "recovered",
    ("canceled", "recover"): "recovered",
    ("failed", "stop"): "canceled",
    ("retry_scheduled", "stop"): "canceled",
    ("retrying", "stop"): "canceled",
}


def transition(state: str, action: str) -> str:
    """The state after ``action``; BillingError ``illegal_transition`` when not allowed."""
    following = TRANSITIONS.get((state, action))
    if following is not None:
        return following
    allowed = sorted(a for (s, a) in TRANSITIONS if s == state)
    if state in FINAL and not allowed:
        detail = f"The retry workflow is {state}, a final state: it cannot {action}."
    else:
        detail = f"A retry workflow that is {state} cannot {action}" + (
            f"; from {state} it can only: {', '.join(allowed)}." if allowed else "."
        )
    raise BillingError("illegal_transition", detail, field="status")


@dataclass(frozen=True, slots=True)
class Decision:
    """What follows a decline: ``schedule`` at ``next_attempt_at``, or ``exhaust``."""

    action: Literal["schedule", "exhaust"]
    next_attempt_at: datetime | None
    why: str


def after_decline(
    policy: RetryPolicy,
    *,
    category: DeclineCategory,
    decline_code: str | None,
    first_failed_at: datetime,
    declined_at: datetime,
    attempts_made: int,
    network: str | None,
    time_zone: str | None,
) -> Decision:
    """Decide what a declined payment gets next under ``policy``."""
    if category == "hard":
        return Decision(
            "exhaust",
            None,
            f"hard decline ({decline_code or 'no code'}): the same card cannot succeed, "
            "so it is not tried again",
        )
    at = policy.next_attempt(
        first_failed_at=first_failed_at,
        last_attempt_at=declined_at,
        attempts_made=attempts_made,
        network=network,
        time_zone=time_zone,
    )
    if at is None:
        limit = policy.attempt_limit(network)
        return Decision(
            "exhaust",
            None,
            f"the retry policy is spent after {attempts_made} of at most {limit} attempts "
            f"within {policy.max_days} days",
        )
    return Decision("schedule", at, f"soft decline ({decline_code or 'no code'}): tried again")


def attempt_key(workflow_id: str, number: int) -> str:
    """The gateway idempotency key of one attempt: a repeat after a timeout is the same
    request, which the gateway answers with its first outcome (gateways/base.py)."""
    return f"{workflow_id}.attempt-{number}"
