"""Signed webhooks from providers: verify, map with the source's adapter, then intake.

A request that fails verification or mapping is kept whole (body and headers) in the
reject log under the source's name, so that it can be replayed through the same adapter
once the cause is fixed. Replay never skips a signature check the request did not pass:
it verifies again, against the time the request first arrived.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from tidings.db.types import utcnow
from tidings.intake import rejects
from tidings.intake.cloudevents_http import STRUCTURED, parse_document
from tidings.intake.intake import Intake, ItemOutcome
from tidings.intake.sources.base import (
    MapOptions,
    MappingError,
    SignatureError,
    SourceAdapter,
    WebhookRequest,
)

# Never stored with a reject: credentials of our own API or of a proxy in front of it.
_DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
VERIFIED_MARK = "x-tidings-signature-verified"
QUERY_MARK = "x-tidings-query"  # the request's query string, kept with the reject
INTERNAL_MARKS = frozenset({VERIFIED_MARK, QUERY_MARK})
UNVERIFIED_CODES = frozenset({SignatureError.code, "source_not_configured"})


class WebhookError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        reject_id: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.reject_id = reject_id
        self.field = field


@dataclass(frozen=True, slots=True)
class Strictness:
    """Per source and per account: ``{"shopify": "lenient", "shopify:acme": "strict"}``."""

    levels: Mapping[str, str]

    def strict(self, source: str, account: str | None) -> bool:
        level = self.levels.get(f"{source}:{account}") if account else None
        return (level or self.levels.get(source) or "lenient") == "strict"


class Webhooks:
    def __init__(
        self,
        intake: Intake,
        adapters: Mapping[str, SourceAdapter],
        secrets: Mapping[str, str | None],
        strictness: Strictness,
    ) -> None:
        self.intake = intake
        self.adapters = adapters
        self.secrets = secrets
        self.strictness = strictness

    def receive(
        self,
        source: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        query: Mapping[str, str] | None = None,
        actor: str | None = None,
    ) -> list[ItemOutcome]:
        adapter = self.adapters.get(source)
        if adapter is None:
            raise WebhookError(
                404,
                "unknown_source",
                f"No webhook source '{source}'. Known: {', '.join(sorted(self.adapters))}.",
            )
        # Our own bookkeeping headers are never taken from a sender: a forged "verified"
        # mark must not let a replay skip the signature check.
        lowered = {
            k.lower(): v
            for k, v in headers.items()
            if k.lower() not in _DROPPED_HEADERS and k.lower() not in INTERNAL_MARKS
        }
        request = WebhookRequest(
            headers=lowered, body=body, received_at=utcnow(), query=dict(query or {})
        )
        return self._process(adapter, request, verify=True, actor=actor or f"source:{source}")

    def replay(self, stored: Mapping[str, Any], *, actor: str) -> list[ItemOutcome]:
        """Run a kept webhook through its adapter again (see the module docstring)."""
        adapter = self.adapters[str(stored["channel"])]
        headers = dict(stored["headers"])
        verified = headers.pop(VERIFIED_MARK, None) == "1"
        query = dict(parse_qsl(headers.pop(QUERY_MARK, "")))
        received: datetime = stored["received_at"]
        request = WebhookRequest(
            headers=headers,
            body=str(stored["payload"]).encode(),
            received_at=received,
            query=query,
        )
        return self._process(
            adapter, request, verify=not verified, actor=actor, reject_id=str(stored["id"])
        )

    def _process(
        self,
        adapter: SourceAdapter,
        request: WebhookRequest,
        *,
        verify: bool,
        actor: str,
        reject_id: str | None = None,
    ) -> list[ItemOutcome]:
        name = adapter.name
        verified = not verify
        try:
            if verify:
                secret = self.secrets.get(name)
                if not secret:
                    raise WebhookError(
                        503,
                        "source_not_configured",
                        f"Webhooks from {name} are not accepted yet: set "
                        f"TIDINGS_{name.upper()}_WEBHOOK_SECRET and restart.",
                    )
                try:
                    adapter.verify(request, secret)
                except SignatureError as exc:
                    raise WebhookError(401, exc.code, exc.detail) from exc
                verified = True
            account = adapter.account(request)
            options = MapOptions(strict=self.strictness.strict(name, account), account=account)
            try:
                documents = adapter.map(request, options)
            except MappingError as exc:
                raise WebhookError(422, exc.code, exc.detail, field=exc.field) from exc
        except WebhookError as error:
            error.reject_id = self._keep(request, name, error, verified, reject_id)
            raise
        items = [parse_document(index, document) for index, document in enumerate(documents)]
        outcomes = self.intake.store_admitted(
            items, content_type=STRUCTURED, headers={}, actor=actor
        )
        if reject_id is not None and not any(outcome.deferred for outcome in outcomes):
            with self.intake.engine.begin() as conn:
                rejects.mark_replayed(conn, reject_id, utcnow())
        return outcomes

    def _keep(
        self,
        request: WebhookRequest,
        name: str,
        error: WebhookError,
        verified: bool,
        reject_id: str | None,
    ) -> str:
        with self.intake.engine.begin() as conn:
            if reject_id is not None:
                rejects.update_reason(conn, reject_id, code=error.code, detail=error.detail)
                return reject_id
            headers = dict(request.headers)
            if verified:
                headers[VERIFIED_MARK] = "1"
            if request.query:
                headers[QUERY_MARK] = urlencode(sorted(request.query.items()))
            return rejects.record(
                conn,
                channel=name,
                code=error.code,
                detail=error.detail,
                field=error.field,
                payload=request.body.decode("utf-8", errors="replace"),
                content_type=request.header("content-type"),
                headers=headers,
                source=name,
                now=request.received_at,
            )
