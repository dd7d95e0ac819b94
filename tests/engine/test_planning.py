"""Planning: which notifications an event causes, and which of them are suppressed and why."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from tidings.engine.planning import QUEUED, SUPPRESSED, Facts, PlannedNotification, plan
from tidings.engine.recipients import Recipient
from tidings.engine.rules import RuleSet, parse_rules
from tidings.events.envelope import CanonicalEvent

SOURCE = "https://shop.example.com/oms"

RULES: dict[str, Any] = {
    "categories": {
        "refund": {"critical": True},
        "order": {},
        "marketing": {"critical": False},
    },
    "rules": [
        {
            "id": "refund-authorized",
            "event": "refund.authorized",
            "when": "data.amount > 0",
            "kind": "refund_authorized",
            "category": "refund",
            "priority": "critical",
            "channels": ["email", "in_app"],
        },
        {
            "id": "order-confirmation",
            "event": "order.placed",
            "kind": "order_confirmation",
            "category": "order",
            "channels": ["email", "in_app"],
        },
        {
            "id": "order-upsell",
            "event": "order.placed",
            "when": 'customer.locale == "fr"',
            "kind": "upsell",
            "category": "marketing",
            "priority": "bulk",
            "channels": ["email"],
        },
    ],
}


NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def run(
    e: CanonicalEvent,
    recipient: Recipient | None,
    rules: RuleSet,
    order: dict[str, Any] | None = None,
) -> list[PlannedNotification]:
    """One event for one (or no) recipient, at a fixed time."""
    return plan(e, [recipient], rules, Facts(now=NOW, order=order))


def ruleset() -> RuleSet:
    return parse_rules(RULES)


def event(
    event_type: str = "order.placed", *, id: str = "evt-1", source: str = SOURCE, **data: Any
) -> CanonicalEvent:
    return CanonicalEvent(
        source=source,
        id=id,
        type=event_type,
        subject="order/1001",
        time=None,
        data={"order_id": "1001", "amount": 1250, "currency": "EUR", **data},
    )


def camille(
    *, opted_out: frozenset[str] = frozenset(), email: str | None = "camille@example.fr"
) -> Recipient:
    return Recipient(
        customer_id="cus_camille",
        name="Camille Durand",
        email=email,
        phone=None,
        locale="fr",
        time_zone="Europe/Paris",
        opted_out=opted_out,
    )


def by_rule_and_channel(
    planned: list[PlannedNotification],
) -> dict[tuple[str, str], PlannedNotification]:
    result = {(p.rule.id, p.channel): p for p in planned}
    assert len(result) == len(planned), "one notification per rule and channel"
    return result


def test_every_matching_rule_is_planned_on_every_channel() -> None:
    planned = by_rule_and_channel(run(event(), camille(), ruleset()))
    assert set(planned) == {
        ("order-confirmation", "email"),
        ("order-confirmation", "in_app"),
        ("order-upsell", "email"),
    }
    assert all(p.status == QUEUED and p.reason is None for p in planned.values())
    assert planned["order-confirmation", "email"].address == "camille@example.fr"
    assert planned["order-confirmation", "in_app"].address == "cus_camille"


def test_an_event_type_without_rules_plans_nothing() -> None:
    assert run(event("message.opened"), camille(), ruleset()) == []


def test_a_false_condition_plans_nothing() -> None:
    assert run(event("refund.authorized", amount=0), camille(), ruleset()) == []


def test_conditions_see_the_customer() -> None:
    jordan = Recipient("cus_jordan", None, "j@example.com", None, "en-US", None, frozenset())
    planned = run(event(), jordan, ruleset())
    assert {p.rule.id for p in planned} == {"order-confirmation"}


def test_conditions_see_the_order() -> None:
    rules = parse_rules(
        {
            "categories": {"order": {}},
            "rules": [
                {
                    "id": "big-order",
                    "event": "order.placed",
                    "when": 'order.status == "open" and event.source == "' + SOURCE + '"',
                    "kind": "big_order",
                    "category": "order",
                    "channels": ["in_app"],
                }
            ],
        }
    )
    assert len(run(event(), camille(), rules, order={"status": "open"})) == 1
    assert run(event(), camille(), rules, order={"status": "closed"}) == []
    assert run(event(), camille(), rules) == []


def test_an_opted_out_category_is_suppressed_and_says_which() -> None:
    planned = by_rule_and_channel(run(event(), camille(opted_out=frozenset({"order"})), ruleset()))
    for channel in ("email", "in_app"):
        notification = planned["order-confirmation", channel]
        assert notification.status == SUPPRESSED
        assert notification.reason is not None
        assert "opted out" in notification.reason
        assert "'order'" in notification.reason
    # Another category is unaffected.
    assert planned["order-upsell", "email"].status == QUEUED


def test_an_opted_out_critical_category_is_still_sent() -> None:
    """Invariant: a critical notification is never silenced by an opt-out."""
    recipient = camille(opted_out=frozenset({"refund", "order", "marketing"}))
    planned = run(event("refund.authorized"), recipient, ruleset())
    assert [(p.channel, p.status, p.reason) for p in planned] == [
        ("email", QUEUED, None),
        ("in_app", QUEUED, None),
    ]
    assert planned[0].address == "camille@example.fr"


def test_no_recipient_suppresses_every_channel() -> None:
    planned = run(event("refund.authorized"), None, ruleset())
    assert [p.channel for p in planned] == ["email", "in_app"]
    for notification in planned:
        assert notification.status == SUPPRESSED
        assert notification.recipient is None
        assert notification.address is None
        assert notification.reason is not None
        assert "no recipient" in notification.reason


def test_no_email_address_suppresses_only_email() -> None:
    planned = by_rule_and_channel(run(event("refund.authorized"), camille(email=None), ruleset()))
    email = planned["refund-authorized", "email"]
    assert email.status == SUPPRESSED
    assert email.reason is not None
    assert "email" in email.reason
    in_app = planned["refund-authorized", "in_app"]
    assert (in_app.status, in_app.address) == (QUEUED, "cus_camille")


def test_dedupe_keys_differ_per_channel_and_rule() -> None:
    planned = run(event(), camille(), ruleset())
    keys = [p.dedupe_key for p in planned]
    assert len(set(keys)) == len(keys) == 3


def test_dedupe_keys_are_stable_across_calls() -> None:
    first = [p.dedupe_key for p in run(event(), camille(), ruleset())]
    again = [p.dedupe_key for p in run(event(), camille(), parse_rules(RULES))]
    assert first == again


def test_dedupe_keys_do_not_depend_on_the_recipient_or_the_outcome() -> None:
    """A redelivered event is the same notification, whatever changed in the profile."""
    before = {(p.rule.id, p.channel): p.dedupe_key for p in run(event(), camille(), ruleset())}
    after = {
        (p.rule.id, p.channel): p.dedupe_key
        for p in run(event(), camille(opted_out=frozenset({"order"}), email=None), ruleset())
    }
    assert before == after


def test_dedupe_keys_differ_between_events_and_sources() -> None:
    keys = {
        p.dedupe_key
        for e in (
            event(id="evt-1"),
            event(id="evt-2"),
            event(id="evt-1", source="https://other.example.com"),
        )
        for p in run(e, camille(), ruleset())
        if p.channel == "email" and p.rule.id == "order-confirmation"
    }
    assert len(keys) == 3


_piece = st.text(st.sampled_from("ab|/:-"), min_size=1, max_size=6)


@given(first=st.tuples(_piece, _piece), second=st.tuples(_piece, _piece))
@example(first=("https://a.example|x", "1"), second=("https://a.example", "x|1"))
def test_distinct_events_never_share_a_dedupe_key(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    """Events are identified by (source, id): two distinct events must not collide."""
    if first == second:
        return
    rules = ruleset()
    keys = [
        {p.dedupe_key for p in run(event(source=source, id=id), camille(), rules)}
        for source, id in (first, second)
    ]
    assert keys[0].isdisjoint(keys[1]), (first, second, keys)


_categories = st.sampled_from(["order", "shipping", "marketing", "returns", "refund", "payment"])


@given(
    category=_categories,
    critical=st.booleans(),
    opted_out=st.frozensets(_categories),
    channels=st.lists(st.sampled_from(["email", "in_app"]), min_size=1, unique=True),
    has_email=st.booleans(),
)
def test_only_opted_out_non_critical_categories_are_suppressed_for_opt_out(
    category: str,
    critical: bool,
    opted_out: frozenset[str],
    channels: list[str],
    has_email: bool,
) -> None:
    rules = parse_rules(
        {
            "categories": {category: {"critical": critical}},
            "rules": [
                {
                    "id": "the-rule",
                    "event": "order.placed",
                    "kind": "any",
                    "category": category,
                    "channels": channels,
                }
            ],
        }
    )
    email = "camille@example.fr" if has_email else None
    planned = run(event(), camille(opted_out=opted_out, email=email), rules)
    assert [p.channel for p in planned] == channels
    silenced = category in opted_out and not critical
    for notification in planned:
        for_opt_out = notification.reason is not None and "opted out" in notification.reason
        assert for_opt_out == silenced
        if silenced:
            assert notification.status == SUPPRESSED
        elif notification.channel == "in_app" or has_email:
            assert notification.status == QUEUED
        else:
            assert notification.status == SUPPRESSED
