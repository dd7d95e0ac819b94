"""From one event to the notifications it should cause: pure decisions, no I/O."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tidings.engine.recipients import Recipient
from tidings.engine.rules import Rule, RuleSet
from tidings.events.envelope import CanonicalEvent

QUEUED = "queued"
SUPPRESSED = "suppressed"


@dataclass(frozen=True, slots=True)
class PlannedNotification:
    rule: Rule
    channel: str
    recipient: Recipient | None
    address: str | None
    status: str
    reason: str | None
    dedupe_key: str


def dedupe_key(*parts: str) -> str:
    """A fixed-length key no two different part lists share (JSON keeps the boundaries)."""
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def condition_context(
    event: CanonicalEvent, recipient: Recipient | None, order: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "data": event.data,
        "event": {
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "subject": event.subject,
        },
        "customer": recipient.as_context() if recipient else {},
        "order": order or {},
    }


def plan(
    event: CanonicalEvent,
    recipient: Recipient | None,
    rules: RuleSet,
    *,
    order: dict[str, Any] | None = None,
) -> list[PlannedNotification]:
    """Every matching rule yields one notification per channel: queued, or suppressed with why."""
    matching = rules.for_type(event.type)
    if not matching:
        return []
    context = condition_context(event, recipient, order)
    planned = []
    for rule in matching:
        if not rule.matches(context):
            continue
        for channel in rule.channels:
            address = recipient.address_for(channel) if recipient else None
            status, reason = QUEUED, None
            if recipient is None:
                status, reason = SUPPRESSED, "no recipient: the event names no known customer"
            elif not rule.critical and rule.category in recipient.opted_out:
                status = SUPPRESSED
                reason = f"the customer opted out of the '{rule.category}' category"
            elif address is None:
                status, reason = SUPPRESSED, f"the customer has no {channel} address"
            planned.append(
                PlannedNotification(
                    rule=rule,
                    channel=channel,
                    recipient=recipient,
                    address=address,
                    status=status,
                    reason=reason,
                    dedupe_key=dedupe_key(rule.id, channel, event.source, event.id),
                )
            )
    return planned
