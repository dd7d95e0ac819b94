"""Wiring: build the long-lived objects once from settings and hand them to the edges."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine

from tidings.api.keys import KeyVerifier
from tidings.config import Settings, store_branding
from tidings.db.engine import create_db_engine
from tidings.delivery.providers.base import Provider
from tidings.delivery.providers.email_smtp import SmtpEmailProvider
from tidings.delivery.providers.in_app import InboxProvider
from tidings.delivery.retry import RetryPolicy
from tidings.delivery.sink import MailSink
from tidings.delivery.wakeup import Wakeup
from tidings.delivery.worker import Worker, WorkerConfig
from tidings.engine.rules import RulesError, RuleSet, load_rules
from tidings.engine.scheduled import run_due
from tidings.intake.intake import Intake, ItemOutcome, RejectNotFound
from tidings.intake.rejects import get_reject
from tidings.intake.service import DeliveryDefaults
from tidings.intake.sources.registry import builtin_adapters
from tidings.intake.webhooks import Strictness, Webhooks
from tidings.templates.rendering import Renderer
from tidings.templates.store import TemplateStore


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    rules: RuleSet
    renderer: Renderer
    intake: Intake
    webhooks: Webhooks
    keys: KeyVerifier
    wakeup: Wakeup
    sink: MailSink | None = None
    workers: list[Worker] = field(default_factory=list)

    def retry_policy(self) -> RetryPolicy:
        s = self.settings
        return RetryPolicy(s.retry_max_attempts, s.retry_base_seconds, s.retry_max_seconds)

    def providers(self) -> dict[str, Provider]:
        s = self.settings
        return {
            "email": SmtpEmailProvider(
                s.effective_smtp_url,
                sender=s.mail_from,
                domain=s.message_id_domain,
                connections=s.smtp_connections,
                timeout=s.smtp_timeout,
            ),
            "in_app": InboxProvider(),
        }

    def new_worker(self) -> Worker:
        s = self.settings
        worker = Worker(
            self.engine,
            providers=self.providers(),
            renderer=self.renderer,
            retry=self.retry_policy(),
            config=WorkerConfig(
                batch_size=s.worker_batch_size,
                poll_interval=s.worker_poll_interval,
                lease=timedelta(seconds=s.worker_lease_seconds),
                store=store_branding(s),
            ),
            wakeup=self.wakeup,
            on_tick=lambda: run_due(
                self.engine, rules=self.rules, max_attempts=s.retry_max_attempts, actor="engine"
            ),
        )
        self.workers.append(worker)
        return worker

    def replay_reject(self, reject_id: str, *, actor: str) -> list[ItemOutcome]:
        """Try a kept payload again through the path it first came in by."""
        with self.engine.connect() as conn:
            stored = get_reject(conn, reject_id)
        if stored is None:
            raise RejectNotFound(f"No reject with id {reject_id}. See `tidings rejects list`.")
        if stored["channel"] in self.webhooks.adapters:
            return self.webhooks.replay(stored, actor=actor)
        return [self.intake.replay(reject_id, actor=actor)]

    def close(self) -> None:
        self.engine.dispose()


def build_runtime(settings: Settings, *, engine: Engine | None = None) -> Runtime:
    engine = engine or create_db_engine(settings.database_url)
    rules = load_rules(settings.rules_path)
    store = TemplateStore(override_dir=settings.templates_path)
    _check_templates(rules, store)
    wakeup = Wakeup()
    intake = Intake(
        engine,
        rules,
        DeliveryDefaults(max_attempts=settings.retry_max_attempts),
        max_batch=settings.batch_max_events,
        on_commit=wakeup.notify,
    )
    webhooks = Webhooks(
        intake,
        builtin_adapters(),
        settings.webhook_secrets(),
        Strictness(settings.source_strictness),
    )
    return Runtime(
        settings=settings,
        engine=engine,
        rules=rules,
        renderer=Renderer(store),
        intake=intake,
        webhooks=webhooks,
        keys=KeyVerifier(engine),
        wakeup=wakeup,
    )


def _check_templates(rules: RuleSet, store: TemplateStore) -> None:
    """Fail at start, not at send time, when a rule names a message nobody wrote."""
    for rule in rules.rules:
        for channel in rule.channels:
            if not store.locales_for(rule.kind, channel):
                raise RulesError(
                    f"rule '{rule.id}' sends '{rule.kind}' on {channel}, but there is no "
                    f"template for it: add {rule.kind}/{channel}.en.* to the templates"
                )
