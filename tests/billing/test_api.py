"""The refunds and ledger HTTP API, against a real database and the real application."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.billing.support import NOW, capture, request
from tidings.api.keys import create_key
from tidings.billing import service
from tidings.billing.api import PREFIX
from tidings.billing.approvals import ApprovalPolicy
from tidings.db.types import utcnow
from tidings.runtime import Runtime

REFUNDS = f"{PREFIX}/refunds"
# EUR: up to 50.00 auto-approved, up to 500.00 one approver, above that two.
POLICY = {"EUR": {"auto_approve_up_to": 5_000, "second_approver_above": 50_000}}
CAPTURED = 100_000
DAY = timedelta(days=1)

Headers = dict[str, str]


def bearer(runtime: Runtime, actor: str, *scopes: str) -> Headers:
    with runtime.engine.begin() as conn:
        _, key = create_key(conn, name=actor, scopes=scopes, actor=actor, now=utcnow())
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def alice(runtime: Runtime) -> Headers:
    """The requester; she may approve refunds too, just never her own."""
    return bearer(runtime, "support:alice", "refunds:write", "refunds:read", "refunds:approve")


@pytest.fixture
def bob(runtime: Runtime) -> Headers:
    return bearer(runtime, "finance:bob", "refunds:approve")


@pytest.fixture
def carol(runtime: Runtime) -> Headers:
    return bearer(runtime, "finance:carol", "refunds:approve")


@pytest.fixture
def paid(runtime: Runtime) -> str:
    """A captured EUR payment of 1000.00 and the approval policy above."""
    runtime.billing = replace(runtime.billing, approvals=ApprovalPolicy.from_settings(POLICY))
    with runtime.engine.begin() as conn:
        capture(conn, "pay_1", amount=CAPTURED)
    return "pay_1"


def ask(
    client: TestClient,
    headers: Headers,
    amount: int | str,
    key: str,
    payment_id: str = "pay_1",
    **body: Any,
) -> Any:
    fields = {"payment_id": payment_id, "amount": amount, "currency": "EUR"}
    fields |= {"reason_code": "damaged"} | body
    return client.post(REFUNDS, json=fields, headers=headers | {"Idempotency-Key": key})


def move(client: TestClient, headers: Headers, refund_id: str, action: str, **body: Any) -> Any:
    return client.post(f"{REFUNDS}/{refund_id}/{action}", json=body or None, headers=headers)


def test_a_small_refund_is_approved_at_once(client: TestClient, paid: str, alice: Headers) -> None:
    created = ask(client, alice, 1_250, "k1", reason="cracked shade", lines=[{"sku": "LAMP"}])
    assert created.status_code == 201, created.text
    refund = created.json()
    assert refund["status"] == "approved"
    assert (refund["approvals_needed"], refund["approvals"]) == (0, [])
    assert refund["requested_by"] == "support:alice"
    assert (refund["amount"], refund["reason"]) == (1_250, "cracked shade")
    shown = client.get(f"{REFUNDS}/{refund['id']}", headers=alice)
    assert shown.status_code == 200
    assert shown.json() == refund


def test_a_large_refund_needs_two_approvers_other_than_the_requester(
    client: TestClient, paid: str, alice: Headers, bob: Headers, carol: Headers
) -> None:
    refund = ask(client, alice, 60_000, "big").json()
    assert (refund["status"], refund["approvals_needed"]) == ("pending_approval", 2)

    own = move(client, alice, refund["id"], "approve")
    assert own.status_code == 409
    assert own.headers["content-type"] == "application/problem+json"
    assert own.json()["code"] == "self_approval"

    once = move(client, bob, refund["id"], "approve", note="photos checked")
    assert once.status_code == 200, once.text
    assert once.json()["status"] == "pending_approval"
    twice = move(client, bob, refund["id"], "approve")
    assert (twice.status_code, twice.json()["code"]) == (409, "duplicate_approval")

    done = move(client, carol, refund["id"], "approve")
    assert done.json()["status"] == "approved"
    shown = client.get(f"{REFUNDS}/{refund['id']}", headers=alice).json()
    assert [a["actor"] for a in shown["approvals"]] == ["finance:bob", "finance:carol"]


def test_one_approver_between_the_thresholds(
    client: TestClient, paid: str, alice: Headers, bob: Headers
) -> None:
    refund = ask(client, alice, 5_001, "mid").json()
    assert (refund["status"], refund["approvals_needed"]) == ("pending_approval", 1)
    assert move(client, bob, refund["id"], "approve").json()["status"] == "approved"


def test_a_replay_answers_with_the_first_refund_and_another_body_conflicts(
    client: TestClient, paid: str, alice: Headers
) -> None:
    first = ask(client, alice, 1_250, "same")
    again = ask(client, alice, 1_250, "same")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    listed = client.get(REFUNDS, params={"payment_id": paid}, headers=alice).json()
    assert len(listed["items"]) == 1

    conflict = ask(client, alice, 1_300, "same")
    assert conflict.status_code == 409
    problem = conflict.json()
    assert (problem["code"], problem["field"]) == ("idempotency_conflict", "idempotency_key")
    assert "amount" in problem["detail"]


def test_the_idempotency_key_is_required(client: TestClient, paid: str, alice: Headers) -> None:
    body = {"payment_id": paid, "amount": 100, "currency": "EUR", "reason_code": "damaged"}
    response = client.post(REFUNDS, json=body, headers=alice)
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_required"
    assert client.get(REFUNDS, headers=alice).json()["items"] == []


def test_over_refund_is_refused_with_what_is_left_and_full_takes_the_rest(
    client: TestClient, paid: str, alice: Headers
) -> None:
    assert ask(client, alice, 60_000, "first").status_code == 201
    refused = ask(client, alice, 40_001, "second")
    assert refused.status_code == 409
    problem = refused.json()
    assert (problem["code"], problem["field"]) == ("refund_exceeds_captured", "amount")
    assert "only 40000 EUR" in problem["detail"]

    rest = ask(client, alice, "full", "rest")
    assert rest.status_code == 201, rest.text
    # 400.00 sits between the thresholds: the policy saw the resolved amount, not "full".
    assert (rest.json()["amount"], rest.json()["approvals_needed"]) == (40_000, 1)
    nothing_left = ask(client, alice, "full", "more")
    assert (nothing_left.status_code, nothing_left.json()["code"]) == (
        409,
        "refund_exceeds_captured",
    )


@pytest.mark.parametrize(
    ("changes", "code", "status"),
    [
        ({"payment_id": "pay_missing"}, "payment_not_found", 404),
        ({"reason_code": "changed_mind"}, "invalid_reason_code", 422),
        ({"amount": 0}, "invalid_amount", 422),
        ({"amount": "1250"}, "invalid_request", 422),
        ({"currency": "USD"}, "currency_mismatch", 422),
    ],
)
def test_bad_refund_requests_are_problems_with_a_code(
    client: TestClient,
    paid: str,
    alice: Headers,
    changes: dict[str, Any],
    code: str,
    status: int,
) -> None:
    body = {"payment_id": paid, "amount": 100, "currency": "EUR", "reason_code": "damaged"}
    response = client.post(REFUNDS, json=body | changes, headers=alice | {"Idempotency-Key": "bad"})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


def test_reject_needs_a_reason_and_gives_the_amount_back(
    client: TestClient, paid: str, alice: Headers, bob: Headers
) -> None:
    refund = ask(client, alice, 10_000, "r").json()
    unsaid = move(client, bob, refund["id"], "reject", reason="  ")
    assert (unsaid.status_code, unsaid.json()["code"]) == (422, "reason_required")
    missing = move(client, bob, refund["id"], "reject")
    assert missing.status_code == 422

    rejected = move(client, bob, refund["id"], "reject", reason="item resold")
    assert rejected.status_code == 200, rejected.text
    assert (rejected.json()["status"], rejected.json()["decided_reason"]) == (
        "rejected",
        "item resold",
    )
    late = move(client, bob, refund["id"], "approve")
    assert (late.status_code, late.json()["code"]) == (409, "illegal_transition")
    assert ask(client, alice, "full", "all").json()["amount"] == CAPTURED


def test_cancel_withdraws_a_refund_once(client: TestClient, paid: str, alice: Headers) -> None:
    refund = ask(client, alice, 1_000, "c").json()
    canceled = move(client, alice, refund["id"], "cancel", reason="customer kept it")
    assert canceled.status_code == 200, canceled.text
    assert (canceled.json()["status"], canceled.json()["decided_reason"]) == (
        "canceled",
        "customer kept it",
    )
    again = move(client, alice, refund["id"], "cancel")
    assert (again.status_code, again.json()["code"]) == (409, "illegal_transition")
    unknown = move(client, alice, "re_unknown", "cancel")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "refund_not_found")
    assert client.get(f"{REFUNDS}/re_unknown", headers=alice).status_code == 404


def test_list_filters_and_pages(
    client: TestClient, runtime: Runtime, paid: str, alice: Headers
) -> None:
    an_hour_ago = utcnow() - timedelta(hours=1)
    with runtime.engine.begin() as conn:
        capture(conn, "pay_2", amount=CAPTURED, order_id="1043")
        # Two refunds of pay_2 recorded as made a day ago, before the six below.
        old = [
            request(conn, payment_id="pay_2", idempotency_key=key, now=an_hour_ago - DAY)[0].id
            for key in ("old-1", "old-2")
        ]
    old.reverse()  # newest first, like the list
    made = [ask(client, alice, 100, f"k{i}").json() for i in range(6)]
    move(client, alice, made[0]["id"], "cancel")

    pages: list[list[dict[str, Any]]] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = client.get(REFUNDS, params=params, headers=alice).json()
        pages.append(page["items"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert [len(p) for p in pages] == [3, 3, 2]
    ids = [r["id"] for p in pages for r in p]
    assert ids == sorted(ids, reverse=True)
    assert set(ids) == {r["id"] for r in made} | set(old)

    def listed(**query: Any) -> list[str]:
        response = client.get(REFUNDS, params=query, headers=alice)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["items"]]

    assert listed(status="canceled") == [made[0]["id"]]
    assert set(listed(payment_id=paid)) == {r["id"] for r in made}
    assert listed(payment_id="pay_2") == old
    day_before = {"created_to": an_hour_ago.isoformat()}
    assert listed(**day_before) == old
    assert set(listed(created_from=an_hour_ago.isoformat())) == {r["id"] for r in made}
    # A window with pages: the cursor of a windowed page continues inside the window.
    first = client.get(REFUNDS, params=day_before | {"limit": 1}, headers=alice).json()
    rest = client.get(
        REFUNDS, params=day_before | {"limit": 1, "cursor": first["next_cursor"]}, headers=alice
    ).json()
    assert [first["items"][0]["id"], rest["items"][0]["id"]] == old
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"status": "lost"}, "invalid_status"),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "invalid_cursor"),
        ({"limit": 101}, "invalid_request"),
        ({"created_from": "2026-11-21T10:00:00"}, "invalid_request"),
        (
            {"created_from": "2026-11-21T10:00:00Z", "created_to": "2026-11-21T09:00:00Z"},
            "invalid_window",
        ),
    ],
)
def test_bad_list_queries_are_refused(
    client: TestClient, alice: Headers, query: dict[str, Any], code: str
) -> None:
    response = client.get(REFUNDS, params=query, headers=alice)
    assert response.status_code == 422
    assert response.json()["code"] == code


def test_trial_balance_sums_to_zero_per_currency(
    client: TestClient, runtime: Runtime, paid: str, alice: Headers
) -> None:
    refund = ask(client, alice, 1_250, "tb").json()
    emitter = runtime.billing.emitter
    with runtime.engine.begin() as conn:
        capture(conn, "pay_usd", amount=3_000, currency="USD", order_id="1044")
        service.mark_submitted(
            conn, refund_id=refund["id"], gateway_refund_id="gw_1", actor="worker", now=NOW
        )
        service.mark_authorized(
            conn, refund_id=refund["id"], actor="worker", now=NOW, emitter=emitter
        )
        service.mark_succeeded(
            conn, refund_id=refund["id"], actor="worker", now=NOW, emitter=emitter
        )
    reader = bearer(runtime, "finance:dana", "billing:read")
    response = client.get(f"{PREFIX}/ledger/trial-balance", headers=reader)
    assert response.status_code == 200, response.text
    balance = response.json()
    assert balance["totals"] == {"EUR": 0, "USD": 0}
    assert balance["balanced"] is True
    accounts = {a["account"]: a["balance"] for a in balance["accounts"]}
    assert accounts == {
        "lumen:EUR:gateway_clearing": CAPTURED - 1_250,
        "lumen:EUR:revenue": -CAPTURED,
        "lumen:EUR:refunds": 1_250,
        "lumen:EUR:customer_refunds_payable": 0,
        "lumen:USD:gateway_clearing": 3_000,
        "lumen:USD:revenue": -3_000,
    }


ROUTES = [
    ("post", "/refunds", "refunds:write"),
    ("get", "/refunds", "refunds:read"),
    ("get", "/refunds/re_none", "refunds:read"),
    ("post", "/refunds/re_none/approve", "refunds:approve"),
    ("post", "/refunds/re_none/reject", "refunds:approve"),
    ("post", "/refunds/re_none/cancel", "refunds:write"),
    ("get", "/ledger/trial-balance", "billing:read"),
    ("get", "/retry-policies", "billing:read"),
    ("put", "/retry-policies/default", "billing:write"),
    ("get", "/retry-workflows", "retries:read"),
    ("get", "/retry-workflows/rw_none", "retries:read"),
    ("post", "/retry-workflows/rw_none/retry-now", "retries:write"),
    ("post", "/retry-workflows/rw_none/cancel", "retries:write"),
    ("get", "/analytics", "billing:read"),
    ("get", "/reconciliation", "billing:read"),
]


@pytest.mark.parametrize(("method", "path", "needed"), ROUTES)
def test_every_route_needs_its_scope(
    client: TestClient, runtime: Runtime, method: str, path: str, needed: str
) -> None:
    url = f"{PREFIX}{path}"
    body: dict[str, Any] | None = {"reason": "no"} if path.endswith(("reject", "cancel")) else None
    if method == "put":
        body = {"max_attempts": 2}
    anonymous = client.request(method, url, json=body, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "missing_credentials"

    others = [scope for _, _, scope in ROUTES if scope != needed]
    lacking = client.request(method, url, json=body, headers=bearer(runtime, "eve", *others))
    assert lacking.status_code == 403
    assert lacking.json()["required_scope"] == needed

    allowed = client.request(method, url, json=body, headers=bearer(runtime, "frank", needed))
    assert allowed.status_code not in (401, 403), allowed.text


def test_the_openapi_document_has_an_example_for_every_body(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]

    def examples_of(schema: dict[str, Any]) -> list[Any]:
        # An optional body is "anyOf: [model, null]": the model carries the examples.
        for option in schema.get("anyOf", [schema]):
            if "$ref" in option:
                return list(schemas[option["$ref"].rsplit("/", 1)[1]].get("examples", []))
        return []

    operations = {
        (method, path): operation
        for path, item in document["paths"].items()
        if path.startswith(PREFIX)
        for method, operation in item.items()
    }
    assert {(m, p.removeprefix(PREFIX)) for m, p in operations} == {
        ("post", "/refunds"),
        ("get", "/refunds"),
        ("get", "/refunds/{refund_id}"),
        ("post", "/refunds/{refund_id}/approve"),
        ("post", "/refunds/{refund_id}/reject"),
        ("post", "/refunds/{refund_id}/cancel"),
        ("get", "/ledger/trial-balance"),
        ("get", "/retry-policies"),
        ("put", "/retry-policies/{name}"),
        ("get", "/retry-workflows"),
        ("get", "/retry-workflows/{workflow_id}"),
        ("post", "/retry-workflows/{workflow_id}/retry-now"),
        ("post", "/retry-workflows/{workflow_id}/cancel"),
        ("get", "/analytics"),
        ("get", "/reconciliation"),
    }
    bodies = 0
    for (method, path), operation in operations.items():
        contents = [operation.get("requestBody", {}).get("content", {})]
        contents += [response.get("content", {}) for response in operation["responses"].values()]
        for content in contents:
            for media in content.values():
                bodies += 1
                assert examples_of(media["schema"]), f"{method} {path}: no example"
        assert {"401", "403"} <= operation["responses"].keys()
    # Five with request bodies plus at least a success and two refusals for each route.
    assert bodies >= 5 + 3 * len(operations)
    refund_in = schemas["RefundIn"]["properties"]
    assert "damaged" in refund_in["reason_code"]["enum"]
