"""CloudEvents from message brokers: ``tidings consume nats`` and ``tidings consume amqp``.

Each consumer stores what it reads through the same intake as ``POST /api/events`` and
acknowledges a message only once that is committed; see ``nats`` and ``amqp`` for what each
reads and how it settles messages, and ``common`` for what they share. The broker clients are
imported only when a consumer runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from tidings.intake.brokers.common import Tally
    from tidings.intake.intake import Intake

BATCH_HELP = "Messages stored together, in one transaction."
RETRY_HELP = "Seconds before a message that could not be stored comes again."


def _intake() -> Any:
    from tidings.config import Settings
    from tidings.runtime import build_runtime

    try:
        return build_runtime(Settings())
    except ValueError as exc:
        raise click.ClickException(f"configuration: {exc}") from exc


def _consume(banner: str, run: Callable[[Intake], Coroutine[Any, Any, Tally]]) -> None:
    """What both commands do around their broker's loop: wiring, logging, errors, summary."""
    from tidings.intake.brokers.common import ConsumeError

    runtime = _intake()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    click.echo(banner)
    try:
        tally = asyncio.run(run(runtime.intake))
    except ConsumeError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        runtime.close()
    click.echo(f"stopped: {tally.acked} stored, {tally.rejected} rejected")


_batch = click.option(
    "--batch", type=click.IntRange(1, 1000), default=50, show_default=True, help=BATCH_HELP
)
_retry_delay = click.option(
    "--retry-delay", type=click.FloatRange(0), default=5.0, show_default=True, help=RETRY_HELP
)


@click.command("nats")
@click.option("--stream", required=True, help="The JetStream stream to read.")
@click.option("--subject", default=None, help="Only these subjects, e.g. 'orders.>'.")
@click.option("--durable", default="tidings", show_default=True, help="Durable consumer name.")
@click.option(
    "--url", default=None, help="Server URL (TIDINGS_NATS_URL, else nats://127.0.0.1:4222)."
)
@_batch
@click.option(
    "--max-ack-pending",
    type=click.IntRange(1),
    default=200,
    show_default=True,
    help="Messages in flight, unacknowledged, at most.",
)
@click.option(
    "--ack-wait",
    type=click.FloatRange(1),
    default=30.0,
    show_default=True,
    help="Seconds before an unacknowledged message is delivered again.",
)
@_retry_delay
def nats_command(**options: Any) -> None:
    """Read CloudEvents from a NATS JetStream stream; ack each once it is stored."""
    from tidings.intake.brokers import nats

    settings = nats.Options(**options)
    _consume(
        f"consuming stream {settings.stream} as {settings.durable}",
        lambda intake: nats.consume(intake, settings, on_signals=True),
    )


@click.command("amqp")
@click.option("--queue", required=True, help="The RabbitMQ queue to read.")
@click.option(
    "--url",
    default=None,
    help="Server URL (TIDINGS_AMQP_URL, else amqp://guest:guest@127.0.0.1:5672/).",
)
@_batch
@click.option(
    "--prefetch",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Messages held unacknowledged, at most (never fewer than --batch).",
)
@_retry_delay
def amqp_command(**options: Any) -> None:
    """Read CloudEvents from a RabbitMQ queue; ack each once it is stored."""
    from tidings.intake.brokers import amqp

    settings = amqp.Options(**options)
    _consume(
        f"consuming queue {settings.queue}",
        lambda intake: amqp.consume(intake, settings, on_signals=True),
    )
