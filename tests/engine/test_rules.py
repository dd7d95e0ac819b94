"""Loading rules: the built-in file, and the errors a bad rules file gets."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tidings.engine.rules import BUILTIN_RULES, Lane, RulesError, load_rules, parse_rules


def rules_doc(**rule: Any) -> dict[str, Any]:
    base = {
        "id": "order-confirmation",
        "event": "order.placed",
        "kind": "order_confirmation",
        "category": "order",
        "channels": ["email"],
    }
    return {
        "categories": {
            "order": {"description": "Order confirmations."},
            "refund": {"critical": True},
            "payment": {"critical": True},
            "marketing": {"critical": False},
        },
        "rules": [{**base, **rule}],
    }


def rules_error(raw: Any) -> str:
    with pytest.raises(RulesError) as info:
        parse_rules(raw, origin="shop-rules.yaml")
    assert info.value.code == "invalid_rules"
    return str(info.value)


def test_the_builtin_rules_load() -> None:
    rules = load_rules()
    assert rules.categories == {
        "refund",
        "payment",
        "billing",
        "security",
        "order",
        "shipping",
        "inventory",
        "returns",
        "marketing",
    }
    assert rules.critical_categories == {"refund", "payment", "security"}
    (refund,) = rules.for_type("refund.authorized")
    assert refund.id == "refund-authorized"
    assert refund.kind == "refund_authorized"
    assert refund.category == "refund"
    assert refund.critical is True
    assert refund.lane is Lane.critical
    assert refund.channels == ("email", "in_app")
    assert refund.matches({"data": {"amount": 1250}})
    assert not refund.matches({"data": {"amount": 0}})


def test_load_rules_without_a_path_is_the_builtin_file() -> None:
    assert load_rules() == load_rules(BUILTIN_RULES)


def test_rules_for_a_type_without_rules_are_empty() -> None:
    assert load_rules().for_type("message.opened") == ()


def test_defaults_of_a_minimal_rule() -> None:
    (rule,) = parse_rules(rules_doc()).rules
    assert rule.condition is None
    assert rule.lane is Lane.transactional
    assert rule.critical is False
    assert rule.matches({})


def test_lanes_order_critical_first() -> None:
    assert Lane.critical < Lane.transactional < Lane.bulk
    (rule,) = parse_rules(rules_doc(priority="bulk")).rules
    assert rule.lane is Lane.bulk


def test_criticality_comes_from_the_category() -> None:
    rules = parse_rules(rules_doc(category="payment", event="payment.failed"))
    assert rules.rules[0].critical is True
    assert rules.critical_categories == {"refund", "payment"}
    assert rules.categories == {"order", "refund", "payment", "marketing"}


def test_repeated_channels_are_listed_once_in_order() -> None:
    (rule,) = parse_rules(rules_doc(channels=["in_app", "email", "in_app"])).rules
    assert rule.channels == ("in_app", "email")


def test_an_unknown_event_type_is_refused() -> None:
    message = rules_error(rules_doc(event="order.teleported"))
    assert "shop-rules.yaml" in message
    assert "rules.0.event" in message
    assert "order.teleported" in message


def test_an_undeclared_category_is_refused() -> None:
    message = rules_error(rules_doc(category="loyalty"))
    assert "order-confirmation" in message
    assert "loyalty" in message


def test_a_duplicate_rule_id_is_refused() -> None:
    doc = rules_doc()
    doc["rules"].append(copy.deepcopy(doc["rules"][0]) | {"channels": ["in_app"]})
    message = rules_error(doc)
    assert "order-confirmation" in message
    assert "twice" in message


def test_a_bad_condition_names_the_rule() -> None:
    message = rules_error(rules_doc(when="data.total >"))
    assert "shop-rules.yaml" in message
    assert "'order-confirmation'" in message
    assert "position" in message


def test_a_condition_reaching_for_private_names_is_refused() -> None:
    message = rules_error(rules_doc(when="data.__class__ == 1"))
    assert "'order-confirmation'" in message


def test_an_unknown_rule_key_is_refused() -> None:
    message = rules_error(rules_doc(template="x"))
    assert "rules.0.template" in message


def test_an_unknown_top_level_key_is_refused() -> None:
    doc = rules_doc()
    doc["defaults"] = {"channels": ["email"]}
    assert "defaults" in rules_error(doc)


def test_an_unknown_category_key_is_refused() -> None:
    doc = rules_doc()
    doc["categories"]["order"]["mutable"] = False
    assert "categories.order.mutable" in rules_error(doc)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"channels": ["fax"]}, "rules.0.channels.0"),
        ({"channels": []}, "rules.0.channels"),
        ({"priority": "urgent"}, "rules.0.priority"),
        ({"id": "Order Confirmation"}, "rules.0.id"),
        ({"kind": "order-confirmation"}, "rules.0.kind"),
    ],
)
def test_invalid_rule_fields_are_refused(change: dict[str, Any], where: str) -> None:
    assert where in rules_error(rules_doc(**change))


def test_a_missing_required_field_is_refused() -> None:
    doc = rules_doc()
    del doc["rules"][0]["kind"]
    assert "rules.0.kind" in rules_error(doc)


@pytest.mark.parametrize("raw", [None, [], "rules"])
def test_a_document_that_is_not_a_mapping_is_refused(raw: Any) -> None:
    rules_error(raw)


def test_a_rules_file_is_loaded_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        """
categories:
  shipping: {description: Tracking}
  payment: {critical: true}
rules:
  - id: out-for-delivery
    event: shipment.status_changed
    when: data.status == "out_for_delivery"
    kind: shipment_out_for_delivery
    category: shipping
    priority: bulk
    channels: [in_app]
  - id: payment-failed
    event: payment.failed
    kind: payment_failed
    category: payment
    priority: critical
    channels: [email, in_app]
""",
        encoding="utf-8",
    )
    rules = load_rules(path)
    assert [rule.id for rule in rules.rules] == ["out-for-delivery", "payment-failed"]
    assert rules.critical_categories == {"payment"}
    (shipping,) = rules.for_type("shipment.status_changed")
    assert shipping.lane is Lane.bulk
    assert shipping.critical is False
    assert shipping.matches({"data": {"status": "out_for_delivery"}})
    assert not shipping.matches({"data": {"status": "delivered"}})
    (payment,) = rules.for_type("payment.failed")
    assert payment.critical is True
    assert payment.channels == ("email", "in_app")


def test_errors_in_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        "categories: {order: {}}\n"
        "rules:\n"
        "  - {id: a, event: order.placed, kind: k, category: nope, channels: [email]}\n",
        encoding="utf-8",
    )
    with pytest.raises(RulesError, match=r"broken\.yaml"):
        load_rules(path)


def test_a_missing_file_is_a_rules_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "absent.yaml")


def test_invalid_yaml_is_a_rules_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("categories: [unclosed\n", encoding="utf-8")
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(path)


def test_a_condition_on_a_name_planning_never_supplies_is_refused() -> None:
    message = rules_error(rules_doc(when="dat.total > 100 and customer.locale == 'fr'"))
    assert "'order-confirmation'" in message
    assert "dat" in message
    assert "customer" not in message.split("uses")[1].split(";")[0]


def test_a_condition_on_every_supplied_name_loads() -> None:
    when = "data.total > 1 and event.type == 'order.placed' and customer.locale and order.id"
    [rule] = parse_rules(rules_doc(when=when)).rules
    assert rule.condition is not None
