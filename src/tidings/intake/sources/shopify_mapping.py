"""Shopify orders and refunds to canonical ``data``, and the field helpers all topics use.

Payload shapes follow Shopify's documented examples for each topic. Things worth knowing:

- Money is a decimal string ("12.50"); it becomes minor units with the currency's own
  exponent (JPY has none), exactly, through Decimal. Amounts are taken in the presentment
  currency (what the customer paid in, and what refund transactions are expressed in)
  when the payload carries ``*_set.presentment_money``; otherwise in the shop currency.

Shipments, stock levels and returns are in ``shopify_logistics``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from babel.numbers import get_currency_precision, list_currencies

from tidings.intake.sources.base import MapOptions, MappingError

_CURRENCIES = frozenset(list_currencies())
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_PHONE_NOISE = re.compile(r"[\s().\-/]")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")

# Refund gateways whose payment method is not in doubt.
_GATEWAY_METHOD = {
    "shopify_payments": "card",
    "stripe": "card",
    "paypal": "paypal",
    "gift_card": "gift_card",
    "cash": "cash",
}


# -- field access -------------------------------------------------------------------


def invalid(field: str, detail: str) -> MappingError:
    return MappingError("invalid_payload", f"{field}: {detail}", field=field)


def obj(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise invalid(field, "must be a JSON object")
    return value


def opt_obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def ident(value: Any, field: str) -> str:
    """A Shopify id (a JSON integer, sometimes a string) as a string."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise invalid(field, "is required and must be an id")


def opt_ident(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.strip()):
        return str(value).strip()
    return None


def text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def timestamp(value: Any, field: str) -> str:
    """An RFC 3339 timestamp with offset, as Shopify sends it, checked and normalized."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.isoformat()
    raise invalid(field, "must be an RFC 3339 timestamp with an offset")


def opt_timestamp(value: Any, field: str) -> str | None:
    return None if value is None else timestamp(value, field)


def positive_int(value: Any, field: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise invalid(field, "must be a positive integer")


# -- money --------------------------------------------------------------------------


def currency_code(value: Any, field: str) -> str:
    code = value.strip().upper() if isinstance(value, str) else ""
    if code not in _CURRENCIES:
        raise MappingError(
            "invalid_currency", f"{field}: {value!r} is not an ISO 4217 currency", field=field
        )
    return code


def minor_units(value: Any, currency: str, field: str) -> int:
    """A decimal amount ("12.50", or an exact JSON number) in the currency's minor units."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise invalid(field, 'must be a decimal amount such as "12.50"')
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise invalid(field, f"{value!r} is not a decimal amount") from None
    if not amount.is_finite() or amount < 0:
        raise invalid(field, f"{value!r} is not a non-negative amount")
    scaled = amount.scaleb(get_currency_precision(currency))
    if scaled != scaled.to_integral_value():
        raise MappingError(
            "invalid_amount",
            f"{field}: {value} has more decimals than {currency} allows",
            field=field,
        )
    return int(scaled)


def presentment(owner: Mapping[str, Any], set_key: str) -> tuple[Any, str] | None:
    """(amount, currency) from ``owner[set_key].presentment_money``, if present."""
    money = opt_obj(opt_obj(owner.get(set_key)).get("presentment_money"))
    amount, code = money.get("amount"), money.get("currency_code") or money.get("currency")
    return (amount, code) if amount is not None and isinstance(code, str) else None


# -- customer -----------------------------------------------------------------------


def phone_number(value: Any, options: MapOptions, field: str) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    candidate = _PHONE_NOISE.sub("", value.strip())
    if candidate.startswith("00"):
        candidate = "+" + candidate[2:]
    if _E164.match(candidate):
        return candidate
    if options.strict:
        raise MappingError(
            "invalid_phone", f"{field}: {value!r} is not an E.164 phone number", field=field
        )
    return None


def customer(order: Mapping[str, Any], order_id: str, options: MapOptions) -> dict[str, Any]:
    person = opt_obj(order.get("customer"))
    email = (
        text(order.get("email")) or text(order.get("contact_email")) or text(person.get("email"))
    )
    locale = text(order.get("customer_locale"))
    if options.strict:
        if email is None:
            raise MappingError(
                "missing_field", "email: the order has no customer email", field="email"
            )
        if locale is None:
            raise MappingError(
                "missing_field",
                "customer_locale: the order does not say the customer's language",
                field="customer_locale",
            )
    if email is not None and not _EMAIL.match(email):
        if options.strict:
            raise MappingError("invalid_email", f"email: {email!r} is not an email", field="email")
        email = None
    if locale is not None and not _LOCALE.match(locale):
        if options.strict:
            raise MappingError(
                "invalid_locale",
                f"customer_locale: {locale!r} is not a locale",
                field="customer_locale",
            )
        locale = None
    customer_id = opt_ident(person.get("id"))
    if customer_id is None:
        if options.strict:
            raise MappingError(
                "missing_field", "customer.id: the order has no customer", field="customer.id"
            )
        # A guest checkout: the email is the best identity there is.
        customer_id = f"email:{email.lower()}" if email else f"order:{order_id}"
    name = " ".join(p for p in (text(person.get("first_name")), text(person.get("last_name"))) if p)
    phone_field = "phone" if text(order.get("phone")) else "customer.phone"
    return {
        "id": customer_id,
        "name": name or None,
        "email": email,
        "phone": phone_number(order.get("phone") or person.get("phone"), options, phone_field),
        "locale": locale,
        "time_zone": None,  # Shopify does not say
    }


# -- orders -------------------------------------------------------------------------


def order_placed(order: Mapping[str, Any], options: MapOptions) -> dict[str, Any]:
    order_id = ident(order.get("id"), "id")
    total_set = presentment(order, "total_price_set")
    if total_set is not None:
        currency = currency_code(total_set[1], "total_price_set.presentment_money.currency_code")
        total = minor_units(total_set[0], currency, "total_price_set.presentment_money.amount")
    else:
        currency = currency_code(order.get("currency"), "currency")
        total = minor_units(order.get("total_price"), currency, "total_price")
    items = order.get("line_items")
    if not isinstance(items, list):
        raise invalid("line_items", "must be a list")
    lines = [_line(obj(item, f"line_items[{n}]"), n, currency) for n, item in enumerate(items)]
    return {
        "order_id": order_id,
        "order_number": text(order.get("name")),
        "currency": currency,
        "total": total,
        "customer": customer(order, order_id, options),
        "lines": lines,
    }


def _line(item: Mapping[str, Any], n: int, currency: str) -> dict[str, Any]:
    where = f"line_items[{n}]"
    sku = text(item.get("sku"))
    if sku is None:
        variant = opt_ident(item.get("variant_id"))
        sku = f"variant:{variant}" if variant else f"line_item:{ident(item.get('id'), where)}"
    price_set = presentment(item, "price_set")
    if price_set is not None and price_set[1].upper() == currency:
        unit_price = minor_units(price_set[0], currency, f"{where}.price_set.presentment_money")
    elif item.get("price") is not None:
        unit_price = minor_units(item.get("price"), currency, f"{where}.price")
    else:
        unit_price = None
    return {
        "sku": sku,
        "name": text(item.get("name")) or text(item.get("title")),
        "quantity": positive_int(item.get("quantity"), f"{where}.quantity"),
        "unit_price": unit_price,
    }


def order_canceled(order: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "order_id": ident(order.get("id"), "id"),
        "order_number": text(order.get("name")),
        "reason": text(order.get("cancel_reason")),
    }


# -- refunds ------------------------------------------------------------------------


def refund_authorized(refund: Mapping[str, Any]) -> dict[str, Any]:
    refund_id = ident(refund.get("id"), "id")
    transactions = refund.get("transactions") or []
    if not isinstance(transactions, list):
        raise invalid("transactions", "must be a list")
    counted = [
        (n, obj(t, f"transactions[{n}]"))
        for n, t in enumerate(transactions)
        if isinstance(t, Mapping)
        and t.get("kind") == "refund"
        and t.get("status") in ("success", "pending")
    ]
    currency = _refund_currency(refund, [t for _, t in counted])
    if counted:
        amount = sum(
            minor_units(t.get("amount"), currency, f"transactions[{n}].amount") for n, t in counted
        )
    else:
        amount = _refund_lines_total(refund, currency)
    gateways = {text(t.get("gateway")) for _, t in counted}
    method = _GATEWAY_METHOD.get(gateways.pop() or "") if len(gateways) == 1 else None
    first = counted[0][1] if counted else {}
    at = opt_timestamp(refund.get("processed_at"), "processed_at") or opt_timestamp(
        refund.get("created_at"), "created_at"
    )
    return {
        "order_id": ident(refund.get("order_id"), "order_id"),
        "refund_id": refund_id,
        "payment_id": opt_ident(first.get("parent_id")) or text(first.get("payment_id")),
        "amount": amount,
        "currency": currency,
        "reason_code": None,
        "reason": text(refund.get("note")),
        "method": method,
        "authorized_at": at,
    }


def _refund_currency(refund: Mapping[str, Any], transactions: list[Mapping[str, Any]]) -> str:
    for n, transaction in enumerate(transactions):
        if transaction.get("currency"):
            return currency_code(transaction.get("currency"), f"transactions[{n}].currency")
    for item in refund.get("refund_line_items") or []:
        found = presentment(opt_obj(item), "subtotal_set")
        if found is not None:
            return currency_code(found[1], "refund_line_items[0].subtotal_set")
    found = presentment(refund, "total_duties_set")
    if found is not None:
        return currency_code(found[1], "total_duties_set.presentment_money.currency_code")
    raise invalid("transactions[0].currency", "the refund does not say its currency")


def _refund_lines_total(refund: Mapping[str, Any], currency: str) -> int:
    total = 0
    for n, raw in enumerate(refund.get("refund_line_items") or []):
        item = obj(raw, f"refund_line_items[{n}]")
        for key in ("subtotal", "total_tax"):
            money = presentment(item, f"{key}_set")
            value = money[0] if money is not None else item.get(key)
            if value is not None:
                total += minor_units(value, currency, f"refund_line_items[{n}].{key}")
    return total
