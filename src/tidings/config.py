"""Settings: one object, read from ``TIDINGS_*`` environment variables and passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_VAR_DIR = Path("var")


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

    def webhook_secrets(self) -> dict[str, str | None]:
        names = ("shopify", "stripe", "aftership", "easypost", "returns")
        secrets: dict[str, str | None] = {}
        for name in names:
            value: SecretStr | None = getattr(self, f"{name}_webhook_secret")
            secrets[name] = value.get_secret_value() if value else None
        return secrets

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
