"""What every provider offers the worker, and how send failures are classified."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from tidings.templates.rendering import RenderedMessage


class SendError(Exception):
    """A failed send. ``permanent`` failures (a refused address) are never retried."""

    permanent = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientSendError(SendError):
    permanent = False


class PermanentSendError(SendError):
    permanent = True


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    notification_id: str
    channel: str
    kind: str
    address: str
    customer_id: str | None
    rendered: RenderedMessage


@dataclass(frozen=True, slots=True)
class SendReceipt:
    provider_message_id: str | None
    # A row to store with the outcome, in the same transaction (the in-app inbox).
    inbox: dict[str, Any] | None = None


class Provider(abc.ABC):
    name: str
    channel: str

    @abc.abstractmethod
    async def send(self, message: OutboundMessage) -> SendReceipt:
        """Send one message or raise SendError."""

    async def close(self) -> None:  # noqa: B027 - most providers hold nothing to release
        """Release connections."""
