"""From one event to the notifications it should cause: pure decisions, no I/O.

The caller (intake) gathers the facts (recipients, the order, how far a shipment has got,
how many messages an order's customer already had today) and stores what comes out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tidings.engine import policy
from tidings.engine.recipients import Recipient
from tidings.engine.rules import Policy, Rule, RuleSet
from tidings.events.envelope import CanonicalEvent

QUEUED = "queued"
SCHEDULED = "scheduled"
HELD = "held"
SUPPRESSED = "suppressed"
WAITING = frozenset({QUEUED, SCHEDULED, HELD})
MERGED = "merged"
MERGING_CHANNELS = frozenset({"sms", "push"})
# Between routing and timing only: a later channel of an escalation (reason: the first).
ESCALATION = "escalation"
Gate = tuple[str, str | None]
BUDGET_REASON = "the per-order contact budget for today is used up"


@dataclass(frozen=True, slots=True)
class Facts:
    """What planning needs to know beyond the event itself."""

    now: datetime
    order: Mapping[str, Any] | None = None
    # How far this event's shipment had got before it: (rank, status), or None.
    shipment_reached: tuple[int | None, str] | None = None
    # Non-critical messages each recipient already got about the order the message is
    # about, over 24 hours; a recipient missing here has no budget to respect.
    sent_today: Mapping[str, int] = field(default_factory=dict)
    # Per recipient: render context beyond the event (a backordered product, ...).
    extra: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlannedNotification:
    rule: Rule
    channel: str
    recipient: Recipient | None
    address: str | None
    status: str  # queued | scheduled | held | suppressed
    reason: str | None
    dedupe_key: str
    run_at: datetime
    group_key: str | None = None
    digest: bool = False
    extra: Mapping[str, Any] | None = None
    # Escalation: the dedupe key of the first message; this one goes only if it is unread.
    parent_key: str | None = None
    # Deferred SMS and push about one order, due at one moment, share it and go as one.
    merge_key: str | None = None


def key(*parts: object) -> str:
    """A fixed-length key no two different part lists share (JSON keeps the boundaries)."""
    text = json.dumps([str(part) for part in parts], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def shipment_key(data: Mapping[str, Any]) -> str:
    """One parcel, whichever source reports it: its tracking number, else the shipment id."""
    return str(data.get("tracking_number") or data.get("shipment_id"))


def business_identity(event: CanonicalEvent) -> tuple[object, ...]:
    """What makes two events the same news, across sources: a parcel reaching a status
    told by Shopify and by AfterShip is one message."""
    data = event.data
    if event.type == "shipment.status_changed":
        return ("shipment", shipment_key(data), data.get("status"))
    if event.type == "return.status_changed":
        return ("return", data.get("return_id"), data.get("status"))
    if event.type.startswith("refund."):
        return ("refund", data.get("refund_id"), event.type)
    return ("event", event.source, event.id)


def condition_context(
    event: CanonicalEvent, recipient: Recipient | None, order: Mapping[str, Any] | None
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
        "order": dict(order or {}),
    }


def plan(
    event: CanonicalEvent,
    recipients: Sequence[Recipient | None],
    rules: RuleSet,
    facts: Facts,
) -> list[PlannedNotification]:
    """Every matching rule yields, per recipient and channel, one notification: queued,
    scheduled (quiet hours, a sending window), held (a hold, a digest, an escalation), or
    suppressed with the reason. ``recipients`` of ``[None]`` means nobody could be found.
    A rule ``to`` stakeholders speaks to them instead of the customer."""
    matching = rules.for_type(event.type)
    if not matching:
        return []
    shipment_verdict = None
    if event.type == "shipment.status_changed":
        reached_rank, reached_status = facts.shipment_reached or (None, None)
        shipment_verdict = policy.shipment_verdict(
            reached_rank=reached_rank,
            reached_status=reached_status,
            status=str(event.data.get("status")),
        )
    planned: list[PlannedNotification] = []
    for recipient in recipients:
        context = condition_context(event, recipient, facts.order)
        budget_left = _budget_left(rules, facts, recipient)
        for rule in matching:
            if rule.to or not rule.matches(context):
                continue
            gates = {
                channel: _gate(rule, channel, recipient, shipment_verdict)
                for channel in rule.channels
            }
            gates = _route(rule, gates)
            # One message counts once against the budget, whatever the number of channels,
            # and only if it would really go out.
            if not rule.critical and budget_left is not None:
                if any(status == QUEUED for status, _ in gates.values()):
                    if budget_left <= 0:
                        gates = {
                            channel: (SUPPRESSED, BUDGET_REASON) if gate[0] == QUEUED else gate
                            for channel, gate in gates.items()
                        }
                    budget_left -= 1
            planned += _notifications(event, rule, recipient, gates, rules.policy, facts)
    for rule in matching:
        for name in rule.to:
            stakeholder = rules.stakeholders[name]
            if not rule.matches(condition_context(event, stakeholder, facts.order)):
                continue
            gates = {
                channel: _gate(rule, channel, stakeholder, shipment_verdict)
                for channel in rule.channels
            }
            planned += _notifications(
                event, rule, stakeholder, _route(rule, gates), rules.policy, facts
            )
    return planned


def _route(rule: Rule, gates: dict[str, tuple[str, str | None]]) -> dict[str, Gate]:
    """Apply the rule's routing to the channels that could carry the message."""
    if rule.routing == "all":
        return dict(gates)
    usable = [channel for channel in rule.channels if gates[channel][0] == QUEUED]
    if not usable:
        return dict(gates)
    first = usable[0]
    routed: dict[str, Gate] = {}
    for channel, gate in gates.items():
        if channel == first or gate[0] != QUEUED:
            routed[channel] = gate
        elif rule.routing == "first_available":
            routed[channel] = (SUPPRESSED, f"sent by {first}, the first channel that reaches them")
        else:
            routed[channel] = (ESCALATION, first)
    return routed


def _notifications(
    event: CanonicalEvent,
    rule: Rule,
    recipient: Recipient | None,
    gates: Mapping[str, Gate],
    store: Policy,
    facts: Facts,
) -> list[PlannedNotification]:
    identity = business_identity(event)
    who = recipient.customer_id if recipient else None
    planned = []
    step = 0  # escalations follow the channel order: the n-th waits n deadlines
    for channel, (status, reason) in gates.items():
        timing = policy.Timing(facts.now)
        digest = False
        parent_key = None
        if status in (QUEUED, ESCALATION) and recipient is not None:
            staff = recipient.is_stakeholder
            digest = not staff and rule.digest and rule.category in recipient.digest_categories
            timing = _timing(rule, channel, recipient, store, facts.now, digest, staff=staff)
            if status == ESCALATION:
                first, step = str(reason), step + 1
                # The rules parser pairs routing: escalate with escalate_after.
                wait = facts.now + (rule.escalate_after or timedelta(0)) * step
                local = wait.astimezone(policy.zone(recipient.time_zone))
                timing = policy.Timing(
                    max(timing.at, wait),
                    f"sent if the {first} message is not read by {local:%Y-%m-%d %H:%M}",
                )
                parent_key = key(rule.id, first, who, *identity)
                status = HELD
                reason = timing.reason
            elif timing.at > facts.now:
                status = HELD if (digest or rule.hold) else SCHEDULED
                reason = timing.reason
        merge_key = None
        order_id = event.order_id or (facts.order or {}).get("id")
        if status == SCHEDULED and channel in MERGING_CHANNELS and order_id and who:
            # Deferred to the same moment (the end of the night), about the same order:
            # one text with every update, not a burst of them at 08:00.
            merge_key = key("merge", who, order_id, channel, timing.at.isoformat())[:64]
        planned.append(
            PlannedNotification(
                rule=rule,
                channel=channel,
                recipient=recipient,
                address=recipient.address_for(channel) if recipient else None,
                status=status,
                reason=reason,
                dedupe_key=key(rule.id, channel, who, *identity),
                run_at=timing.at,
                group_key=(
                    key(rule.group, shipment_key(event.data), who, channel)[:64]
                    if rule.group
                    else None
                ),
                digest=digest,
                extra=facts.extra.get(who or ""),
                parent_key=parent_key,
                merge_key=merge_key,
            )
        )
    return planned


def _budget_left(rules: RuleSet, facts: Facts, recipient: Recipient | None) -> int | None:
    """Messages this recipient may still get about the order today; None: no budget applies
    (no order to count against, or no budget configured)."""
    limit = rules.policy.contact_budget_per_order_per_day
    if limit is None or recipient is None or recipient.customer_id not in facts.sent_today:
        return None
    return limit - facts.sent_today[recipient.customer_id]


def _gate(
    rule: Rule,
    channel: str,
    recipient: Recipient | None,
    shipment: policy.ShipmentVerdict | None,
) -> tuple[str, str | None]:
    """Whether this message may exist at all, and if not, why (first reason wins)."""
    if recipient is None:
        return SUPPRESSED, "no recipient: the event names no known customer"
    if shipment is not None and not shipment.notify:
        return SUPPRESSED, shipment.reason
    if not rule.critical and rule.category in recipient.opted_out:
        return SUPPRESSED, f"the customer opted out of the '{rule.category}' category"
    if not rule.critical and channel in recipient.muted_channels:
        return SUPPRESSED, f"the customer turned {channel} off"
    if recipient.address_for(channel) is None:
        return SUPPRESSED, f"the customer has no {channel} address"
    return QUEUED, None


def _timing(
    rule: Rule,
    channel: str,
    recipient: Recipient,
    store: Policy,
    now: datetime,
    digest: bool,
    *,
    staff: bool = False,
) -> policy.Timing:
    if digest:
        hour = recipient.digest_hour if recipient.digest_hour is not None else store.digest_hour
        at = policy.next_digest_at(now, recipient.time_zone, hour)
        return policy.Timing(at, f"in the daily digest at {hour:02d}:00")
    # The store's own people and systems keep the rule's window, but no quiet hours.
    quiet = recipient.quiet_hours if recipient.has_own_quiet_hours else store.quiet_hours
    return policy.send_time(
        now=now,
        channel=channel,
        critical=rule.critical,
        time_zone=recipient.time_zone,
        quiet_hours=None if staff else quiet,
        defer_email=store.defer_email_in_quiet_hours and not staff,
        window=rule.window,
        hold=rule.hold,
    )
