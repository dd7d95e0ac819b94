"""Customer preferences (``GET/PUT /api/customers/{id}/preferences``) and back-in-stock
subscriptions (``POST /api/inventory/subscriptions``)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tidings.api.auth import scope
from tidings.api.keys import Principal
from tidings.api.problems import ApiProblem
from tidings.audit.chain import AuditEntry, append
from tidings.db.engine import read_transaction
from tidings.db.types import utcnow
from tidings.engine import addresses, repository
from tidings.engine.policy import DailyWindow
from tidings.engine.rules import CHANNELS, RuleSet
from tidings.engine.scheduled import subscribe
from tidings.events.schemas import Locale, TimeZone

router = APIRouter(tags=["preferences"])

Channel = Literal["email", "sms", "push", "in_app"]


class Digest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    categories: list[str] = Field(default_factory=list, description="Sent as a daily digest.")
    hour: int | None = Field(default=None, ge=0, le=23, description="Local hour; store default.")


class PreferencesIn(BaseModel):
    """Everything is optional; what is left out keeps its current value."""

    model_config = ConfigDict(extra="forbid")
    locale: Locale | None = None
    time_zone: TimeZone | None = None
    # Checked and normalized in the route (engine.addresses), so that errors carry the
    # stable codes invalid_email / invalid_phone.
    email: str | None = Field(default=None, description="Stored normalized.")
    phone: str | None = Field(
        default=None,
        description="E.164 (+33612345678); a national number is read in the country of the "
        "customer's locale (fr-FR: France). Stored as E.164.",
    )
    channels: dict[Channel, bool] | None = Field(
        default=None, description='Turn channels on or off, e.g. {"sms": false}.'
    )
    quiet_hours: str | None = Field(
        default=None, description='"22:00-07:00" in the customer\'s zone; "off" for none.'
    )
    opted_out: list[str] | None = Field(default=None, description="Categories to mute.")
    digest: Digest | None = None

    @field_validator("quiet_hours")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value not in (None, "off"):
            DailyWindow.parse(value)
        return value


class Preferences(BaseModel):
    customer_id: str
    locale: str | None
    time_zone: str | None
    email: str | None
    phone: str | None
    channels: dict[str, bool]
    quiet_hours: str | None
    opted_out: list[str]
    digest: Digest
    always_on: list[str] = Field(
        description="Critical categories (refunds, payment failures, security): sent on the "
        "rule's channels whatever the customer chose above, and never deferred."
    )


def _view(customer: dict[str, Any], rules: RuleSet) -> Preferences:
    prefs = customer["preferences"] or {}
    store_quiet = rules.policy.quiet_hours
    quiet = (
        prefs["quiet_hours"]
        if "quiet_hours" in prefs
        else (str(store_quiet) if store_quiet else None)
    )
    return Preferences(
        customer_id=customer["id"],
        locale=prefs.get("locale") or customer["locale"],
        time_zone=prefs.get("time_zone") or customer["time_zone"],
        email=prefs.get("email") or customer["email"],
        phone=prefs.get("phone") or customer["phone"],
        channels={
            channel: (prefs.get("channels") or {}).get(channel, True) for channel in CHANNELS
        },
        quiet_hours=quiet,
        opted_out=sorted(prefs.get("opted_out") or []),
        digest=Digest.model_validate(prefs.get("digest") or {}),
        always_on=sorted(rules.critical_categories),
    )


@router.get("/api/customers/{customer_id}/preferences", response_model=Preferences)
def get_preferences(
    customer_id: str, request: Request, _: Principal = scope("customers:read")
) -> Preferences:
    runtime = request.app.state.runtime
    with read_transaction(runtime.engine) as conn:
        customer = repository.get_customer(conn, customer_id)
    if customer is None:
        raise ApiProblem(404, "customer_not_found", f"No customer with id {customer_id}.")
    return _view(customer, runtime.rules)


@router.put("/api/customers/{customer_id}/preferences", response_model=Preferences)
def put_preferences(
    customer_id: str,
    body: PreferencesIn,
    request: Request,
    principal: Principal = scope("customers:write"),
) -> Preferences:
    runtime = request.app.state.runtime
    known = runtime.rules.categories
    named = set(body.opted_out or []) | set(body.digest.categories if body.digest else [])
    unknown = sorted(named - known)
    if unknown:
        raise ApiProblem(
            422,
            "unknown_category",
            f"Unknown categories {', '.join(unknown)}; known: {', '.join(sorted(known))}.",
            field="opted_out",
        )
    changes = body.model_dump(exclude_unset=True, mode="json")
    if changes.get("quiet_hours") == "off":
        changes["quiet_hours"] = None  # stored as "none", distinct from "store default"
    try:
        if changes.get("email") is not None:
            changes["email"] = addresses.normalize_email(changes["email"])
    except addresses.AddressError as exc:
        raise ApiProblem(422, exc.code, exc.detail, field=exc.field) from exc
    now = utcnow()
    with runtime.engine.begin() as conn:
        customer = repository.get_customer(conn, customer_id)
        if customer is None:
            raise ApiProblem(404, "customer_not_found", f"No customer with id {customer_id}.")
        if changes.get("phone") is not None:
            changes["phone"] = _phone(changes["phone"], changes, customer)
        merged = {**(customer["preferences"] or {}), **changes}
        repository.set_preferences(conn, customer_id, merged, now)
        append(
            conn,
            [AuditEntry(principal.actor, "preferences.updated", "customer", customer_id, changes)],
            at=now,
        )
        customer = {**customer, "preferences": merged}
    return _view(customer, runtime.rules)


def _phone(phone: str, changes: dict[str, Any], customer: dict[str, Any]) -> str:
    """E.164; a number written the national way is read in the customer's country."""
    locale = (
        changes.get("locale") or (customer["preferences"] or {}).get("locale") or customer["locale"]
    )
    try:
        return addresses.normalize_phone(phone, region=addresses.region_from_locale(locale))
    except addresses.AddressError as exc:
        raise ApiProblem(422, exc.code, exc.detail, field=exc.field) from exc


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: str = Field(min_length=1, max_length=128)
    sku: str = Field(min_length=1, max_length=128)


@router.post("/api/inventory/subscriptions", tags=["inventory"], status_code=201)
def post_subscription(
    body: SubscriptionIn, request: Request, principal: Principal = scope("customers:write")
) -> JSONResponse:
    """Tell this customer once when the SKU is back in stock (in waves, see the README)."""
    runtime = request.app.state.runtime
    now = utcnow()
    with runtime.engine.begin() as conn:
        if repository.get_customer(conn, body.customer_id) is None:
            raise ApiProblem(404, "customer_not_found", f"No customer with id {body.customer_id}.")
        subscription_id = subscribe(conn, sku=body.sku, customer_id=body.customer_id, now=now)
        if subscription_id:
            append(
                conn,
                [
                    AuditEntry(
                        principal.actor,
                        "subscription.created",
                        "customer",
                        body.customer_id,
                        {"sku": body.sku},
                    )
                ],
                at=now,
            )
    if subscription_id is None:
        return JSONResponse({"status": "already_subscribed", **body.model_dump()}, 200)
    return JSONResponse({"id": subscription_id, "status": "subscribed", **body.model_dump()}, 201)
