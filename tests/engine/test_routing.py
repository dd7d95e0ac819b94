"""Routing policies per rule (all, first_available, escalate) and rules for stakeholders."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tidings.engine.planning import HELD, QUEUED, SUPPRESSED, Facts, plan
from tidings.engine.recipients import Recipient
from tidings.engine.rules import RulesError, RuleSet, parse_rules
from tidings.events.envelope import CanonicalEvent

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
BASE: dict[str, Any] = {
    "categories": {"shipping": {}, "refund": {"critical": True}},
    "policy": {"quiet_hours": "21:00-08:00"},
    "stakeholders": {
        "finance": {"email": "finance@shop.example", "webhook": "https://hooks.slack.com/T/B/x"}
    },
    "rules": [],
}


def rules(**rule: Any) -> RuleSet:
    raw = copy.deepcopy(BASE)
    raw["rules"] = [
        {
            "id": "delivered",
            "event": "shipment.status_changed",
            "kind": "shipment_delivered",
            "category": "shipping",
            **rule,
        }
    ]
    return parse_rules(raw)


def delivered() -> CanonicalEvent:
    return CanonicalEvent(
        source="https://carrier.example",
        id="scan-1",
        type="shipment.status_changed",
        subject="order/1042",
        time=NOW,
        data={"order_id": "1042", "tracking_number": "6A1", "status": "delivered"},
    )


def camille(**changes: Any) -> Recipient:
    fields: dict[str, Any] = {
        "customer_id": "cus_1",
        "name": "Camille",
        "email": "camille@example.fr",
        "phone": "+33612345678",
        "locale": "fr",
        "time_zone": "Europe/Paris",
        "opted_out": frozenset(),
        "push_devices": ("dev_1",),
    }
    return Recipient(**(fields | changes))


def by_channel(ruleset: RuleSet, recipient: Recipient) -> dict[str, Any]:
    planned = plan(delivered(), [recipient], ruleset, Facts(now=NOW))
    return {p.channel: p for p in planned}


def test_all_sends_on_every_channel_that_reaches_the_customer() -> None:
    out = by_channel(rules(channels=["push", "email"]), camille())
    assert {c: p.status for c, p in out.items()} == {"push": QUEUED, "email": QUEUED}


def test_first_available_takes_push_when_there_is_a_device() -> None:
    out = by_channel(rules(channels=["push", "email"], routing="first_available"), camille())
    assert out["push"].status == QUEUED
    assert out["email"].status == SUPPRESSED
    assert "sent by push" in (out["email"].reason or "")


def test_first_available_falls_back_to_email_without_a_device() -> None:
    ruleset = rules(channels=["push", "email"], routing="first_available")
    out = by_channel(ruleset, camille(push_devices=()))
    assert out["push"].status == SUPPRESSED
    assert out["push"].reason == "the customer has no push address"
    assert out["email"].status == QUEUED


def test_escalate_holds_the_next_channel_until_the_deadline_unless_read() -> None:
    ruleset = rules(channels=["in_app", "email", "sms"], routing="escalate", escalate_after="1h")
    out = by_channel(ruleset, camille())
    assert out["in_app"].status == QUEUED
    for step, channel in enumerate(("email", "sms"), start=1):
        assert out[channel].status == HELD
        assert out[channel].run_at >= NOW + timedelta(hours=step)
        assert out[channel].parent_key == out["in_app"].dedupe_key
        assert "not read by" in (out[channel].reason or "")


def test_escalation_respects_quiet_hours_of_the_later_channel() -> None:
    ruleset = rules(channels=["in_app", "sms"], routing="escalate", escalate_after="30m")
    late = datetime(2026, 11, 21, 21, 0, tzinfo=UTC)  # 22:00 in Paris: quiet hours
    planned = plan(delivered(), [camille()], ruleset, Facts(now=late))
    sms = next(p for p in planned if p.channel == "sms")
    paris = ZoneInfo("Europe/Paris")
    assert sms.run_at >= late + timedelta(minutes=30)
    assert 8 <= sms.run_at.astimezone(paris).hour < 21  # the next morning, not at 22:30
    assert sms.status == HELD


@pytest.mark.parametrize(
    "rule",
    [
        {"channels": ["email", "sms"], "routing": "escalate"},
        {"channels": ["email", "sms"], "escalate_after": "1h"},
        {"channels": ["email"], "routing": "first_available"},
        {"channels": ["email"], "to": ["accounting"]},
    ],
)
def test_routing_mistakes_are_refused_when_the_rules_load(rule: dict[str, Any]) -> None:
    with pytest.raises(RulesError):
        rules(**rule)


def test_a_rule_to_stakeholders_reaches_them_not_the_customer() -> None:
    ruleset = rules(channels=["webhook", "email", "in_app"], to=["finance"])
    planned = plan(delivered(), [camille()], ruleset, Facts(now=NOW))
    assert {p.recipient.customer_id for p in planned if p.recipient} == {"stakeholder:finance"}
    out = {p.channel: p for p in planned}
    assert out["webhook"].address == "https://hooks.slack.com/T/B/x"
    assert out["email"].address == "finance@shop.example"
    assert out["in_app"].status == SUPPRESSED  # staff have no customer inbox
