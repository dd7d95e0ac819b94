"""The payment retry API: policies, workflows with their history, try now and cancel."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from tidings.billing import retry_service
from tidings.billing.api import PREFIX
from tidings.billing.retry_service import Failure
from tidings.db.types import utcnow
from tidings.runtime import Runtime


def open_failure(runtime: Runtime, payment_id: str, decline_code: str) -> str:
    with runtime.engine.begin() as conn:
        workflow, _ = retry_service.open_workflow(
            conn,
            runtime.billing.retries,
            Failure(
                payment_id=payment_id,
                order_id="1043",
                customer_id=None,
                gateway="sandbox",
                amount=4500,
                currency="USD",
                decline_code=decline_code,
                network="visa",
                at=utcnow(),
            ),
            now=utcnow(),
            actor="billing",
        )
    return workflow.id


def detail_of(client: TestClient, workflow_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = client.get(f"{PREFIX}/retry-workflows/{workflow_id}").json()
    return answer


def test_a_policy_is_stored_and_a_bad_one_is_refused_naming_the_field(client: TestClient) -> None:
    listed = client.get(f"{PREFIX}/retry-policies").json()["items"]
    assert [p["name"] for p in listed] == ["default"]
    assert listed[0]["updated_by"] is None

    body = {"intervals": [7200], "max_attempts": 2, "final_action": "escalate"}
    stored = client.put(f"{PREFIX}/retry-policies/default", json=body)
    assert stored.status_code == 200, stored.text
    assert stored.json()["policy"]["max_attempts"] == 2
    assert client.get(f"{PREFIX}/retry-policies").json()["items"][0]["policy"]["intervals"] == [
        7200
    ]

    refused = client.put(f"{PREFIX}/retry-policies/default", json={"preferred_hour": 25})
    assert refused.status_code == 422
    assert refused.json()["code"] == "invalid_retry_policy"
    assert refused.json()["field"] == "preferred_hour"


def test_workflows_are_listed_with_their_history_and_moved_by_people(
    client: TestClient, runtime: Runtime
) -> None:
    soft = open_failure(runtime, "pay_soft", "insufficient_funds")
    planned_first = datetime.fromisoformat(detail_of(client, soft)["next_attempt_at"])
    hard = open_failure(runtime, "pay_hard", "lost_card")

    page = client.get(f"{PREFIX}/retry-workflows", params={"status": "retry_scheduled"}).json()
    assert [w["id"] for w in page["items"]] == [soft]
    detail = client.get(f"{PREFIX}/retry-workflows/{hard}").json()
    assert detail["status"] == "exhausted"
    assert [(a["number"], a["decline_code"], a["category"]) for a in detail["history"]] == [
        (0, "lost_card", "hard")
    ]

    now = client.post(f"{PREFIX}/retry-workflows/{soft}/retry-now", json={"reason": "new card"})
    assert now.status_code == 200, now.text
    # The first attempt was planned a day out; now it is due at once.
    assert planned_first - datetime.fromisoformat(now.json()["next_attempt_at"]) > timedelta(
        hours=12
    )

    again = client.post(f"{PREFIX}/retry-workflows/{hard}/retry-now")
    assert again.status_code == 409
    assert again.json()["code"] == "illegal_transition"

    canceled = client.post(
        f"{PREFIX}/retry-workflows/{soft}/cancel", json={"reason": "paid by wire"}
    )
    assert canceled.status_code == 200
    assert (canceled.json()["status"], canceled.json()["closed_reason"]) == (
        "canceled",
        "paid by wire",
    )

    missing = client.get(f"{PREFIX}/retry-workflows/rw_missing")
    assert missing.status_code == 404
    assert missing.json()["code"] == "retry_workflow_not_found"


def test_workflow_pages_follow_the_cursor(client: TestClient, runtime: Runtime) -> None:
    ids = [open_failure(runtime, f"pay_{n}", "insufficient_funds") for n in range(3)]
    first = client.get(f"{PREFIX}/retry-workflows", params={"limit": 2}).json()
    second = client.get(
        f"{PREFIX}/retry-workflows", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    seen = [w["id"] for w in first["items"] + second["items"]]
    assert seen == sorted(ids, reverse=True)
    assert second["next_cursor"] is None
    bad = client.get(f"{PREFIX}/retry-workflows", params={"cursor": "bm9wZQ"})
    assert bad.status_code == 422
    assert bad.json()["code"] == "invalid_cursor"
