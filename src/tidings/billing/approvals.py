"""How many people must approve a refund before it goes to the gateway.

The policy is set per currency, in minor units of that currency, because one threshold
cannot serve EUR and JPY alike:

- at or under ``auto_approve_up_to``: no approval, the refund is approved on request;
- above it: one approval;
- above ``second_approver_above``: two approvals, from two different people.

Settings hold it as JSON::

    {"EUR": {"auto_approve_up_to": 5000, "second_approver_above": 50000},
     "JPY": {"auto_approve_up_to": 5000, "second_approver_above": 50000},
     "default": {"auto_approve_up_to": 0, "second_approver_above": 100000}}

A currency with no entry of its own uses ``default``. Without a ``default`` it needs one
approval, whatever the amount: this fails safe. Thresholds written for other currencies
say nothing about an amount in this one, so nothing is paid out without a person looking
at it; two approvals for every small refund would instead stall the queue over a
missing line of settings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# ISO 4217 alphabetic codes are three upper-case letters.
_CURRENCY = re.compile(r"[A-Z]{3}")
_DEFAULT_KEY = "default"
_FIELDS = ("auto_approve_up_to", "second_approver_above")
# No currency entry and no default: one person looks at every refund (see module docstring).
UNCONFIGURED_APPROVALS = 1


class ApprovalPolicyError(ValueError):
    """The approval settings cannot be used; the message says which entry to fix and how."""

    code = "invalid_approval_policy"


@dataclass(frozen=True, slots=True)
class ApprovalThresholds:
    """The two amounts, in minor units, where a refund in one currency needs more approvals."""

    auto_approve_up_to: int
    second_approver_above: int

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            # bool is an int in Python; `true` in the settings is a mistake, not 1.
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ApprovalPolicyError(
                    f"{name} must be a whole, non-negative number of minor units "
                    f"(e.g. 5000 for 50.00), got {value!r}"
                )
        if self.second_approver_above < self.auto_approve_up_to:
            raise ApprovalPolicyError(
                f"second_approver_above ({self.second_approver_above}) must be at least "
                f"auto_approve_up_to ({self.auto_approve_up_to}): the second approver comes "
                "in above the amount that already needs one"
            )

    def approvals_needed(self, amount: int) -> int:
        _check_amount(amount)
        if amount <= self.auto_approve_up_to:
            return 0
        if amount <= self.second_approver_above:
            return 1
        return 2


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """Thresholds per currency (ISO 4217 code) and an optional default for the others."""

    by_currency: Mapping[str, ApprovalThresholds] = field(
        default_factory=lambda: MappingProxyType({})
    )
    default: ApprovalThresholds | None = None

    def __post_init__(self) -> None:
        for currency in self.by_currency:
            if not _CURRENCY.fullmatch(currency):
                raise ApprovalPolicyError(_currency_hint(currency))
        # Read-only, so a policy shared between requests cannot be changed under them.
        object.__setattr__(self, "by_currency", MappingProxyType(dict(self.by_currency)))

    def thresholds_for(self, currency: str) -> ApprovalThresholds | None:
        return self.by_currency.get(currency.upper(), self.default)

    def approvals_needed(self, amount: int, currency: str) -> int:
        """0, 1 or 2 approvals for a refund of ``amount`` minor units of ``currency``."""
        thresholds = self.thresholds_for(currency)
        if thresholds is None:
            _check_amount(amount)
            return UNCONFIGURED_APPROVALS
        return thresholds.approvals_needed(amount)

    @classmethod
    def from_settings(cls, raw: str | Mapping[str, Any] | None) -> ApprovalPolicy:
        """Read the settings JSON (text, or already parsed); empty means no entries at all."""
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return cls()
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ApprovalPolicyError(
                    f"refund approval policy is not valid JSON ({exc.msg} at line {exc.lineno}, "
                    f'column {exc.colno}); expected e.g. {{"EUR": {{"auto_approve_up_to": 5000, '
                    '"second_approver_above": 50000}}'
                ) from None
        if not isinstance(raw, Mapping):
            raise ApprovalPolicyError(
                "refund approval policy must be a JSON object keyed by currency code "
                f'(e.g. "EUR") or "default", got {type(raw).__name__}'
            )
        by_currency: dict[str, ApprovalThresholds] = {}
        default: ApprovalThresholds | None = None
        for key, entry in raw.items():
            if key == _DEFAULT_KEY:
                default = _thresholds(key, entry)
            elif isinstance(key, str) and _CURRENCY.fullmatch(key):
                by_currency[key] = _thresholds(key, entry)
            else:
                raise ApprovalPolicyError(_currency_hint(key))
        return cls(by_currency=by_currency, default=default)

    def as_settings(self) -> dict[str, dict[str, int]]:
        """The JSON-ready form that ``from_settings`` reads back to an equal policy."""
        out = {currency: _entry(t) for currency, t in sorted(self.by_currency.items())}
        if self.default is not None:
            out[_DEFAULT_KEY] = _entry(self.default)
        return out


def _thresholds(key: str, entry: object) -> ApprovalThresholds:
    if not isinstance(entry, Mapping):
        raise ApprovalPolicyError(
            f"refund approval policy {key}: must be an object with auto_approve_up_to and "
            f"second_approver_above (minor units), got {type(entry).__name__}"
        )
    unknown = sorted(str(name) for name in entry if name not in _FIELDS)
    if unknown:
        raise ApprovalPolicyError(
            f"refund approval policy {key}: unknown field(s) {', '.join(unknown)}; "
            f"the fields are {' and '.join(_FIELDS)}"
        )
    missing = [name for name in _FIELDS if name not in entry]
    if missing:
        raise ApprovalPolicyError(
            f"refund approval policy {key}: missing {' and '.join(missing)} (minor units, "
            "e.g. 5000 for 50.00)"
        )
    try:
        return ApprovalThresholds(
            auto_approve_up_to=entry["auto_approve_up_to"],
            second_approver_above=entry["second_approver_above"],
        )
    except ApprovalPolicyError as exc:
        raise ApprovalPolicyError(f"refund approval policy {key}: {exc}") from None


def _entry(thresholds: ApprovalThresholds) -> dict[str, int]:
    return {name: getattr(thresholds, name) for name in _FIELDS}


def _currency_hint(key: object) -> str:
    return (
        f"refund approval policy: {key!r} is neither an ISO 4217 currency code in capitals "
        '(e.g. "EUR") nor "default"'
    )


def _check_amount(amount: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        raise ValueError(f"a refund amount is a non-negative number of minor units, got {amount!r}")
