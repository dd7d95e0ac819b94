"""Escalation end to end: the in-app message goes first; the email follows after
``escalate_after`` only if the customer has not read the in-app message by then."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from tests.support.events import CAMILLE, refund_authorized
from tests.support.smtp import SmtpServer
from tests.support.work import drain
from tidings.config import Settings
from tidings.db.schema import audit_log, delivery_attempts, delivery_jobs, notifications
from tidings.db.types import utcnow
from tidings.runtime import Runtime

STRUCTURED = {"Content-Type": "application/cloudevents+json"}
RULES = """
categories:
  refund: {{critical: true}}
policy:
  quiet_hours: null
rules:
  - {{id: refund-authorized, event: refund.authorized, kind: refund_authorized,
     category: refund, priority: critical, channels: [in_app, email],
     routing: escalate, escalate_after: {after}}}
"""


@pytest.fixture
def escalate_after() -> str:
    # Long enough that nothing falls due while the test looks: it moves the job instead.
    return "10m"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path, escalate_after: str) -> Settings:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(after=escalate_after), encoding="utf-8")
    settings.rules_path = rules
    return settings


def post(client: TestClient, event: dict[str, Any]) -> None:
    response = client.post("/api/events", content=json.dumps(event), headers=STRUCTURED)
    assert response.status_code in (200, 202), response.text


def run_due(runtime: Runtime) -> None:
    """Deliver what is due now and stop, leaving later jobs queued (``drain`` would wait)."""

    async def run() -> None:
        worker = runtime.new_worker()
        try:
            while await worker.run_once():
                pass
        finally:
            await worker.close()

    asyncio.run(run())


def by_channel(runtime: Runtime) -> dict[str, Any]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(select(notifications)).all()
    return {row.channel: row for row in rows}


def email_job(runtime: Runtime, notification_id: str) -> Any:
    with runtime.engine.connect() as conn:
        return conn.execute(
            select(delivery_jobs).where(delivery_jobs.c.notification_id == notification_id)
        ).one()


def make_due(runtime: Runtime, notification_id: str) -> None:
    """The escalation deadline passes."""
    with runtime.engine.begin() as conn:
        conn.execute(
            update(delivery_jobs)
            .where(delivery_jobs.c.notification_id == notification_id)
            .values(run_at=utcnow())
        )


def in_app_sent_email_held(runtime: Runtime) -> tuple[Any, Any]:
    posted_at = utcnow()
    run_due(runtime)
    found = by_channel(runtime)
    assert set(found) == {"in_app", "email"}
    in_app, email = found["in_app"], found["email"]
    assert in_app.status == "sent"
    assert email.status == "held"
    assert email.parent_id == in_app.id
    job = email_job(runtime, email.id)
    assert job.status == "queued"
    # It waits escalate_after from when the event was planned, not less.
    assert job.run_at >= posted_at + timedelta(minutes=10) - timedelta(seconds=5)
    assert job.run_at <= utcnow() + timedelta(minutes=10)
    return in_app, email


def test_email_is_dropped_when_the_in_app_message_was_read(
    client: TestClient, runtime: Runtime, smtp_server: SmtpServer
) -> None:
    post(client, refund_authorized("1042", customer=CAMILLE))
    in_app, email = in_app_sent_email_held(runtime)

    inbox = client.get(f"/api/customers/{CAMILLE['id']}/inbox").json()
    [message] = inbox["messages"]
    assert message["notification_id"] == in_app.id
    read = client.post(f"/api/customers/{CAMILLE['id']}/inbox/{message['id']}/read")
    assert read.status_code == 200, read.text
    assert by_channel(runtime)["in_app"].status == "acknowledged"

    make_due(runtime, email.id)
    drain(runtime)

    dropped = by_channel(runtime)["email"]
    assert dropped.status == "suppressed"
    assert dropped.reason == "the customer already read the in_app message"
    assert dropped.sent_at is None
    assert smtp_server.messages() == []
    with runtime.engine.connect() as conn:
        outcomes = conn.execute(
            select(delivery_attempts.c.outcome).where(
                delivery_attempts.c.notification_id == email.id
            )
        ).scalars()
        assert list(outcomes) == ["suppressed"]
        actions = conn.execute(
            select(audit_log.c.action).where(audit_log.c.subject_id == email.id)
        ).scalars()
        assert "delivery.suppressed" in list(actions)


def test_email_goes_once_when_the_in_app_message_was_not_read(
    client: TestClient, runtime: Runtime, smtp_server: SmtpServer
) -> None:
    post(client, refund_authorized("1042", customer=CAMILLE))
    _, email = in_app_sent_email_held(runtime)
    assert smtp_server.messages() == []

    make_due(runtime, email.id)
    drain(runtime)
    drain(runtime)

    assert by_channel(runtime)["email"].status == "sent"
    [mail] = smtp_server.parsed()
    assert mail["To"] == CAMILLE["email"]
    assert mail["Message-ID"] == f"<{email.id}.email@tidings.localhost>"


@pytest.mark.parametrize("escalate_after", ["1s"])
def test_escalate_after_in_seconds_sends_on_time_without_help(
    client: TestClient, runtime: Runtime, smtp_server: SmtpServer, escalate_after: str
) -> None:
    post(client, refund_authorized("1042", customer=CAMILLE))
    drain(runtime)  # waits for the held email to fall due, a second later
    found = by_channel(runtime)
    assert (found["in_app"].status, found["email"].status) == ("sent", "sent")
    # The deadline runs from when the event was planned.
    assert found["email"].sent_at >= found["email"].created_at + timedelta(seconds=1)
    assert len(smtp_server.messages()) == 1
