"""`tidings serve` as a user runs it: a real server process, a real outside SMTP server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from tests.support import processes
from tests.support.events import CAMILLE, refund_authorized
from tests.support.smtp import SmtpServer, free_port
from tidings.db.engine import normalize_url
from tidings.db.schema import delivery_jobs

STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def settled(db_url: str) -> bool:
    engine = create_engine(normalize_url(db_url))
    try:
        with engine.connect() as conn:
            active = conn.execute(
                select(func.count()).where(delivery_jobs.c.status.in_(("queued", "leased")))
            ).scalar()
    finally:
        engine.dispose()
    return active == 0


@pytest.mark.slow
def test_refund_for_french_customer_arrives_once_at_outside_smtp_server(
    db_url: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    port = free_port()
    env = processes.tidings_env(
        database_url=db_url, smtp_url=smtp_server.url, port=port, var_dir=tmp_path
    )
    assert processes.run(["migrate"], env).returncode == 0
    key = processes.create_key(env, "events:write,inbox:read")
    server = processes.start(["serve"], env, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}"
    try:
        processes.wait_http(f"{base}/healthz")
        processes.wait_until(
            lambda: httpx.get(f"{base}/readyz").status_code == 200, timeout=20, what="readyz"
        )
        headers = {**STRUCTURED, "Authorization": f"Bearer {key}"}
        body = json.dumps(refund_authorized("1042", customer=CAMILLE))

        posted = time.monotonic()
        response = httpx.post(f"{base}/api/events", content=body, headers=headers)
        assert response.status_code == 202, response.text
        [mail] = smtp_server.wait_for(1, timeout=10)
        print(f"refund.authorized → SMTP accepted in {time.monotonic() - posted:.3f}s")

        assert mail["To"] == "camille@example.fr"
        text = mail.get_body(preferencelist=("plain",)).get_content()
        assert "12,50\u00a0€" in text
        assert mail["Content-Language"] == "fr"

        again = httpx.post(f"{base}/api/events", content=body, headers=headers)
        assert again.status_code == 200
        assert again.json()["status"] == "duplicate"
        processes.wait_until(lambda: settled(db_url), timeout=10, what="an idle queue")
        time.sleep(0.5)  # give a wrongly queued second send every chance to show up
        assert len(smtp_server.messages()) == 1

        inbox = httpx.get(
            f"{base}/api/customers/{CAMILLE['id']}/inbox",
            headers={"Authorization": f"Bearer {key}"},
        ).json()
        assert len(inbox["messages"]) == 1
    finally:
        processes.stop(server)


@pytest.mark.slow
def test_demo_mode_serves_the_mailbox_with_the_embedded_sink(tmp_path: Path) -> None:
    port, sink_port = free_port(), free_port()
    env = processes.tidings_env(
        database_url=f"sqlite:///{tmp_path}/run.db",
        port=port,
        smtp_sink_port=sink_port,
        var_dir=tmp_path,
    )
    assert processes.run(["migrate"], env).returncode == 0
    server = processes.start(["serve", "--demo"], env, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}"
    try:
        processes.wait_http(f"{base}/healthz")
        key = (tmp_path / "demo-api-key").read_text().strip()
        assert key in (tmp_path / "serve.log").read_text()

        def mail_arrived() -> bool:
            return "remboursement" in httpx.get(f"{base}/dev/mailbox").text

        processes.wait_until(mail_arrived, timeout=30, what="demo mail in the mailbox")
        landing = httpx.get(f"{base}/", follow_redirects=True)
        assert landing.url.path == "/dashboard"
        assert "/dev/mailbox" in landing.text
        page = httpx.get(f"{base}/dev/mailbox/1")
        assert page.status_code == 200
        assert "Message-ID" in page.text
        assert "sandbox" in page.text  # message HTML cannot run script in the page
        unauthorized = httpx.get(f"{base}/api/customers/cus_0/inbox")
        assert unauthorized.status_code == 401
        authorized = httpx.get(
            f"{base}/api/customers/cus_0/inbox", headers={"Authorization": f"Bearer {key}"}
        )
        assert authorized.status_code == 200
    finally:
        processes.stop(server)
