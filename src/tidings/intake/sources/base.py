"""What a webhook source adapter does, and the errors it can report.

An adapter is pure: it gets the raw request (headers, body, the time it arrived) and the
source's secret, and returns CloudEvents as plain JSON-able dicts. Intake validates
those against the catalogue, stores them once and keeps anything refused in the reject
log, exactly as for ``POST /api/events``.

Idempotency: the CloudEvent ``id`` an adapter produces must be derived from the
business fact (``refund/re_123/authorized``), not from the delivery, so that a
redelivered webhook, or two provider events describing the same fact, store once.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    received_at: datetime
    query: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class SignatureError(Exception):
    """The request is not proven to come from the provider: answered 401, kept as a reject."""

    code = "invalid_signature"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class MappingError(Exception):
    """A genuine request that cannot become canonical events: answered 422, kept."""

    def __init__(self, code: str, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field


@dataclass(frozen=True, slots=True)
class MapOptions:
    """How strict to be. Lenient: a field the source may never send becomes null.

    Strict: fields a complete integration always sends (customer email, locale, ...) are
    required, and their absence is a MappingError naming the field.
    """

    strict: bool = False
    account: str | None = None  # the shop or account the request came from, if known


class SourceAdapter(abc.ABC):
    #: route name: POST /api/intake/<name>; secret from TIDINGS_<NAME>_WEBHOOK_SECRET
    name: str

    @abc.abstractmethod
    def verify(self, request: WebhookRequest, secret: str) -> None:
        """Raise SignatureError unless the request is signed with ``secret``.

        Time tolerances are measured against ``request.received_at``.
        """

    def account(self, request: WebhookRequest) -> str | None:
        """The shop/account this request is for (used to pick strictness), if the
        provider says so in a header."""
        return None

    @abc.abstractmethod
    def map(self, request: WebhookRequest, options: MapOptions) -> list[dict[str, Any]]:
        """CloudEvents (structured-mode dicts) for this request; [] for a topic that
        carries nothing customers need (answered 200, not stored). Raise MappingError
        for a payload that cannot be understood."""
