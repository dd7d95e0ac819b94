"""The command line as an operator uses it: rejects, dead letters, keys, audit."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from tests.support.events import JORDAN, refund_authorized
from tests.support.smtp import SmtpServer
from tests.support.work import drain
from tidings.cli import main
from tidings.db.schema import audit_log, delivery_jobs, events
from tidings.runtime import Runtime

STRUCTURED = {"Content-Type": "application/cloudevents+json"}


@pytest.fixture
def cli(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("TIDINGS_DATABASE_URL", runtime.settings.database_url)
    monkeypatch.setenv("TIDINGS_SMTP_URL", runtime.settings.effective_smtp_url)
    return CliRunner()


def test_rejects_list_and_replay_after_the_cause_is_fixed(
    cli: CliRunner,
    client: TestClient,
    runtime: Runtime,
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The store sends a type that this deployment's rules file does not know yet...
    event = refund_authorized("5", customer=JORDAN)
    event["type"] = "refund.authorised"
    response = client.post("/api/events", content=json.dumps(event), headers=STRUCTURED)
    reject_id = response.json()["reject_id"]

    listed = cli.invoke(main, ["rejects", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = [json.loads(line) for line in listed.output.splitlines()]
    assert (row["id"], row["code"], row["field"]) == (reject_id, "unknown_event_type", "type")

    still_bad = cli.invoke(main, ["rejects", "replay", reject_id])
    assert still_bad.exit_code == 1
    assert "still rejected" in still_bad.output

    # ...an operator fixes the stored payload's cause (here: the source mapping) and replays.
    from tidings.db.schema import rejects

    with runtime.engine.begin() as conn:
        conn.execute(
            update(rejects)
            .where(rejects.c.id == reject_id)
            .values(payload=json.dumps({**event, "type": "refund.authorized"}))
        )
    replayed = cli.invoke(main, ["rejects", "replay", reject_id])
    assert replayed.exit_code == 0, replayed.output
    assert "accepted" in replayed.output
    with runtime.engine.connect() as conn:
        assert conn.execute(select(events.c.ce_id)).scalars().all() == [event["id"]]
    assert cli.invoke(main, ["rejects", "list", "--json"]).output == ""
    assert cli.invoke(main, ["rejects", "replay", "rej_unknown"]).exit_code == 1


def test_dlq_list_and_replay_all(
    cli: CliRunner, client: TestClient, runtime: Runtime, smtp_server: SmtpServer
) -> None:
    smtp_server.stop()
    client.post(
        "/api/events",
        content=json.dumps(refund_authorized("6", customer=JORDAN)),
        headers=STRUCTURED,
    )
    drain(runtime)
    listed = cli.invoke(main, ["dlq", "list", "--json"])
    assert listed.exit_code == 0
    [row] = [json.loads(line) for line in listed.output.splitlines()]
    assert (row["channel"], row["kind"], row["attempts"]) == ("email", "refund_authorized", 4)
    assert "SMTP server unavailable" in row["last_error"]
    assert "email" in cli.invoke(main, ["dlq", "list"]).output

    smtp_server.start()
    assert cli.invoke(main, ["dlq", "replay"]).exit_code == 2  # ids or --all
    replayed = cli.invoke(main, ["dlq", "replay", "--all"])
    assert replayed.exit_code == 0, replayed.output
    assert "queued 1 dead letter(s) again" in replayed.output
    drain(runtime)
    assert [m["To"] for m in smtp_server.parsed()] == [JORDAN["email"]]
    with runtime.engine.connect() as conn:
        assert conn.execute(select(delivery_jobs.c.status)).scalars().all().count("dead") == 0


def test_apikey_create_list_revoke(cli: CliRunner, client: TestClient) -> None:
    created = cli.invoke(
        main, ["apikey", "create", "--name", "shop", "--scopes", "events:write,inbox:read"]
    )
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("tdg_")
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/customers/x/inbox", headers=auth).status_code == 200
    listed = cli.invoke(main, ["apikey", "list"])
    assert "shop" in listed.output
    assert key not in listed.output  # shown once, never again

    bad = cli.invoke(main, ["apikey", "create", "--name", "x", "--scopes", "everything"])
    assert bad.exit_code == 1
    assert "unknown scope" in bad.output

    key_id = created.output.split("created key ")[1].split()[0]
    assert cli.invoke(main, ["apikey", "revoke", key_id]).exit_code == 0
    client.app.state.runtime.keys._cache.clear()  # as after the cache lifetime
    assert client.get("/api/customers/x/inbox", headers=auth).status_code == 401


def test_audit_verify_detects_tampering(
    cli: CliRunner, client: TestClient, runtime: Runtime
) -> None:
    client.post(
        "/api/events",
        content=json.dumps(refund_authorized("7", customer=JORDAN)),
        headers=STRUCTURED,
    )
    drain(runtime)
    intact = cli.invoke(main, ["audit", "verify"])
    assert intact.exit_code == 0
    assert "intact" in intact.output
    with runtime.engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(actor="someone-else"))
    broken = cli.invoke(main, ["audit", "verify"])
    assert broken.exit_code == 1
    assert "broken at entry 2" in broken.output


@pytest.mark.slow
def test_demo_runs_to_the_end_and_counts_what_it_sent() -> None:
    # Held messages (an in-transit scan waiting for a newer one) are a final state for a
    # finite run; the demo must not wait for them.
    result = CliRunner().invoke(main, ["demo", "--orders", "30"])
    assert result.exit_code == 0, result.output
    received = next(line for line in result.output.splitlines() if line.startswith("mail received"))
    assert int(received.split()[-1]) > 0
    assert "did not reach a final state" not in result.output


def test_templates_preview_renders_the_french_refund_email(cli: CliRunner) -> None:
    shown = cli.invoke(
        main, ["templates", "preview", "refund_authorized", "--locale", "fr", "--channel", "email"]
    )
    assert shown.exit_code == 0, shown.output
    assert "refund_authorized email in fr" in shown.output
    # The sample's 1250 minor units of EUR, written the French way: comma, no-break space.
    assert "12,50\u00a0€" in shown.output
    assert "€12.50" not in shown.output
    assert "Bonjour Camille Durand," in shown.output

    subject = cli.invoke(
        main,
        ["templates", "preview", "refund_authorized", "--locale", "fr", "--part", "subject"],
    )
    assert subject.exit_code == 0, subject.output
    assert subject.output.splitlines()[-1] == (
        "Votre remboursement de 12,50\u00a0€ pour la commande n°\u00a01042 est en route"
    )


def test_templates_preview_of_an_unknown_kind_fails_and_names_the_known_ones(
    cli: CliRunner,
) -> None:
    result = cli.invoke(main, ["templates", "preview", "refund_authorised", "--locale", "fr"])
    assert result.exit_code == 1
    assert "no sample data for kind 'refund_authorised'" in result.output
    assert "refund_authorized" in result.output  # the kinds that do exist


def test_templates_preview_on_an_unknown_channel_fails_and_lists_the_channels(
    cli: CliRunner,
) -> None:
    result = cli.invoke(main, ["templates", "preview", "refund_authorized", "--channel", "fax"])
    assert result.exit_code == 2  # a usage error
    assert "Invalid value for '--channel'" in result.output
    assert "'email'" in result.output
    assert "'sms'" in result.output


def test_templates_preview_in_a_locale_without_templates_says_it_fell_back(
    cli: CliRunner,
) -> None:
    # Customers in a locale the store has no templates for get the default language; the
    # preview shows them that message and says which locale it is in.
    result = cli.invoke(main, ["templates", "preview", "refund_authorized", "--locale", "zz"])
    assert result.exit_code == 0, result.output
    assert "refund_authorized email in en" in result.output
    assert "€12.50" in result.output
    assert "Bonjour" not in result.output
