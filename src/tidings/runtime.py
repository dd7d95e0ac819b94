"""Wiring: build the long-lived objects once from settings and hand them to the edges."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import Engine

from tidings.api.keys import KeyVerifier
from tidings.billing.approvals import ApprovalPolicy
from tidings.billing.context import Billing
from tidings.billing.gateways import loop as gateway_loop
from tidings.billing.gateways.configured import configured_gateways
from tidings.billing.gateways.recorded import RecordedPayments
from tidings.billing.service import Emitter
from tidings.billing.submission import BillingTick
from tidings.config import ConfigError, Settings, provider_names, required_setting, store_branding
from tidings.db.engine import create_db_engine
from tidings.delivery.channels import Channel, Route
from tidings.delivery.inbox import InboxSignal
from tidings.delivery.providers.base import Provider
from tidings.delivery.providers.email_postmark import PostmarkEmailProvider
from tidings.delivery.providers.email_smtp import SmtpEmailProvider
from tidings.delivery.providers.http import new_client
from tidings.delivery.providers.in_app import InboxProvider
from tidings.delivery.providers.push_fcm import FcmPushProvider
from tidings.delivery.providers.push_webpush import WebPushProvider
from tidings.delivery.providers.sms_twilio import TwilioSmsProvider
from tidings.delivery.providers.sms_vonage import VonageSmsProvider
from tidings.delivery.providers.webhook_http import SignedWebhookProvider
from tidings.delivery.providers.webhook_slack import SlackWebhookProvider
from tidings.delivery.receipts import REJECT_CHANNEL as RECEIPT_REJECTS_CHANNEL
from tidings.delivery.resilience import CircuitBreaker, RateLimit
from tidings.delivery.retry import RetryPolicy
from tidings.delivery.sink import MailSink
from tidings.delivery.tracking import Tracking
from tidings.delivery.wakeup import Wakeup
from tidings.delivery.worker import Worker, WorkerConfig
from tidings.engine.rules import RulesError, RuleSet, load_rules
from tidings.engine.scheduled import run_due
from tidings.intake.admission import Admission
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
    billing: Billing
    sink: MailSink | None = None
    workers: list[Worker] = field(default_factory=list)
    # Wakes the live inbox streams served by this process when its worker writes messages.
    inbox_signal: InboxSignal = field(default_factory=InboxSignal)

    def retry_policy(self) -> RetryPolicy:
        s = self.settings
        return RetryPolicy(s.retry_max_attempts, s.retry_base_seconds, s.retry_max_seconds)

    def channels(self, client: httpx.AsyncClient) -> dict[str, Channel]:
        """Every channel this deployment can send on, its providers primary first."""
        s = self.settings
        email = [self._email_provider(name, client) for name in provider_names(s.email_providers)]
        channels = {
            "email": Channel("email", [self._route(p) for p in email]),
            "in_app": Channel("in_app", [Route(InboxProvider())]),
            "webhook": Channel(
                "webhook",
                [self._route(p) for p in self._webhook_providers(client)],
            ),
        }
        sms = [self._sms_provider(name, client) for name in provider_names(s.sms_providers)]
        if sms:
            channels["sms"] = Channel("sms", [self._route(p) for p in sms])
        push = [self._push_provider(name, client) for name in provider_names(s.push_providers)]
        if push:
            channels["push"] = Channel("push", [self._route(p) for p in push])
        return channels

    def _route(self, provider: Provider) -> Route:
        s = self.settings
        return Route(
            provider,
            CircuitBreaker(s.provider_failure_threshold, s.provider_cooldown_seconds),
            RateLimit(s.provider_rate_limits.get(provider.name, 0.0), burst=1.0),
        )

    def _email_provider(self, name: str, client: httpx.AsyncClient) -> Provider:
        s = self.settings
        if name == "postmark":
            return PostmarkEmailProvider(
                client,
                server_token=required_setting(s.postmark_server_token, "POSTMARK_SERVER_TOKEN"),
                sender=s.mail_from,
                domain=s.message_id_domain,
                message_stream=s.postmark_message_stream,
                base_url=s.postmark_api_url,
            )
        return SmtpEmailProvider(
            s.effective_smtp_url,
            sender=s.mail_from,
            domain=s.message_id_domain,
            connections=s.smtp_connections,
            timeout=s.smtp_timeout,
        )

    def _sms_provider(self, name: str, client: httpx.AsyncClient) -> Provider:
        s = self.settings
        if name == "twilio":
            return TwilioSmsProvider(
                client,
                account_sid=required_setting(s.twilio_account_sid, "TWILIO_ACCOUNT_SID"),
                auth_token=required_setting(s.twilio_auth_token, "TWILIO_AUTH_TOKEN"),
                sender=required_setting(s.twilio_from, "TWILIO_FROM"),
                status_callback=f"{s.public_url}/api/receipts/twilio" if s.public_url else None,
                base_url=s.twilio_api_url,
                max_segments=s.sms_max_segments,
            )
        return VonageSmsProvider(
            client,
            api_key=required_setting(s.vonage_api_key, "VONAGE_API_KEY"),
            api_secret=required_setting(s.vonage_api_secret, "VONAGE_API_SECRET"),
            sender=required_setting(s.vonage_from, "VONAGE_FROM"),
            base_url=s.vonage_api_url,
            max_segments=s.sms_max_segments,
        )

    def _push_provider(self, name: str, client: httpx.AsyncClient) -> Provider:
        s = self.settings
        if name == "fcm":
            path = required_setting(s.fcm_service_account_file, "FCM_SERVICE_ACCOUNT_FILE")
            account = json.loads(Path(path).read_text(encoding="utf-8"))
            return FcmPushProvider(client, service_account=account, base_url=s.fcm_api_url)
        return WebPushProvider(
            client,
            vapid_private_key=required_setting(s.vapid_private_key, "VAPID_PRIVATE_KEY"),
            vapid_subject=s.vapid_subject,
        )

    def _webhook_providers(self, client: httpx.AsyncClient) -> list[Provider]:
        secret = self.settings.webhook_signing_secret
        providers: list[Provider] = [SlackWebhookProvider(client)]
        if secret is not None:
            providers.append(SignedWebhookProvider(client, secret=secret.get_secret_value()))
        return providers

    def new_worker(self) -> Worker:
        s = self.settings
        client = new_client(timeout=s.http_timeout)
        # Approved refunds go to the gateway between batches (billing/submission.py).
        billing_tick = BillingTick(self.engine, self.billing)
        worker = Worker(
            self.engine,
            channels=self.channels(client),
            clients=[client],
            on_inbox=self.inbox_signal.notify,
            tracking=Tracking.from_settings(s),
            renderer=self.renderer,
            retry=self.retry_policy(),
            config=WorkerConfig(
                batch_size=s.worker_batch_size,
                poll_interval=s.worker_poll_interval,
                lease=timedelta(seconds=s.worker_lease_seconds),
                store=store_branding(s),
            ),
            wakeup=self.wakeup,
            on_tick=lambda: (
                run_due(
                    self.engine, rules=self.rules, max_attempts=s.retry_max_attempts, actor="engine"
                )
                + billing_tick()
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
        if stored["channel"] == RECEIPT_REJECTS_CHANNEL:
            # Replaying would accept a receipt whose signature never checked out.
            raise RejectNotFound(
                f"Reject {reject_id} is a provider receipt; it cannot be replayed from here. "
                "Fix the provider's credentials: Twilio and Postmark send failed callbacks again."
            )
        if stored["channel"] in self.webhooks.adapters:
            return self.webhooks.replay(stored, actor=actor)
        return [self.intake.replay(reject_id, actor=actor)]

    def close(self) -> None:
        # The gateways' pooled clients live on the gateway loop (billing/gateways/loop.py).
        gateway_loop.call(self.billing.gateways.aclose())
        self.engine.dispose()


# What each provider needs before a worker can use it.
PROVIDER_SETTINGS: dict[str, tuple[str, ...]] = {
    "postmark": ("postmark_server_token",),
    "twilio": ("twilio_account_sid", "twilio_auth_token", "twilio_from"),
    "vonage": ("vonage_api_key", "vonage_api_secret", "vonage_from"),
    "fcm": ("fcm_service_account_file",),
    "webpush": ("vapid_private_key",),
}


def check_providers(settings: Settings) -> None:
    """Fail at start, not at the first send, when a named provider lacks its settings."""
    named = [
        *provider_names(settings.email_providers),
        *provider_names(settings.sms_providers),
        *provider_names(settings.push_providers),
    ]
    for name in named:
        for field_name in PROVIDER_SETTINGS.get(name, ()):
            if getattr(settings, field_name) in (None, ""):
                raise ConfigError(f"TIDINGS_{field_name.upper()} must be set to send with {name}")
    path = settings.fcm_service_account_file
    if "fcm" in named and path is not None and not Path(path).is_file():
        raise ConfigError(f"TIDINGS_FCM_SERVICE_ACCOUNT_FILE: no file at {path}")


def build_runtime(settings: Settings, *, engine: Engine | None = None) -> Runtime:
    check_providers(settings)
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
        admission=Admission(
            engine,
            rules,
            high_water=settings.backlog_high_water,
            retry_after=settings.backlog_retry_after,
        ),
    )
    webhooks = Webhooks(
        intake,
        builtin_adapters(),
        settings.webhook_secrets(),
        Strictness(settings.source_strictness),
    )
    billing = Billing(
        store=settings.billing_store,
        gateways=configured_gateways(settings, recorded=RecordedPayments(engine)),
        approvals=ApprovalPolicy.from_settings(settings.refund_approvals),
        emitter=Emitter(rules, DeliveryDefaults(max_attempts=settings.retry_max_attempts)),
        update_payment_url=settings.update_payment_url,
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
        billing=billing,
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
