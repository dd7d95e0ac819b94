"""What every provider offers the worker, and how send failures are classified."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from tidings.delivery.sms_segments import choose_text
from tidings.templates.rendering import RenderedMessage


class SendError(Exception):
    """A failed send. ``permanent`` failures (a refused address) are never retried."""

    permanent = False

    def __init__(
        self, message: str, *, retry_after: float | None = None, provider: str | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        # Which provider failed; set by the channel that tried it.
        self.provider = provider


class TransientSendError(SendError):
    permanent = False


class PermanentSendError(SendError):
    permanent = True


class InvalidRecipientError(PermanentSendError):
    """The address can never work (an unregistered push token, a number that cannot receive
    SMS): the send fails at once and the address is removed from the customer's devices."""


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    notification_id: str
    channel: str
    kind: str
    address: str
    customer_id: str | None
    rendered: RenderedMessage
    # critical | transactional | bulk: providers with a delivery priority use it.
    priority: str = "transactional"

    @property
    def message_id(self) -> str:
        """Stable across retries and crashes: how a receiving end recognizes a repeat."""
        return f"{self.notification_id}.{self.channel}"


@dataclass(frozen=True, slots=True)
class SendReceipt:
    provider_message_id: str | None
    # A row to store with the outcome, in the same transaction (the in-app inbox).
    inbox: dict[str, Any] | None = None


class Provider(abc.ABC):
    """One provider of one channel. Subclass the channel's base (``EmailProvider``, ...)."""

    name: str
    channel: str

    @abc.abstractmethod
    async def send(self, message: OutboundMessage) -> SendReceipt:
        """Send one message or raise SendError."""

    async def close(self) -> None:  # noqa: B027 - most providers hold nothing to release
        """Release connections."""


class EmailProvider(Provider):
    channel = "email"


class SmsProvider(Provider):
    channel = "sms"
    max_segments = 3

    def text(self, message: OutboundMessage) -> str:
        """The text to send: the full variant if it fits ``max_segments``, else the short
        one, else the short one cut at a word (``sms_segments.choose_text``)."""
        try:
            return choose_text(message.rendered.parts, max_segments=self.max_segments)
        except ValueError as exc:
            raise PermanentSendError(f"no SMS text to send: {exc}") from exc


class PushProvider(Provider):
    channel = "push"


class InAppProvider(Provider):
    channel = "in_app"


class WebhookProvider(Provider):
    channel = "webhook"
