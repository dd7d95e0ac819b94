"""A failed payment, end to end: posted as a CloudEvent, retried through the sandbox
gateway by the worker, and told to the customer by real email in their language."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.events import CAMILLE, cloudevent, order_placed
from tests.support.smtp import SmtpServer
from tests.support.work import drain
from tidings.api.app import create_app
from tidings.billing.api import PREFIX
from tidings.billing.gateways.sandbox import SandboxGateway
from tidings.config import Settings
from tidings.runtime import Runtime, build_runtime

PAY_URL = "https://lumen.example/compte/paiement/{order_id}"


@pytest.fixture
def paying_runtime(settings: Settings, engine: Any) -> Runtime:
    return build_runtime(settings.model_copy(update={"update_payment_url": PAY_URL}), engine=engine)


@pytest.fixture
def api(paying_runtime: Runtime, admin_key: str) -> Any:
    with TestClient(create_app(paying_runtime)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {admin_key}"
        yield test_client


def failed(order_id: str, payment_id: str, decline_code: str) -> dict[str, Any]:
    return cloudevent(
        "payment.failed",
        {
            "order_id": order_id,
            "payment_id": payment_id,
            "amount": 4590,
            "currency": "EUR",
            "gateway": "sandbox",
            "decline_code": decline_code,
            "network": "visa",
            "customer": {"id": CAMILLE["id"]},
        },
        id=f"failed-{payment_id}",
    )


def post(api: TestClient, event: dict[str, Any], expect: int = 202) -> None:
    answer = api.post(
        "/api/events", json=event, headers={"Content-Type": "application/cloudevents+json"}
    )
    assert answer.status_code == expect, answer.text


def mail_to_camille(smtp: SmtpServer) -> list[EmailMessage]:
    return [m for m in smtp.parsed() if m["To"] == CAMILLE["email"]]


def body(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def workflow_of(api: TestClient, payment_id: str) -> dict[str, Any]:
    [item] = api.get(f"{PREFIX}/retry-workflows", params={"payment_id": payment_id}).json()["items"]
    found: dict[str, Any] = api.get(f"{PREFIX}/retry-workflows/{item['id']}").json()
    return found


def test_soft_declines_then_recovery_reach_the_customer_in_french(
    api: TestClient, paying_runtime: Runtime, smtp_server: SmtpServer
) -> None:
    gateway = paying_runtime.billing.gateways.named("sandbox")
    assert isinstance(gateway, SandboxGateway)
    # Two more declines, then the card goes through.
    gateway.add_payment("pay_1050", currency="EUR", card="tok_flaky_2", network="visa")
    post(api, order_placed("1050", CAMILLE))
    drain(paying_runtime)
    base = len(mail_to_camille(smtp_server))
    post(api, failed("1050", "pay_1050", "insufficient_funds"))
    drain(paying_runtime)
    start = len(mail_to_camille(smtp_server))
    assert start == base + 1

    for _ in range(3):
        workflow = workflow_of(api, "pay_1050")
        assert workflow["status"] == "retry_scheduled"
        # The billing administrator asks for the attempt now instead of waiting days.
        moved = api.post(f"{PREFIX}/retry-workflows/{workflow['id']}/retry-now")
        assert moved.status_code == 200, moved.text
        drain(paying_runtime)

    workflow = workflow_of(api, "pay_1050")
    assert workflow["status"] == "recovered"
    assert [(a["number"], a["outcome"]) for a in workflow["history"]] == [
        (0, "declined"),
        (1, "declined"),
        (2, "declined"),
        (3, "approved"),
    ]
    mails = mail_to_camille(smtp_server)
    assert len(mails) == start + 3, [m["Subject"] for m in mails]
    first = mails[start - 1]
    # The failure notice: the amount in French, the link to update the card.
    assert "45,90" in body(first)
    assert "https://lumen.example/compte/paiement/1050" in body(first)
    # Two reminders with the next attempt, then the recovery.
    reminders, recovered = mails[start : start + 2], mails[start + 2]
    for reminder in reminders:
        assert reminder["Content-Language"].startswith("fr")
    assert recovered["Content-Language"].startswith("fr")
    assert len({m["Message-ID"] for m in mails}) == len(mails)
    ledger = api.get(f"{PREFIX}/ledger/trial-balance").json()
    assert ledger["balanced"] is True


def test_a_hard_decline_cancels_the_order_and_says_so_once(
    api: TestClient, paying_runtime: Runtime, smtp_server: SmtpServer
) -> None:
    post(api, order_placed("1051", CAMILLE))
    drain(paying_runtime)
    before = len(mail_to_camille(smtp_server))
    post(api, failed("1051", "pay_1051", "stolen_card"))
    drain(paying_runtime)
    workflow = workflow_of(api, "pay_1051")
    assert (workflow["status"], workflow["final_action"]) == ("exhausted", "cancel_order")
    mails = mail_to_camille(smtp_server)[before:]
    # The failure and the final notice; no reminder, since nothing is tried again.
    assert len(mails) == 2, [m["Subject"] for m in mails]
    text = " ".join(body(m) for m in mails).lower()
    # A hard decline never tells the customer why the bank said no.
    for word in ("stolen", "volé", "fraud", "lost_card", "stolen_card"):
        assert word not in text
    timeline = api.get("/api/orders/1051/timeline").json()
    assert "order.canceled" in {entry.get("type") for entry in timeline["entries"]}
    # The same failure posted again is a duplicate and changes nothing.
    post(api, failed("1051", "pay_1051", "stolen_card"), expect=200)
    drain(paying_runtime)
    assert len(mail_to_camille(smtp_server)[before:]) == 2
