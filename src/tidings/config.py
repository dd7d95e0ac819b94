"""Settings: one object, read from ``TIDINGS_*`` environment variables and passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tidings.billing.gateways.routing import RoutingError, parse_routes

DEFAULT_VAR_DIR = Path("var")
KNOWN_PROVIDERS: dict[str, tuple[str, ...]] = {
    "email": ("smtp", "postmark"),
    "sms": ("twilio", "vonage"),
    "push": ("fcm", "webpush"),
}
KNOWN_GATEWAYS: tuple[str, ...] = ("sandbox", "stripe", "braintree")


class ConfigError(ValueError):
    """Settings that name a provider without what it needs."""


def required_setting(value: SecretStr | str | Path | None, name: str) -> str:
    """A provider named in the settings needs its credentials: say which one is missing."""
    if value is None or value == "":
        raise ConfigError(f"TIDINGS_{name} must be set for the configured provider")
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


def provider_names(value: str) -> list[str]:
    """A comma-separated provider list, in order, without blanks or repeats."""
    names: list[str] = []
    for name in (part.strip().lower() for part in value.split(",")):
        if name and name not in names:
            names.append(name)
    return names


class Settings(BaseSettings):
    """Everything an operator can set. See the README for each variable."""

    model_config = SettingsConfigDict(env_prefix="TIDINGS_", extra="ignore")

    var_dir: Path = Field(
        default=DEFAULT_VAR_DIR, description="Where local state lives (SQLite file, demo key)."
    )
    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_VAR_DIR / 'tidings.db'}",
        description="SQLAlchemy URL: sqlite:///path or postgresql://user@host/db.",
    )
    smtp_url: str | None = Field(
        default=None,
        description="smtp://[user:pass@]host:port (smtps:// for implicit TLS). "
        "Unset: the embedded mail sink started by `tidings serve`.",
    )
    smtp_sink_port: int = Field(default=2525, description="Port of the embedded mail sink.")
    smtp_connections: int = Field(default=4, ge=1, le=64, description="Pooled SMTP connections.")
    smtp_timeout: float = Field(default=10.0, gt=0)
    mail_from: str = Field(default="Tidings Demo Store <orders@tidings.localhost>")
    message_id_domain: str = Field(default="tidings.localhost")
    host: str = "127.0.0.1"
    port: int = 8000
    rules_path: Path | None = Field(
        default=None, description="YAML rules file; unset: the built-in rules."
    )
    templates_path: Path | None = Field(
        default=None, description="Directory of template overrides (same layout as built-in)."
    )
    store_name: str = "Tidings Demo Store"
    support_email: str = "support@tidings.localhost"
    store_logo_url: str | None = None
    store_primary_color: str = Field(default="#1f4e79", pattern=r"^#[0-9a-fA-F]{6}$")
    store_accent_color: str = Field(default="#e8f0f8", pattern=r"^#[0-9a-fA-F]{6}$")
    store_footer: str | None = None
    store_address: str | None = None

    worker_batch_size: int = Field(default=32, ge=1, le=1000)
    worker_poll_interval: float = Field(default=0.2, gt=0)
    worker_lease_seconds: float = Field(default=60.0, gt=0)
    retry_max_attempts: int = Field(default=8, ge=1)
    retry_base_seconds: float = Field(default=2.0, gt=0)
    retry_max_seconds: float = Field(default=900.0, gt=0)
    heartbeat_stale_seconds: float = Field(default=30.0, gt=0)

    batch_max_events: int = Field(default=1000, ge=1)
    backlog_high_water: int = Field(
        default=200_000,
        ge=0,
        description="Delivery jobs waiting past which bulk events get 429 (0: never).",
    )
    backlog_retry_after: int = Field(default=30, ge=1, description="Seconds, for 429s.")

    # Webhook sources: a source without a secret refuses its webhooks (503, kept).
    shopify_webhook_secret: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    aftership_webhook_secret: SecretStr | None = None
    easypost_webhook_secret: SecretStr | None = None
    returns_webhook_secret: SecretStr | None = None
    source_strictness: dict[str, Literal["strict", "lenient"]] = Field(
        default_factory=dict,
        description='JSON: {"shopify": "lenient", "shopify:acme.myshopify.com": "strict"}',
    )

    # --- Provider receipts, the suppression list, open and click tracking --------------
    # (delivery/receipts_api.py, delivery/tracking.py)
    public_url: str | None = Field(
        default=None,
        description="Where the internet reaches this service, e.g. https://tidings.example.com "
        "(plus any path prefix a proxy strips). Twilio signs the URL it calls, so receipts "
        "from Twilio are refused (503) until this is set; tracked links start with it.",
    )
    twilio_auth_token: SecretStr | None = Field(
        default=None, description="Twilio Auth Token: checks X-Twilio-Signature of callbacks."
    )
    postmark_webhook_user: str | None = Field(
        default=None, description="HTTP Basic user name set on the Postmark webhooks."
    )
    postmark_webhook_password: SecretStr | None = Field(
        default=None, description="HTTP Basic password set on the Postmark webhooks."
    )
    track_opens: bool = Field(default=False, description="Add an open pixel to HTML email.")
    track_clicks: bool = Field(
        default=False, description="Send links in HTML email through a signed redirect."
    )
    tracking_secret: SecretStr | None = Field(
        default=None, description="Key that signs tracked links (any long random string)."
    )

    @model_validator(mode="after")
    def _check_tracking(self) -> Settings:
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
                raise ValueError(
                    "TIDINGS_PUBLIC_URL must look like https://tidings.example.com[/prefix]"
                )
            self.public_url = self.public_url.rstrip("/")
        # Fail at start, not at send time: a tracked link needs a base and a signing key.
        if (self.track_opens or self.track_clicks) and not self.public_url:
            raise ValueError("TIDINGS_TRACK_OPENS/TIDINGS_TRACK_CLICKS need TIDINGS_PUBLIC_URL")
        if self.track_clicks and not self.tracking_secret:
            raise ValueError("TIDINGS_TRACK_CLICKS needs TIDINGS_TRACKING_SECRET")
        return self

    # --- end of provider receipts and tracking ------------------------------------------

    # --- Delivery providers (delivery/providers/, wired in runtime.py) -------------------
    email_providers: str = Field(
        default="smtp", description="Email providers, primary first: smtp, postmark."
    )
    sms_providers: str = Field(
        default="", description="SMS providers, primary first: twilio, vonage. Empty: no SMS."
    )
    push_providers: str = Field(
        default="", description="Push providers by device kind: fcm, webpush. Empty: no push."
    )
    http_timeout: float = Field(default=10.0, gt=0, description="Seconds per provider call.")
    provider_failure_threshold: int = Field(
        default=5, ge=1, description="Transient failures in a row that open a breaker."
    )
    provider_cooldown_seconds: float = Field(
        default=30.0, gt=0, description="How long an open breaker waits before a probe."
    )
    provider_rate_limits: dict[str, float] = Field(
        default_factory=dict, description='JSON, sends per second: {"twilio": 10}'
    )
    postmark_server_token: SecretStr | None = None
    postmark_message_stream: str = "outbound"
    postmark_api_url: str = "https://api.postmarkapp.com"
    twilio_account_sid: str | None = None
    twilio_from: str | None = Field(
        default=None, description="Sender number (E.164) or Messaging Service SID (MG...)."
    )
    twilio_api_url: str = "https://api.twilio.com"
    vonage_api_key: str | None = None
    vonage_api_secret: SecretStr | None = None
    vonage_from: str | None = None
    vonage_api_url: str = "https://rest.nexmo.com"
    sms_max_segments: int = Field(default=3, ge=1, le=10)
    fcm_service_account_file: Path | None = Field(
        default=None, description="Service-account JSON of the Firebase project."
    )
    fcm_api_url: str = "https://fcm.googleapis.com"
    vapid_private_key: SecretStr | None = Field(
        default=None, description="VAPID key for Web Push: PEM or base64url P-256 scalar."
    )
    vapid_subject: str = Field(default="mailto:support@tidings.localhost")
    webhook_signing_secret: SecretStr | None = Field(
        default=None, description="whsec_<base64> key that signs outbound webhooks."
    )

    @field_validator("email_providers", "sms_providers", "push_providers")
    @classmethod
    def _check_provider_list(cls, value: str, info: ValidationInfo) -> str:
        known = KNOWN_PROVIDERS[str(info.field_name).removesuffix("_providers")]
        names = provider_names(value)
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(
                f"unknown provider {', '.join(unknown)}; choose from {', '.join(known)}"
            )
        return ",".join(names)

    # --- end of delivery providers --------------------------------------------------------

    # --- Billing --------------------------------------------------------------------------
    billing_store: str = Field(default="default", description="Store the ledger accounts.")
    billing_gateways: str = Field(
        default="sandbox",
        description="Payment gateways: sandbox (simulates outcomes), stripe, braintree.",
    )
    billing_routes: str = Field(
        default="",
        description="Gateway per store and currency, for payments that name none and for "
        "retries through a secondary: lumen/EUR=stripe>braintree, */USD=braintree, *=stripe",
    )
    stripe_api_key: SecretStr | None = Field(default=None, description="Stripe secret key.")
    stripe_api_url: str = "https://api.stripe.com"
    braintree_public_key: str | None = None
    braintree_private_key: SecretStr | None = None
    braintree_api_url: str = "https://payments.braintree-api.com/graphql"

    @field_validator("billing_gateways")
    @classmethod
    def _check_gateways(cls, value: str) -> str:
        names = provider_names(value)
        unknown = [name for name in names if name not in KNOWN_GATEWAYS]
        if unknown:
            raise ValueError(
                f"unknown gateway {', '.join(unknown)}; choose from {', '.join(KNOWN_GATEWAYS)}"
            )
        if not names:
            raise ValueError("name at least one gateway")
        return ",".join(names)

    @model_validator(mode="after")
    def _check_billing(self) -> Settings:
        names = provider_names(self.billing_gateways)
        if "stripe" in names and self.stripe_api_key is None:
            raise ValueError("TIDINGS_BILLING_GATEWAYS names stripe: set TIDINGS_STRIPE_API_KEY")
        if "braintree" in names and (
            self.braintree_public_key is None or self.braintree_private_key is None
        ):
            raise ValueError(
                "TIDINGS_BILLING_GATEWAYS names braintree: set TIDINGS_BRAINTREE_PUBLIC_KEY "
                "and TIDINGS_BRAINTREE_PRIVATE_KEY"
            )
        try:
            routes = parse_routes(self.billing_routes)
        except RoutingError as exc:
            raise ValueError(f"TIDINGS_BILLING_ROUTES: {exc}") from None
        for route in routes:
            for name in filter(None, (route.primary, route.secondary)):
                if name not in names:
                    raise ValueError(
                        f"TIDINGS_BILLING_ROUTES: {route.store}/{route.currency} names gateway "
                        f"{name!r}, not in TIDINGS_BILLING_GATEWAYS ({', '.join(names)})"
                    )
        return self

    update_payment_url: str | None = Field(
        default=None,
        description="Where customers update their card, told in failed-payment messages; "
        "{order_id} and {payment_id} are filled in: https://shop.example/pay/{order_id}",
    )
    refund_approvals: str = Field(
        default='{"default": {"auto_approve_up_to": 5000, "second_approver_above": 50000}}',
        description='JSON per currency: {"EUR": {"auto_approve_up_to": 5000, '
        '"second_approver_above": 50000}, "default": {...}} (minor units)',
    )

    def webhook_secrets(self) -> dict[str, str | None]:
        names = ("shopify", "stripe", "aftership", "easypost", "returns")
        secrets: dict[str, str | None] = {}
        for name in names:
            value: SecretStr | None = getattr(self, f"{name}_webhook_secret")
            secrets[name] = value.get_secret_value() if value else None
        return secrets

    @field_validator("update_payment_url")
    @classmethod
    def _payment_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            filled = value.format(order_id="1042", payment_id="pay_1")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                "TIDINGS_UPDATE_PAYMENT_URL may use only {order_id} and {payment_id}, "
                f"not {exc}"
            ) from None
        if not filled.startswith(("https://", "http://")):
            raise ValueError("TIDINGS_UPDATE_PAYMENT_URL must be an http(s) address")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _check_smtp_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(
                "TIDINGS_SMTP_URL must look like smtp://host:port or smtps://host:port"
            )
        return value

    @property
    def effective_smtp_url(self) -> str:
        """Where mail goes: the configured server or the embedded sink."""
        return self.smtp_url or f"smtp://127.0.0.1:{self.smtp_sink_port}"

    @property
    def uses_embedded_sink(self) -> bool:
        return self.smtp_url is None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def store_branding(settings: Settings) -> dict[str, str | None]:
    """What messages show of the store: the ``store`` variable of every template."""
    return {
        "name": settings.store_name,
        "sender_name": settings.store_name,
        "support_email": settings.support_email,
        "logo_url": settings.store_logo_url,
        "primary_color": settings.store_primary_color,
        "accent_color": settings.store_accent_color,
        "footer": settings.store_footer,
        "address": settings.store_address,
    }
