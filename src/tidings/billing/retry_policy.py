"""When to try a failed payment again: a retry policy is a value, its decision a pure function.

A policy lists the waits between attempts (the last one repeats), caps the attempts and
the days since the first failure, may move each attempt to a preferred local hour (the
customer's payday morning beats 3 a.m.), and caps the attempts per card network. Card
networks limit how often a declined card may be tried again and fine merchants past it:
Visa allows 15 reattempts in 30 days, Mastercard 10 in 24 hours and 35 in 30 days
(https://docs.stripe.com/declines/card, "Retrying issuer declines"). ``network_caps``
counts every attempt this workflow makes on that network, so the strictest reading holds.

``next_attempt`` answers None when the policy is spent; the workflow then takes its
``final_action``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tidings.billing.errors import BillingError

FinalAction = Literal["cancel_order", "mark_uncollectible", "escalate"]
FINAL_ACTIONS: tuple[FinalAction, ...] = ("cancel_order", "mark_uncollectible", "escalate")

DEFAULT_POLICY_NAME = "default"
# Networks whose published limits make a sensible default cap.
DEFAULT_NETWORK_CAPS = {"visa": 15, "mastercard": 10}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``intervals``: seconds to wait before attempt 1, 2, ...; the last one repeats."""

    intervals: tuple[int, ...] = (86_400, 3 * 86_400, 5 * 86_400, 7 * 86_400)
    max_attempts: int = 4
    max_days: int = 21
    # Local hour (0-23) attempts move to, in the customer's zone (else ``time_zone``).
    preferred_hour: int | None = 9
    time_zone: str = "UTC"
    network_caps: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_NETWORK_CAPS))
    final_action: FinalAction = "cancel_order"
    # Whether attempts after the first may go through the store's secondary gateway.
    use_secondary_gateway: bool = False

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            field_name, sentence = problems[0]
            raise BillingError("invalid_retry_policy", sentence, field_name)

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> RetryPolicy:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise BillingError(
                "invalid_retry_policy",
                f"Unknown retry policy field {unknown[0]!r}; the fields are "
                f"{', '.join(sorted(known))}.",
                unknown[0],
            )
        data = dict(values)
        if "intervals" in data and isinstance(data["intervals"], list):
            data["intervals"] = tuple(data["intervals"])
        if "network_caps" in data and isinstance(data["network_caps"], Mapping):
            data["network_caps"] = {str(k).lower(): v for k, v in data["network_caps"].items()}
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["intervals"] = list(self.intervals)
        values["network_caps"] = dict(self.network_caps)
        return values

    def attempt_limit(self, network: str | None) -> int:
        """The most attempts a workflow may make on a card of ``network``."""
        cap = self.network_caps.get((network or "").lower())
        return self.max_attempts if cap is None else min(self.max_attempts, cap)

    def next_attempt(
        self,
        *,
        first_failed_at: datetime,
        last_attempt_at: datetime,
        attempts_made: int,
        network: str | None = None,
        time_zone: str | None = None,
    ) -> datetime | None:
        """When attempt ``attempts_made + 1`` should run, or None when the policy is spent.

        ``last_attempt_at``: the failure or attempt just declined. ``time_zone``: the
        customer's, when known. The answer is never earlier than ``last_attempt_at``
        plus the interval, and never past ``max_days`` after the first failure.
        """
        if attempts_made >= self.attempt_limit(network):
            return None
        wait = self.intervals[min(attempts_made, len(self.intervals) - 1)]
        at = last_attempt_at + timedelta(seconds=wait)
        if self.preferred_hour is not None:
            at = _at_or_after_hour(at, self.preferred_hour, _zone(time_zone, self.time_zone))
        if at > first_failed_at + timedelta(days=self.max_days):
            return None
        return at


def _zone(preferred: str | None, fallback: str) -> ZoneInfo:
    for name in (preferred, fallback):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def _at_or_after_hour(at: datetime, hour: int, zone: ZoneInfo) -> datetime:
    """The first moment at or after ``at`` that is ``hour``:00 local time in ``zone``."""
    local = at.astimezone(zone)
    candidate = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if candidate < local:
        candidate = (local + timedelta(days=1)).replace(
            hour=hour, minute=0, second=0, microsecond=0
        )
    # On a day whose clock skips that hour (spring forward), the wall time does not
    # exist; normalizing through UTC lands on the first real moment after it.
    return candidate.astimezone(at.tzinfo)


def _is_count(value: object, *, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _problems(policy: RetryPolicy) -> list[tuple[str, str]]:
    """Every reason ``policy`` is unusable, as (field, sentence saying what to send)."""
    problems: list[tuple[str, str]] = []
    intervals = policy.intervals
    if (
        not isinstance(intervals, tuple)
        or not intervals
        or not all(_is_count(i, minimum=60) for i in intervals)
    ):
        problems.append(
            (
                "intervals",
                "intervals is a non-empty list of waits in whole seconds, each 60 or more.",
            )
        )
    if not _is_count(policy.max_attempts, minimum=0) or policy.max_attempts > 50:
        problems.append(("max_attempts", "max_attempts is a whole number from 0 to 50."))
    if not _is_count(policy.max_days, minimum=1) or policy.max_days > 120:
        problems.append(("max_days", "max_days is a whole number of days from 1 to 120."))
    hour = policy.preferred_hour
    if hour is not None and (not _is_count(hour, minimum=0) or hour > 23):
        problems.append(("preferred_hour", "preferred_hour is a local hour from 0 to 23, or null."))
    try:
        ZoneInfo(policy.time_zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        problems.append(("time_zone", "time_zone is an IANA zone name such as Europe/Paris."))
    caps = policy.network_caps
    if not isinstance(caps, Mapping) or not all(
        isinstance(k, str) and _is_count(v, minimum=0) for k, v in caps.items()
    ):
        problems.append(
            ("network_caps", 'network_caps maps a card network to a count: {"visa": 15}.')
        )
    if policy.final_action not in FINAL_ACTIONS:
        problems.append(("final_action", f"final_action is one of {', '.join(FINAL_ACTIONS)}."))
    if not isinstance(policy.use_secondary_gateway, bool):
        problems.append(("use_secondary_gateway", "use_secondary_gateway is true or false."))
    return problems
