"""The worker against a real SMTP server: delivery, retries, dead letters, leases, inbox."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.support.events import CAMILLE, JORDAN, order_placed, refund_authorized
from tests.support.smtp import SmtpServer
from tests.support.work import active_jobs, drain
from tidings.audit.chain import verify
from tidings.db.schema import audit_log, delivery_attempts, delivery_jobs, notifications
from tidings.db.types import utcnow
from tidings.delivery import dead_letters, queue
from tidings.runtime import Runtime

STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def post(client: TestClient, *events: dict[str, object]) -> None:
    for event in events:
        response = client.post("/api/events", content=json.dumps(event), headers=STRUCTURED)
        assert response.status_code in (200, 202), response.text


def statuses(runtime: Runtime) -> dict[str, str]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(select(notifications.c.channel, notifications.c.status)).all()
    return {row.channel: row.status for row in rows}


def test_french_refund_email_and_inbox_message(
    client: TestClient, runtime: Runtime, smtp_server: SmtpServer
) -> None:
    post(client, refund_authorized("1042", customer=CAMILLE))
    drain(runtime)

    [mail] = smtp_server.parsed()
    assert mail["To"] == "camille@example.fr"
    assert mail["Content-Language"] == "fr"
    with runtime.engine.connect() as conn:
        email_id = conn.execute(
            select(notifications.c.id).where(notifications.c.channel == "email")
        ).scalar_one()
    assert mail["Message-ID"] == f"<{email_id}.email@tidings.localhost>"
    text = mail.get_body(preferencelist=("plain",)).get_content()
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert "12,50\u00a0€" in text
    assert "12,50\u00a0€" in html or "12,50&nbsp;€" in html
    assert "#1042" in text or "1042" in text
    assert statuses(runtime) == {"email": "sent", "in_app": "sent"}

    inbox = client.get(f"/api/customers/{CAMILLE['id']}/inbox").json()
    assert inbox["unread"] == 1
    [message] = inbox["messages"]
    assert "12,50\u00a0€" in message["body"]
    read = client.post(f"/api/customers/{CAMILLE['id']}/inbox/{message['id']}/read")
    assert read.status_code == 200
    assert read.json()["read_at"] is not None
    assert client.get(f"/api/customers/{CAMILLE['id']}/inbox").json()["unread"] == 0
    assert statuses(runtime)["in_app"] == "acknowledged"
    missing = client.post(f"/api/customers/{CAMILLE['id']}/inbox/msg_nope/read")
    assert missing.status_code == 404

    with runtime.engine.connect() as conn:
        actions = [row.action for row in conn.execute(select(audit_log.c.action)).all()]
        assert verify(conn).ok
    assert actions.count("event.accepted") == 1
    assert actions.count("notification.planned") == 2
    assert actions.count("delivery.sent") == 2
    assert actions.count("inbox.read") == 1


def test_smtp_outage_messages_wait_then_arrive_once(
    client: TestClient, runtime: Runtime, smtp_server: SmtpServer
) -> None:
    runtime.settings.retry_max_attempts = 50  # outlast the outage
    runtime.intake.delivery = type(runtime.intake.delivery)(max_attempts=50)
    smtp_server.stop()
    post(client, order_placed("1", JORDAN))
    refunds = [refund_authorized("1", id=f"refund-{n}", amount=100 + n) for n in range(5)]
    for n, refund in enumerate(refunds):
        refund["data"]["refund_id"] = f"re_{n}"  # five refunds, five messages
    post(client, *refunds)

    async def during_outage() -> None:
        worker = runtime.new_worker()
        for _ in range(20):
            await worker.run_once()
            await asyncio.sleep(0.03)
        await worker.close()

    asyncio.run(during_outage())
    assert smtp_server.messages() == []
    with runtime.engine.connect() as conn:
        transient = conn.execute(
            select(delivery_attempts).where(delivery_attempts.c.outcome == "transient")
        ).all()
    assert transient, "sends during the outage are recorded as transient failures"
    assert active_jobs(runtime) == 5  # the in-app messages went out; email waits

    smtp_server.start()
    drain(runtime)
    ids = smtp_server.message_ids()
    assert len(ids) == 5
    assert set(ids.values()) == {1}


def test_exhausted_retries_become_dead_letters_and_replay_sends_them(
    client: TestClient, runtime: Runtime, smtp_server: SmtpServer
) -> None:
    smtp_server.stop()
    post(client, refund_authorized("7", customer=JORDAN))
    drain(runtime)
    with runtime.engine.connect() as conn:
        dead = dead_letters.dead_letters(conn)
    assert [row["channel"] for row in dead] == ["email"]
    assert dead[0]["attempts"] == runtime.settings.retry_max_attempts
    assert "gave up after 4 attempts" in dead[0]["last_error"]
    assert statuses(runtime)["email"] == "dead"

    smtp_server.start()
    with runtime.engine.begin() as conn:
        replayed = dead_letters.replay_dead(conn, job_ids=None, actor="tester", now=utcnow())
    assert replayed == [dead[0]["id"]]
    drain(runtime)
    assert [m["To"] for m in smtp_server.parsed()] == ["jordan@example.com"]
    assert statuses(runtime)["email"] == "sent"


def test_refused_recipient_is_a_permanent_failure_without_retries(
    client: TestClient, runtime: Runtime, smtp_server: SmtpServer
) -> None:
    smtp_server.refused.add("jordan@example.com")
    post(client, refund_authorized("8", customer=JORDAN))
    drain(runtime)
    with runtime.engine.connect() as conn:
        job = conn.execute(select(delivery_jobs).where(delivery_jobs.c.channel == "email")).one()
    assert job.status == "dead"
    assert job.attempts == 1
    assert "550" in job.last_error


def test_expired_lease_is_taken_over_and_the_late_result_is_ignored(
    client: TestClient, runtime: Runtime
) -> None:
    post(client, refund_authorized("9", customer=JORDAN))
    now = utcnow()
    with runtime.engine.begin() as conn:
        first = queue.claim(conn, worker_id="a", limit=10, now=now, lease=timedelta(seconds=30))
    assert len(first) == 2
    with runtime.engine.begin() as conn:
        assert (
            queue.claim(conn, worker_id="b", limit=10, now=now, lease=timedelta(seconds=30)) == []
        )
    later = now + timedelta(seconds=31)  # worker a died; its lease ran out
    with runtime.engine.begin() as conn:
        second = queue.claim(conn, worker_id="b", limit=10, now=later, lease=timedelta(seconds=30))
    assert sorted(j.job_id for j in second) == sorted(j.job_id for j in first)
    assert {j.attempt for j in second} == {2}

    def outcome(job: queue.ClaimedJob, result: str) -> queue.JobOutcome:
        return queue.JobOutcome(
            job, result, later, later, provider="test", error=None if result == "sent" else "late"
        )

    with runtime.engine.begin() as conn:
        queue.record(conn, [outcome(j, "sent") for j in second], worker_id="b", now=later)
    with runtime.engine.begin() as conn:  # a's result arrives after b finished
        queue.record(conn, [outcome(j, "dead") for j in first], worker_id="a", now=later)
    with runtime.engine.connect() as conn:
        assert {row.status for row in conn.execute(select(delivery_jobs.c.status))} == {"sent"}


def test_template_error_is_a_dead_letter_with_the_reason(
    client: TestClient, runtime: Runtime, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    overrides = tmp_path / "templates" / "refund_authorized"
    overrides.mkdir(parents=True)
    (overrides / "email.en.subject").write_text("Refund {{ data.no_such_field.deeper }}")
    from tidings.templates.rendering import Renderer
    from tidings.templates.store import TemplateStore

    runtime.renderer = Renderer(TemplateStore(override_dir=tmp_path / "templates"))
    post(client, refund_authorized("10", customer=JORDAN))
    drain(runtime)
    with runtime.engine.connect() as conn:
        job = conn.execute(select(delivery_jobs).where(delivery_jobs.c.channel == "email")).one()
    assert job.status == "dead"
    assert job.attempts == 1
    assert "refund_authorized" in job.last_error
    assert smtp_server.messages() == []
    assert statuses(runtime)["in_app"] == "sent"
