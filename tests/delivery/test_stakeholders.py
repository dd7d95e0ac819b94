"""A rule for the store's own people: a refund reaches the finance system as a signed
webhook (Standard Webhooks), checked here by an independent implementation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, select

from tests.support.events import CAMILLE, refund_authorized
from tests.support.http_stub import HttpStub, Reply, Request
from tests.support.work import drain
from tidings.api.app import create_app
from tidings.api.keys import create_key
from tidings.config import Settings
from tidings.db.schema import notifications
from tidings.db.types import utcnow
from tidings.engine.rules import BUILTIN_RULES
from tidings.runtime import build_runtime

KEY = b"finance-hook-key-0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def checks_signature(request: Request) -> Reply:
    msg_id = request.headers.get("webhook-id", "")
    stamp = request.headers.get("webhook-timestamp", "")
    content = f"{msg_id}.{stamp}.".encode() + request.body
    expected = base64.b64encode(hmac.new(KEY, content, hashlib.sha256).digest()).decode()
    given = [s.split(",", 1)[1] for s in request.headers.get("webhook-signature", "").split()]
    if expected not in given or abs(time.time() - int(stamp or 0)) > 300:
        return Reply(401, "bad signature")
    return Reply(204)


def test_a_refund_reaches_the_finance_webhook_signed_and_the_customer_as_usual(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    hook = HttpStub(checks_signature).start()
    rules: dict[str, Any] = yaml.safe_load(BUILTIN_RULES.read_text())
    rules["stakeholders"] = {"finance": {"webhook": f"{hook.url}/finance", "locale": "en"}}
    rules["rules"].append(
        {
            "id": "refund-to-finance",
            "event": "refund.authorized",
            "kind": "refund_authorized",
            "category": "refund",
            "priority": "critical",
            "channels": ["webhook"],
            "to": ["finance"],
        }
    )
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    runtime = build_runtime(
        settings.model_copy(
            update={"rules_path": path, "webhook_signing_secret": SecretStr(SECRET)}
        ),
        engine=engine,
    )
    with runtime.engine.begin() as conn:
        _, key = create_key(conn, name="t", scopes=["admin"], actor="t", now=utcnow())
    with TestClient(create_app(runtime)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        answer = client.post(
            "/api/events",
            content=json.dumps(refund_authorized("1042", customer=CAMILLE)),
            headers={"Content-Type": "application/cloudevents+json"},
        )
        assert answer.status_code == 202, answer.text
        drain(runtime)
    try:
        [call] = hook.taken()
        with engine.connect() as conn:
            sent = {
                row.channel: row
                for row in conn.execute(select(notifications))
                if row.status == "sent"
            }
        assert set(sent) == {"email", "in_app", "webhook"}
        assert sent["webhook"].customer_id == "stakeholder:finance"
        assert call.path == "/finance"
        assert call.headers["webhook-id"] == f"{sent['webhook'].id}.webhook"
        assert call.json()["type"] == "refund_authorized"
        assert "12.50" in call.json()["text"]  # the finance stakeholder reads English
    finally:
        hook.stop()
