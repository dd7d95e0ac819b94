"""Customer preferences: ``GET/PUT /api/customers/{id}/preferences``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from tidings.api.auth import scope
from tidings.api.keys import Principal
from tidings.api.problems import ApiProblem
from tidings.audit.chain import AuditEntry, append
from tidings.db.engine import read_transaction
from tidings.db.types import utcnow
from tidings.engine import repository
from tidings.engine.rules import RuleSet
from tidings.events.schemas import Locale, TimeZone

router = APIRouter(tags=["preferences"])


class PreferencesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    locale: Locale | None = None
    time_zone: TimeZone | None = None
    opted_out: list[str] = Field(default_factory=list, description="Categories to mute.")


class Preferences(BaseModel):
    customer_id: str
    locale: str | None
    time_zone: str | None
    opted_out: list[str]
    always_on: list[str] = Field(
        description="Critical categories: sent whatever the customer chose, and why."
    )


def _view(customer: dict[str, Any], rules: RuleSet) -> Preferences:
    prefs = customer["preferences"] or {}
    return Preferences(
        customer_id=customer["id"],
        locale=prefs.get("locale") or customer["locale"],
        time_zone=prefs.get("time_zone") or customer["time_zone"],
        opted_out=sorted(prefs.get("opted_out") or []),
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
    unknown = sorted(set(body.opted_out) - known)
    if unknown:
        raise ApiProblem(
            422,
            "unknown_category",
            f"Unknown categories {', '.join(unknown)}; known: {', '.join(sorted(known))}.",
            field="opted_out",
        )
    now = utcnow()
    with runtime.engine.begin() as conn:
        found = repository.set_preferences(
            conn, customer_id, body.model_dump(exclude_none=True), now
        )
        if not found:
            raise ApiProblem(404, "customer_not_found", f"No customer with id {customer_id}.")
        append(
            conn,
            [
                AuditEntry(
                    principal.actor,
                    "preferences.updated",
                    "customer",
                    customer_id,
                    body.model_dump(mode="json"),
                )
            ],
            at=now,
        )
        customer = repository.get_customer(conn, customer_id)
    return _view(customer or {}, runtime.rules)
