"""The delivery worker: claim due jobs in batches, render, send, record every attempt."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Engine, update
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from tidings.db import notify
from tidings.db.dialect import upsert
from tidings.db.ids import new_id
from tidings.db.schema import workers
from tidings.db.types import utcnow
from tidings.delivery import queue
from tidings.delivery.channels import Channel, ProvidersPaused, Sent
from tidings.delivery.providers.base import InvalidRecipientError, OutboundMessage, SendError
from tidings.delivery.retry import GiveUp, RetryPolicy
from tidings.delivery.tracking import Tracking, rewrite_html
from tidings.delivery.wakeup import Wakeup
from tidings.templates.rendering import RenderedMessage, Renderer, RenderError
from tidings.templates.store import TemplateNotFound

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 5.0
DATABASE_RETRY_SECONDS = 1.0
RECORD_TRIES = 5
# Delivery loops per worker: each claims and sends its own batches.
PIPELINES = 2


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    batch_size: int
    poll_interval: float
    lease: timedelta
    store: Mapping[str, Any]


class Worker:
    def __init__(
        self,
        engine: Engine,
        *,
        channels: Mapping[str, Channel],
        renderer: Renderer,
        retry: RetryPolicy,
        config: WorkerConfig,
        wakeup: Wakeup | None = None,
        on_tick: Callable[[], int] | None = None,
        clients: Sequence[httpx.AsyncClient] = (),
        on_inbox: Callable[[list[str]], None] | None = None,
        tracking: Tracking | None = None,
    ) -> None:
        self.engine = engine
        self.channels = channels
        self._clients = list(clients)
        # Told which customers got in-app messages, once they are committed.
        self.on_inbox = on_inbox
        self.tracking = tracking
        self.renderer = renderer
        self.retry = retry
        self.config = config
        self.wakeup = wakeup or Wakeup()
        # Scheduled engine work (digests, restock waves) that workers run between batches.
        self.on_tick = on_tick
        self.id = new_id("wrk")
        self._rng = random.Random()  # noqa: S311 - jitter, not security
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.wakeup.notify()  # an idle worker stops now, not at its next poll

    async def run(self) -> None:
        self.wakeup.bind()
        await asyncio.to_thread(self._heartbeat, started=True)
        beat = asyncio.create_task(self._beat())
        # PostgreSQL: woken by other processes' commits, not only by this one's intake.
        listener = (
            asyncio.create_task(notify.listen(self.engine, self.wakeup.notify))
            if notify.listens(self.engine)
            else None
        )
        # Scheduled engine and billing work runs beside delivery, not between its batches,
        # and two delivery loops overlap: while one waits for the database (claiming,
        # recording), the other's sends are on the wire.
        loops = [asyncio.create_task(self._loop(self._tick_once))] if self.on_tick else []
        loops += [asyncio.create_task(self._loop(self._deliver_once)) for _ in range(PIPELINES)]
        try:
            await asyncio.gather(*loops)
        finally:
            for task in loops:
                task.cancel()
            beat.cancel()
            if listener is not None:
                listener.cancel()
            await self.close()
            await asyncio.to_thread(self._heartbeat, stopped=True)

    async def _loop(self, step: Callable[[], Awaitable[int]]) -> None:
        while not self._stopping.is_set():
            try:
                done = await step()
            except SQLAlchemyError:
                # The database is away (restart, failover): leased jobs stay leased
                # and come back when their lease runs out; keep trying, gently.
                log.exception("worker %s cannot reach the database; retrying", self.id)
                await asyncio.sleep(DATABASE_RETRY_SECONDS)
                continue
            if done == 0:
                await self.wakeup.wait(self.config.poll_interval)

    async def _tick_once(self) -> int:
        ticked = await asyncio.to_thread(self.on_tick) if self.on_tick else 0
        if ticked:
            self.wakeup.notify()  # a tick may have queued messages (digests, waves)
        return ticked

    async def close(self) -> None:
        """Release the providers' connections and the shared HTTP client."""
        for channel in self.channels.values():
            await channel.close()
        for client in self._clients:
            await client.aclose()
        self._clients.clear()

    async def run_once(self) -> int:
        """Run the scheduled work once, then claim and process one batch; returns how many
        jobs (and timers) it handled."""
        ticked = await asyncio.to_thread(self.on_tick) if self.on_tick else 0
        return ticked + await self._deliver_once()

    async def _deliver_once(self) -> int:
        """Claim and process one batch; returns how many jobs it handled."""
        jobs = await asyncio.to_thread(self._claim)
        if not jobs:
            return 0
        outcomes = await asyncio.gather(*(self._deliver(job) for job in jobs))
        await asyncio.to_thread(self._record, outcomes)
        if self.on_inbox is not None:
            written = [o.inbox["customer_id"] for o in outcomes if o.inbox and o.outcome == "sent"]
            if written:
                self.on_inbox(written)
        return len(jobs)

    def _claim(self) -> list[queue.ClaimedJob]:
        with self.engine.begin() as conn:
            return queue.claim(
                conn,
                worker_id=self.id,
                limit=self.config.batch_size,
                now=utcnow(),
                lease=self.config.lease,
            )

    def _record(self, outcomes: list[queue.JobOutcome]) -> None:
        # Sends already happened: losing their outcomes would mean sending them again
        # after the lease runs out, so a passing database error is retried here.
        for attempt in range(RECORD_TRIES):
            try:
                with self.engine.begin() as conn:
                    queue.record(conn, outcomes, worker_id=self.id, now=utcnow())
                return
            except OperationalError:
                if attempt == RECORD_TRIES - 1:
                    raise
                log.warning("recording outcomes failed; trying again", exc_info=True)
                time.sleep(0.2 * 2**attempt)

    async def _deliver(self, job: queue.ClaimedJob) -> queue.JobOutcome:
        started = utcnow()
        if job.blocked is not None:
            return queue.JobOutcome(job, "suppressed", started, utcnow(), error=job.blocked)
        channel = self.channels.get(job.channel)
        if channel is None:
            return self._failed(
                job, started, None, f"no provider is configured for {job.channel}", True
            )
        try:
            rendered = self.renderer.render(
                job.kind, job.channel, job.locale, job.time_zone, self._context(job)
            )
        except (RenderError, TemplateNotFound) as exc:
            return self._failed(job, started, None, str(exc), True)
        if job.extra.get("merged"):
            try:
                rendered = self._with_merged(job, rendered)
            except (RenderError, TemplateNotFound) as exc:
                return self._failed(job, started, None, str(exc), True)
        if self.tracking is not None and "html" in rendered.parts:
            html = rewrite_html(rendered.parts["html"], job.notification_id, tracking=self.tracking)
            rendered = replace(rendered, parts={**rendered.parts, "html": html})
        message = OutboundMessage(
            notification_id=job.notification_id,
            channel=job.channel,
            kind=job.kind,
            address=job.recipient or "",
            customer_id=job.customer.get("id"),
            rendered=rendered,
            priority=job.priority,
        )
        if job.channel == "push":
            return await self._push(job, channel, message, started)
        try:
            sent = await channel.send(message, via=_webhook_provider(job))
        except ProvidersPaused as exc:
            now = utcnow()
            return queue.JobOutcome(
                job,
                "paused",
                started,
                now,
                provider=exc.provider,
                error=str(exc),
                retry_at=now + timedelta(seconds=exc.retry_after or 0.0),
            )
        except SendError as exc:
            return self._failed(
                job, started, exc.provider, str(exc), exc.permanent, exc.retry_after
            )
        if sent.passed_over:
            log.info(
                "notification %s went by %s after %s",
                job.notification_id,
                sent.provider,
                ", ".join(sent.passed_over),
            )
        return self._sent(job, started, sent, rendered)

    def _with_merged(self, job: queue.ClaimedJob, rendered: RenderedMessage) -> RenderedMessage:
        """One text for the carrier and the messages merged into it: each update's short
        line, oldest first (SMS), or its title under the carrier's body (push)."""
        base = self._context(job)
        lines = []
        for rider in job.extra["merged"]:
            context = {**base, "data": rider["data"], "event": rider["event"]}
            part = self.renderer.render(
                rider["kind"], job.channel, job.locale, job.time_zone, context
            ).parts
            lines.append(part["txt_short"] if job.channel == "sms" else part["title"])
        parts = dict(rendered.parts)
        if job.channel == "sms":
            text = "\n".join([parts.get("txt_short") or parts["txt"], *lines])
            parts.update(txt=text, txt_short=text)
        else:
            parts["txt"] = "\n".join([parts["txt"], *lines])
        return replace(rendered, parts=parts)

    async def _push(
        self,
        job: queue.ClaimedJob,
        channel: Channel,
        message: OutboundMessage,
        started: datetime,
    ) -> queue.JobOutcome:
        """A push goes to every active device of the customer. It is sent when one device
        took it; a device its service says is gone is removed; if no device could take it
        for a passing reason, it is tried again later."""
        if not job.devices:
            return self._failed(job, started, None, "the customer has no active device", True)
        results = await asyncio.gather(
            *(
                channel.send(replace(message, address=address), via=kind)
                for kind, address in job.devices
            ),
            return_exceptions=True,
        )
        sent = [r for r in results if isinstance(r, Sent)]
        errors = [r for r in results if isinstance(r, SendError)]
        unexpected = [r for r in results if isinstance(r, BaseException) and r not in errors]
        if unexpected:
            raise unexpected[0]
        gone = tuple(
            (str(job.customer.get("id")), address, str(result))
            for (_, address), result in zip(job.devices, results, strict=True)
            if isinstance(result, InvalidRecipientError)
        )
        if sent:
            return replace(self._sent(job, started, sent[0], message.rendered), dead_devices=gone)
        transient = [e for e in errors if not e.permanent]
        error = "; ".join(str(e) for e in errors)
        outcome = self._failed(
            job,
            started,
            errors[0].provider if errors else None,
            error,
            not transient,
            min((e.retry_after or 0.0 for e in transient), default=None),
        )
        return replace(outcome, dead_devices=gone)

    def _sent(
        self,
        job: queue.ClaimedJob,
        started: datetime,
        sent: Sent,
        rendered: RenderedMessage,
    ) -> queue.JobOutcome:
        return queue.JobOutcome(
            job=job,
            outcome="sent",
            started_at=started,
            finished_at=utcnow(),
            provider=sent.provider,
            provider_message_id=sent.receipt.provider_message_id,
            rendered={
                "locale": rendered.locale,
                "version": rendered.version,
                "parts": rendered.parts,
            },
            inbox=sent.receipt.inbox,
        )

    def _failed(
        self,
        job: queue.ClaimedJob,
        started: Any,
        provider: str | None,
        error: str,
        permanent: bool,
        retry_after: float | None = None,
    ) -> queue.JobOutcome:
        now = utcnow()
        decision = self.retry.decide(
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            permanent=permanent,
            error=error,
            now=now,
            rng=self._rng,
            not_before=retry_after,
        )
        if isinstance(decision, GiveUp):
            log.warning("notification %s is a dead letter: %s", job.notification_id, error)
            return queue.JobOutcome(
                job, "dead", started, now, provider=provider, error=decision.reason
            )
        return queue.JobOutcome(
            job, "retry", started, now, provider=provider, error=error, retry_at=decision.at
        )

    def _context(self, job: queue.ClaimedJob) -> dict[str, Any]:
        return {
            "recipient": {
                "name": job.customer.get("name"),
                "email": job.customer.get("email"),
                "locale": job.locale,
                "time_zone": job.time_zone,
            },
            "order": job.order,
            "data": job.event["data"],
            "event": {"id": job.event["id"], "type": job.event["type"], "time": job.event["time"]},
            "store": dict(self.config.store),
            **job.extra,
        }

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await asyncio.to_thread(self._heartbeat)
            except Exception:  # a missed heartbeat must not stop deliveries
                log.exception("worker heartbeat failed")

    def _heartbeat(self, *, started: bool = False, stopped: bool = False) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            if started:
                stmt = upsert(conn, workers).values(
                    id=self.id,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=now,
                    heartbeat_at=now,
                    stopped_at=None,
                )
                conn.execute(stmt.on_conflict_do_nothing())
            else:
                conn.execute(
                    update(workers)
                    .where(workers.c.id == self.id)
                    .values(heartbeat_at=now, stopped_at=now if stopped else None)
                )


SLACK_HOSTS = frozenset({"hooks.slack.com"})


def _webhook_provider(job: queue.ClaimedJob) -> str | None:
    """A webhook address picks its provider: Slack's incoming hooks speak their own format;
    every other URL gets the signed JSON post."""
    if job.channel != "webhook":
        return None
    host = urlsplit(job.recipient or "").hostname or ""
    return "slack" if host in SLACK_HOSTS else "webhook"
