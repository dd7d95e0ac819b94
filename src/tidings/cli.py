"""The ``tidings`` command line: thin, it calls services and prints what they return."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from tidings.config import Settings, store_branding
from tidings.intake import brokers
from tidings.templates.catalogue import CHANNEL_PARTS

console = Console()
T = TypeVar("T")
IMPORT_CHUNK = 1000


def _check(start: Callable[[Settings], T], settings: Settings) -> T:
    """Settings that cannot work (a provider without its credentials, a rules file that does
    not load) end the command with what to fix, not a traceback."""
    try:
        return start(settings)
    except ValueError as exc:
        raise click.ClickException(f"configuration: {exc}") from exc


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:
        raise click.ClickException(f"configuration: {exc}") from exc


@click.group()
@click.version_option(package_name="tidings")
def main() -> None:
    """Tidings: one governed pipeline from order events to delivered messages."""


@main.command()
def migrate() -> None:
    """Create or upgrade the database schema to the newest version."""
    from tidings.db.engine import create_disposable_engine
    from tidings.db.migrate import head_revision, upgrade

    settings = _settings()
    engine = create_disposable_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    console.print(f"database is at revision {head_revision()}")


@main.command()
@click.option("--host", default=None, help="Listen address (TIDINGS_HOST).")
@click.option("--port", type=int, default=None, help="Listen port (TIDINGS_PORT).")
@click.option("--no-worker", is_flag=True, help="Serve the API only; run `tidings worker` apart.")
@click.option("--demo", is_flag=True, help="Ensure a demo API key and demo data, print the key.")
def serve(host: str | None, port: int | None, no_worker: bool, demo: bool) -> None:
    """Run the API, the delivery worker and the pages in one process."""
    from tidings.runtime import check_providers
    from tidings.serve import serve as run_server

    settings = _settings()
    _check(check_providers, settings)
    run_server(
        settings,
        host=host or settings.host,
        port=port or settings.port,
        with_worker=not no_worker,
        demo=demo,
    )


@main.command()
def worker() -> None:
    """Run a delivery worker. Any number may share one PostgreSQL database."""
    from tidings.runtime import build_runtime

    runtime = _check(build_runtime, _settings())
    instance = runtime.new_worker()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, instance.stop)
        await instance.run()

    console.print(f"worker {instance.id} started")
    asyncio.run(run())
    runtime.close()


@main.command()
@click.option("--orders", type=int, default=300, show_default=True)
@click.option("--seed", type=int, default=1042, show_default=True)
def demo(orders: int, seed: int) -> None:
    """A finite run on a throw-away database: replay orders and refunds, deliver, summarize."""
    from tidings.demo_run import run_demo

    sys.exit(run_demo(orders=orders, seed=seed, console=console))


@main.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["csv", "jsonl"]),
    default=None,
    help="Defaults to the file's extension.",
)
@click.option(
    "--source",
    default="erp",
    show_default=True,
    help="Names the system the file comes from (the events' source is import:NAME).",
)
def import_file(path: Path, file_format: str | None, source: str) -> None:
    """Import stock levels, restock dates or returns from a CSV or JSON Lines file."""
    from tidings.intake.cloudevents_http import STRUCTURED
    from tidings.intake.files import read_lines
    from tidings.runtime import build_runtime

    chosen = file_format or ("jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "csv")
    lines = list(
        read_lines(
            path.read_text(encoding="utf-8-sig"), file_format=chosen, source=f"import:{source}"
        )
    )
    runtime = build_runtime(_settings())
    accepted = duplicates = 0
    refused: list[list[str]] = []
    try:
        with Progress(console=console) as progress:
            task = progress.add_task(f"importing {path.name}", total=len(lines))
            for start in range(0, len(lines), IMPORT_CHUNK):
                chunk = [line.item for line in lines[start : start + IMPORT_CHUNK]]
                for outcome in runtime.intake.store_items(
                    chunk,
                    content_type=STRUCTURED,
                    headers={},
                    actor=f"import:{source}",
                    channel="import",
                ):
                    if outcome.accepted is None:
                        error = outcome.item.error
                        refused.append(
                            [
                                str(outcome.item.index),
                                error.code if error else "",
                                error.detail if error else "",
                                outcome.reject_id or "",
                            ]
                        )
                    elif outcome.accepted.duplicate:
                        duplicates += 1
                    else:
                        accepted += 1
                progress.advance(task, len(chunk))
    finally:
        runtime.close()
    console.print(f"{accepted} accepted, {duplicates} already imported, {len(refused)} refused")
    if refused:
        _table(["line", "code", "detail", "reject"], refused)
        sys.exit(1)


@main.group()
def consume() -> None:
    """Read CloudEvents from a message broker; each message is acked once stored."""


consume.add_command(brokers.nats_command)
consume.add_command(brokers.amqp_command)


@main.group()
def templates() -> None:
    """Message templates."""


@templates.command("preview")
@click.argument("kind")
@click.option("--locale", default="en", show_default=True)
@click.option(
    "--channel",
    type=click.Choice(sorted(CHANNEL_PARTS)),
    default="email",
    show_default=True,
)
@click.option("--part", default=None, help="Show one part only (subject, txt, html, title).")
def templates_preview(kind: str, locale: str, channel: str, part: str | None) -> None:
    """Render KIND with its sample data, as the customer would get it."""
    from tidings.templates.preview import preview
    from tidings.templates.rendering import Renderer, RenderError
    from tidings.templates.store import TemplateNotFound, TemplateStore

    settings = _settings()
    renderer = Renderer(TemplateStore(override_dir=settings.templates_path))
    try:
        rendered = preview(renderer, kind, channel, locale, store_branding(settings))
    except (TemplateNotFound, RenderError, LookupError) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"[bold]{kind}[/] {channel} in {rendered.locale} (version {rendered.version})")
    for name, text in rendered.parts.items():
        if part in (None, name):
            console.rule(name)
            click.echo(text)


# --- API keys -----------------------------------------------------------------------------


@main.group()
def apikey() -> None:
    """Create, list and revoke API keys."""


@apikey.command("create")
@click.option("--name", required=True)
@click.option("--scopes", required=True, help="Comma-separated, e.g. events:write,inbox:read")
@click.option("--actor", default=None, help="Who acts with this key (defaults to apikey:NAME).")
def apikey_create(name: str, scopes: str, actor: str | None) -> None:
    from tidings.api.keys import UnknownScope, create_key
    from tidings.db.types import utcnow

    with _engine() as engine, engine.begin() as conn:
        try:
            key_id, key = create_key(
                conn,
                name=name,
                scopes=[s.strip() for s in scopes.split(",") if s.strip()],
                actor=actor,
                now=utcnow(),
            )
        except UnknownScope as exc:
            raise click.ClickException(str(exc)) from exc
    console.print(f"created key {key_id} ({name}). It is shown only this once:")
    click.echo(key)


@apikey.command("list")
def apikey_list() -> None:
    from tidings.api.keys import list_keys

    with _engine() as engine, engine.connect() as conn:
        rows = list_keys(conn)
    _table(
        ["id", "name", "actor", "scopes", "created", "revoked"],
        [
            [
                r["id"],
                r["name"],
                r["actor"],
                ",".join(r["scopes"]),
                _when(r["created_at"]),
                _when(r["revoked_at"]),
            ]
            for r in rows
        ],
    )


@apikey.command("revoke")
@click.argument("key_id")
def apikey_revoke(key_id: str) -> None:
    from tidings.api.keys import revoke_key
    from tidings.db.types import utcnow

    with _engine() as engine, engine.begin() as conn:
        if not revoke_key(conn, key_id, utcnow()):
            raise click.ClickException(f"no active key {key_id}")
    console.print(f"revoked {key_id}")


# --- rejects ------------------------------------------------------------------------------


@main.group()
def rejects() -> None:
    """Payloads that could not be accepted, kept with their reason."""


@rejects.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include replayed rejects.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def rejects_list(show_all: bool, limit: int, as_json: bool) -> None:
    from tidings.intake.rejects import list_rejects

    with _engine() as engine, engine.connect() as conn:
        rows = list_rejects(conn, status=None if show_all else "open", limit=limit)
    columns = ["id", "received", "code", "field", "detail", "status"]
    _emit(
        rows,
        as_json,
        columns,
        lambda r: [
            r["id"],
            _when(r["received_at"]),
            r["code"],
            r["field"] or "",
            r["detail"],
            r["status"],
        ],
    )


@rejects.command("replay")
@click.argument("reject_id")
def rejects_replay(reject_id: str) -> None:
    """Try a rejected payload again (after fixing what rejected it)."""
    from tidings.intake.intake import RejectNotFound
    from tidings.intake.webhooks import WebhookError
    from tidings.runtime import build_runtime

    runtime = build_runtime(_settings())
    try:
        outcomes = runtime.replay_reject(reject_id, actor="cli")
    except RejectNotFound as exc:
        raise click.ClickException(str(exc)) from exc
    except WebhookError as exc:
        raise click.ClickException(f"still rejected: {exc.detail}") from exc
    finally:
        runtime.close()
    refused = [o for o in outcomes if o.accepted is None]
    if refused and len(refused) == len(outcomes):
        error = refused[0].item.error
        detail = error.detail if error else "the request could not be read"
        raise click.ClickException(f"still rejected: {detail}")
    for outcome in outcomes:
        if outcome.accepted is not None:
            state = "a duplicate of a stored event" if outcome.accepted.duplicate else "accepted"
            console.print(f"{reject_id}: {state} as {outcome.accepted.event_id}")
        else:
            console.print(f"{reject_id}: one event still refused, kept as {outcome.reject_id}")


# --- dead letters -------------------------------------------------------------------------


@main.group()
def dlq() -> None:
    """Dead letters: messages that could not be delivered."""


@dlq.command("list")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def dlq_list(limit: int, as_json: bool) -> None:
    from tidings.delivery.dead_letters import dead_letters

    with _engine() as engine, engine.connect() as conn:
        rows = dead_letters(conn, limit=limit)
    columns = ["job", "notification", "channel", "kind", "attempts", "when", "reason"]
    _emit(
        rows,
        as_json,
        columns,
        lambda r: [
            r["id"],
            r["notification_id"],
            r["channel"],
            r["kind"],
            str(r["attempts"]),
            _when(r["updated_at"]),
            r["last_error"] or "",
        ],
    )


@dlq.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
def dlq_replay(ids: tuple[str, ...], replay_all: bool) -> None:
    """Queue dead letters again (by job or notification id, or --all)."""
    from tidings.db.types import utcnow
    from tidings.delivery.dead_letters import replay_dead

    if bool(ids) == replay_all:
        raise click.UsageError("give job or notification ids, or --all (not both)")
    with _engine() as engine, engine.begin() as conn:
        replayed = replay_dead(
            conn, job_ids=None if replay_all else list(ids), actor="cli", now=utcnow()
        )
    if ids and len(replayed) < len(ids):
        console.print(f"[yellow]{len(ids) - len(replayed)} id(s) were not dead letters[/]")
    console.print(f"queued {len(replayed)} dead letter(s) again")


# --- audit --------------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
def audit_verify() -> None:
    """Recompute the whole chain; exit 1 if any entry was altered, removed or reordered."""
    from tidings.audit.chain import verify

    with _engine() as engine, engine.connect() as conn:
        result = verify(conn)
    if result.ok:
        console.print(f"audit log intact: {result.entries} entries")
        return
    console.print(f"[red]audit log broken at entry {result.first_bad_seq}: {result.problem}[/]")
    sys.exit(1)


# --- helpers ------------------------------------------------------------------------------


@contextlib.contextmanager
def _engine() -> Any:
    from tidings.db.engine import create_disposable_engine

    engine = create_disposable_engine(_settings().database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def _emit(
    rows: list[dict[str, Any]],
    as_json: bool,
    columns: list[str],
    cells: Callable[[dict[str, Any]], list[str]],
) -> None:
    """Rows as JSON lines (for scripts) or as a table (for people)."""
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    _table(columns, [cells(row) for row in rows])


def _table(columns: list[str], rows: list[list[str]]) -> None:
    if not rows:
        console.print("nothing to show")
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main(prog_name=Path(sys.argv[0]).name)
