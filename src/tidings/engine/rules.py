"""Rules: which event, under which condition, becomes which notification on which channels.

Rules live in a YAML file (``TIDINGS_RULES_PATH``; the built-in set otherwise). Conditions
are compiled by the safe expression language in ``conditions``; nothing is ever eval'd.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tidings.engine.conditions import Condition, ConditionError, compile_condition
from tidings.engine.policy import DailyWindow, parse_duration
from tidings.engine.recipients import Recipient
from tidings.events.schemas import CATALOGUE

BUILTIN_RULES = Path(__file__).parent / "builtin_rules.yaml"
CHANNELS = ("email", "sms", "push", "in_app")
# What planning puts in a condition's context (see planning.condition_context).
CONDITION_ROOTS = frozenset({"data", "event", "customer", "order"})


class Lane(IntEnum):
    """Delivery priority lanes: lower values are claimed first."""

    critical = 0
    transactional = 1
    bulk = 2


class RulesError(ValueError):
    code = "invalid_rules"


class _CategorySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    critical: bool = False
    description: str | None = None


class _RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=128)
    event: str
    when: str | None = None
    kind: str = Field(pattern=r"^[a-z0-9_]+$")
    category: str
    priority: Literal["critical", "transactional", "bulk"] = "transactional"
    channels: list[Literal["email", "sms", "push", "in_app", "webhook"]] = Field(min_length=1)
    routing: Literal["all", "first_available", "escalate"] = "all"
    escalate_after: str | None = None
    to: list[str] | None = Field(default=None, min_length=1)
    hold: str | None = None
    group: str | None = Field(default=None, pattern=r"^[a-z_]+$")
    window: str | None = None
    digest: bool = False

    @model_validator(mode="after")
    def _escalation(self) -> _RuleSpec:
        if (self.routing == "escalate") != (self.escalate_after is not None):
            raise ValueError("routing: escalate goes with escalate_after (e.g. 30m), and only it")
        if self.routing != "all" and len(self.channels) < 2:
            raise ValueError(f"routing: {self.routing} needs two or more channels, in order")
        return self

    @field_validator("hold", "escalate_after")
    @classmethod
    def _hold(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            DailyWindow.parse(value)
        return value

    @field_validator("event")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in CATALOGUE:
            raise ValueError(f"'{value}' is not a catalogued event type")
        return value


class _PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quiet_hours: str | None = "21:00-08:00"
    defer_email_in_quiet_hours: bool = False
    contact_budget_per_order_per_day: int | None = Field(default=None, ge=1)
    digest_hour: int = Field(default=18, ge=0, le=23)
    restock_eta_margin_days: int = Field(default=2, ge=0)
    back_in_stock_wave_multiple: float = Field(default=2.0, gt=0)
    back_in_stock_wave_interval: str = "30m"
    low_stock_thresholds: dict[str, int] = Field(default_factory=dict)

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        if value is not None:
            DailyWindow.parse(value)
        return value

    @field_validator("back_in_stock_wave_interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        parse_duration(value)
        return value


DEFAULT_QUIET_HOURS = DailyWindow(time(21), time(8))


@dataclass(frozen=True, slots=True)
class Policy:
    """Store-wide defaults; a customer's own preferences win where they have one."""

    quiet_hours: DailyWindow | None = DEFAULT_QUIET_HOURS
    defer_email_in_quiet_hours: bool = False
    contact_budget_per_order_per_day: int | None = None
    digest_hour: int = 18
    restock_eta_margin_days: int = 2
    back_in_stock_wave_multiple: float = 2.0
    back_in_stock_wave_interval: timedelta = timedelta(minutes=30)
    low_stock_thresholds: Mapping[str, int] = field(default_factory=dict)

    def low_stock_threshold(self, sku: str) -> int:
        """Available at or below this is out of stock (default 0: no unit left)."""
        return self.low_stock_thresholds.get(sku, self.low_stock_thresholds.get("default", 0))


class _StakeholderSpec(BaseModel):
    """People and systems behind the store who hear of events: a finance mailbox, a Slack
    channel. A rule with ``to: [name]`` speaks to them instead of the customer."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    webhook: str | None = Field(default=None, pattern=r"^https?://")
    locale: str = "en"
    time_zone: str = "UTC"


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    categories: dict[str, _CategorySpec]
    policy: _PolicySpec = Field(default_factory=_PolicySpec)
    stakeholders: dict[str, _StakeholderSpec] = Field(default_factory=dict)
    rules: list[_RuleSpec]


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    event_type: str
    condition: Condition | None
    kind: str
    category: str
    critical: bool
    lane: Lane
    channels: tuple[str, ...]
    hold: timedelta | None = None
    group: str | None = None
    window: DailyWindow | None = None
    digest: bool = False
    # all: every channel; first_available: the first channel that can reach the
    # recipient; escalate: the first, then the next after escalate_after unless read.
    routing: str = "all"
    escalate_after: timedelta | None = None
    to: tuple[str, ...] = ()  # stakeholders instead of the customer

    def matches(self, context: dict[str, Any]) -> bool:
        return self.condition is None or self.condition.evaluate(context)


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    categories: frozenset[str]
    critical_categories: frozenset[str]
    policy: Policy = field(default_factory=Policy)
    stakeholders: Mapping[str, Recipient] = field(default_factory=dict)
    # The rules by event type, in file order: asked for several times per event.
    _by_type: Mapping[str, tuple[Rule, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        by_type: dict[str, list[Rule]] = {}
        for rule in self.rules:
            by_type.setdefault(rule.event_type, []).append(rule)
        object.__setattr__(self, "_by_type", {k: tuple(v) for k, v in by_type.items()})

    def for_type(self, event_type: str) -> tuple[Rule, ...]:
        return self._by_type.get(event_type, ())

    def lane_of(self, event_type: str) -> Lane:
        """The most urgent lane the type's messages go in; transactional when no rule
        sends one (its effects, such as a restock's waves, are not known here)."""
        lanes = [rule.lane for rule in self.for_type(event_type)]
        return min(lanes) if lanes else Lane.transactional


def load_rules(path: Path | None = None) -> RuleSet:
    path = path or BUILTIN_RULES
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RulesError(f"cannot read the rules file {path}: {exc}") from exc
    return parse_rules(raw, origin=str(path))


def parse_rules(raw: Any, *, origin: str = "<rules>") -> RuleSet:
    try:
        spec = _RulesFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise RulesError(f"{origin}: {where}: {first['msg']}") from exc
    seen: set[str] = set()
    rules = []
    for item in spec.rules:
        if item.id in seen:
            raise RulesError(f"{origin}: rule id '{item.id}' is used twice")
        seen.add(item.id)
        if item.category not in spec.categories:
            raise RulesError(
                f"{origin}: rule '{item.id}' uses category '{item.category}', "
                "which is not declared under categories"
            )
        try:
            condition = compile_condition(item.when) if item.when else None
        except ConditionError as exc:
            raise RulesError(f"{origin}: rule '{item.id}': {exc}") from exc
        # A misspelt root ("dat.amount") would silently never match: refuse it instead.
        unknown_roots = sorted(condition.roots() - CONDITION_ROOTS) if condition else []
        if unknown_roots:
            raise RulesError(
                f"{origin}: rule '{item.id}': condition uses {', '.join(unknown_roots)}; "
                f"conditions can read {', '.join(sorted(CONDITION_ROOTS))}"
            )
        rules.append(
            Rule(
                id=item.id,
                event_type=item.event,
                condition=condition,
                kind=item.kind,
                category=item.category,
                critical=spec.categories[item.category].critical,
                lane=Lane[item.priority],
                channels=tuple(dict.fromkeys(item.channels)),
                hold=parse_duration(item.hold) if item.hold else None,
                group=item.group,
                window=DailyWindow.parse(item.window) if item.window else None,
                digest=item.digest,
                routing=item.routing,
                escalate_after=parse_duration(item.escalate_after) if item.escalate_after else None,
                to=tuple(item.to or ()),
            )
        )
        unknown = [name for name in item.to or () if name not in spec.stakeholders]
        if unknown:
            raise RulesError(
                f"{origin}: rule '{item.id}' is for {', '.join(unknown)}, who is not in "
                "stakeholders:"
            )
    critical = frozenset(name for name, cat in spec.categories.items() if cat.critical)
    p = spec.policy
    policy = Policy(
        quiet_hours=DailyWindow.parse(p.quiet_hours) if p.quiet_hours else None,
        defer_email_in_quiet_hours=p.defer_email_in_quiet_hours,
        contact_budget_per_order_per_day=p.contact_budget_per_order_per_day,
        digest_hour=p.digest_hour,
        restock_eta_margin_days=p.restock_eta_margin_days,
        back_in_stock_wave_multiple=p.back_in_stock_wave_multiple,
        back_in_stock_wave_interval=parse_duration(p.back_in_stock_wave_interval),
        low_stock_thresholds=dict(p.low_stock_thresholds),
    )
    stakeholders = {
        name: Recipient(
            customer_id=f"stakeholder:{name}",
            name=person.name or name,
            email=person.email,
            phone=person.phone,
            locale=person.locale,
            time_zone=person.time_zone,
            opted_out=frozenset(),
            webhook=person.webhook,
        )
        for name, person in spec.stakeholders.items()
    }
    return RuleSet(tuple(rules), frozenset(spec.categories), critical, policy, stakeholders)
