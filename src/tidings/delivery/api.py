"""In-app inbox routes: ``GET /api/customers/{id}/inbox`` and acknowledgment."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from tidings.api.auth import scope
from tidings.api.keys import Principal
from tidings.api.problems import ApiProblem
from tidings.db.engine import read_transaction
from tidings.db.types import utcnow
from tidings.delivery import inbox

router = APIRouter(tags=["inbox"])


class InboxMessage(BaseModel):
    id: str
    notification_id: str
    kind: str
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None


class Inbox(BaseModel):
    customer_id: str
    unread: int
    messages: list[InboxMessage]


def _message(row: dict[str, Any]) -> InboxMessage:
    return InboxMessage.model_validate(row)


@router.get("/api/customers/{customer_id}/inbox", response_model=Inbox)
def get_inbox(
    customer_id: str,
    request: Request,
    unread_only: bool = False,
    limit: int = Query(50, ge=1, le=500),
    _: Principal = scope("inbox:read"),
) -> Inbox:
    with read_transaction(request.app.state.runtime.engine) as conn:
        rows = inbox.list_inbox(conn, customer_id, unread_only=unread_only, limit=limit)
    messages = [_message(row) for row in rows]
    return Inbox(
        customer_id=customer_id,
        unread=sum(1 for m in messages if m.read_at is None),
        messages=messages,
    )


@router.post("/api/customers/{customer_id}/inbox/{message_id}/read", response_model=InboxMessage)
def read_message(
    customer_id: str,
    message_id: str,
    request: Request,
    principal: Principal = scope("inbox:write"),
) -> InboxMessage:
    with request.app.state.runtime.engine.begin() as conn:
        row = inbox.mark_read(conn, customer_id, message_id, actor=principal.actor, now=utcnow())
    if row is None:
        raise ApiProblem(
            404, "message_not_found", f"Customer {customer_id} has no message {message_id}."
        )
    return _message(row)
