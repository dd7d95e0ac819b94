"""Braintree through its GraphQL API (https://graphql.braintreepayments.com/).

Followed: the guides "Making API Calls" (one endpoint; POST ``{"query", "variables"}``;
``Authorization: Basic base64(public_key:private_key)``; a dated ``Braintree-Version``),
"Error handling" (``errors[].extensions.errorClass`` / ``legacyCode``, HTTP 200 even then)
and "Searching for Objects" (cursor pages); the reference of ``node``, ``refundTransaction``,
``chargePaymentMethod``, ``Refund``, ``ProcessorDeclinedEvent``, ``GatewayRejectedEvent``,
``SearchTimestampInput``; the processor response codes of https://developer.paypal.com/
braintree/docs/reference/general/processor-responses/authorization-responses.

- Payment ids are transaction ids (GraphQL global ids, not legacy ids). Amounts are decimal
  strings in major units, converted exactly with the currency's exponent from Babel (JPY 0,
  KWD 3); a value finer than the currency allows is refused, never rounded.
- ``lookup_capture``: the amount of a SUBMITTED_FOR_SETTLEMENT, SETTLING, SETTLED or
  SETTLEMENT_PENDING transaction (else ``payment_not_captured``); refunded sums its refunds
  not in a failed status. Refund status: SETTLED succeeded; SUBMITTED_FOR_SETTLEMENT,
  SETTLING, SETTLEMENT_PENDING, AUTHORIZED pending; SETTLEMENT_DECLINED, FAILED,
  GATEWAY_REJECTED, PROCESSOR_DECLINED, VOIDED failed.
- Braintree has no idempotency key: ours is the ``orderId`` of the refund or charge. Before
  submitting, the adapter looks for what an earlier attempt made (a refund of the
  transaction with that orderId; a transaction found by ``orderId: {is: key}``) and answers
  it, or refuses with ``idempotency_error`` when the amount differs.
- ``retry_payment`` charges the original transaction's vaulted ``paymentMethod`` (none:
  ``payment_method_missing``) on its merchant account. Captured or AUTHORIZED is approved.
  PROCESSOR_DECLINED, or a VALIDATION error whose legacyCode is a processor response code
  (2000-3999), is declined with the code mapped by ``PROCESSOR_DECLINES`` (unknown:
  ``generic_decline``); GATEWAY_REJECTED maps its ``gatewayRejectionReason``; FAILED is
  ``processing_error``. The network is ``brandCode`` lower-cased (AMERICAN_EXPRESS: amex).
- ``activity(day)``: transactions created that UTC day in a captured status (in, by
  transaction id) and refunds created that day (out, by orderId; failed in a failed
  status). SearchTimestampInput's upper bound is exclusive plus one minute, so results
  are filtered again on ``createdAt``. Captures are dated by transaction creation, which
  for a charge is when it was captured.
- Errors: HTTP 401/403, errorClass AUTHENTICATION/AUTHORIZATION and other unknown classes
  are permanent; NOT_FOUND is ``resource_missing``; VALIDATION carries its legacyCode
  (91521 refund too large; 91506 not settled yet, which Braintree wants voided instead).
  HTTP 408/429/5xx and INTERNAL, SERVICE_AVAILABILITY, RESOURCE_LIMIT are transient. A
  refund or charge sent without a complete answer raises GatewayTimeout; a connect failure
  (nothing sent) or a read without an answer is a transient GatewayError. Messages never
  carry the keys.
"""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from babel.numbers import get_currency_precision

from tidings.billing.gateways.base import (
    Capture,
    Direction,
    Gateway,
    GatewayError,
    GatewayRefund,
    GatewayTimeout,
    Movement,
    PaymentAttempt,
    RefundStatus,
)
from tidings.billing.gateways.declines import DeclineClassifier
from tidings.delivery.providers.http import DEFAULT_CONNECT_TIMEOUT, new_client

PRODUCTION_ENDPOINT = "https://payments.braintree-api.com/graphql"
SANDBOX_ENDPOINT = "https://payments.sandbox.braintree-api.com/graphql"
BRAINTREE_VERSION = "2019-01-01"
PAGE_SIZE = 50

CAPTURED = frozenset({"SUBMITTED_FOR_SETTLEMENT", "SETTLING", "SETTLED", "SETTLEMENT_PENDING"})
APPROVED = CAPTURED | {"AUTHORIZED"}
FAILED = frozenset(
    {"SETTLEMENT_DECLINED", "FAILED", "GATEWAY_REJECTED", "PROCESSOR_DECLINED", "VOIDED"}
)
PERMANENT_CLASSES = {"AUTHENTICATION": "authentication", "AUTHORIZATION": "authorization"}
TRANSIENT_CLASSES = frozenset({"INTERNAL", "SERVICE_AVAILABILITY", "RESOURCE_LIMIT"})

# Processor response legacy codes → Stripe decline codes (see declines.py).
PROCESSOR_DECLINES: dict[str, str] = {
    "2000": "do_not_honor",
    "2001": "insufficient_funds",
    "2002": "card_velocity_exceeded",
    "2004": "expired_card",
    "2005": "invalid_number",
    "2010": "incorrect_cvc",
    "2012": "lost_card",
    "2013": "stolen_card",
    "2014": "fraudulent",
    "2038": "generic_decline",
    "2044": "call_issuer",
    "2046": "generic_decline",
    "3000": "processing_error",
}
GATEWAY_REJECTIONS: dict[str, str] = {
    "FRAUD": "fraudulent",
    "RISK_THRESHOLD": "fraudulent",
    "CVV": "incorrect_cvc",
    "AVS": "incorrect_zip",
    "AVS_AND_CVV": "incorrect_cvc",
    "DUPLICATE": "duplicate_transaction",
}
NETWORKS = {"AMERICAN_EXPRESS": "amex", "UNION_PAY": "unionpay", "DINERS": "diners"}

_MONEY = "amount { value currencyCode }"
_REFUND = f"id status orderId createdAt {_MONEY}"
_CARD = "... on CreditCardDetails { brandCode }"
_CHARGE = (
    f"id status orderId createdAt {_MONEY} paymentMethodSnapshot {{ {_CARD} }} "
    "statusHistory { ... on ProcessorDeclinedEvent { processorResponse { legacyCode message } }"
    " ... on GatewayRejectedEvent { gatewayRejectionReason } }"
)
TRANSACTION_QUERY = (
    "query Transaction($id: ID!) { node(id: $id) { __typename ... on Transaction { "
    f"id status merchantAccountId {_MONEY} refunds {{ {_REFUND} }} "
    f"paymentMethod {{ id details {{ {_CARD} }} }} }} }} }}"
)
REFUND_QUERY = (
    f"query Refund($id: ID!) {{ node(id: $id) {{ __typename ... on Refund {{ {_REFUND} }} }} }}"
)
REFUND_MUTATION = (
    "mutation Refund($input: RefundTransactionInput!) { refundTransaction(input: $input) "
    f"{{ refund {{ {_REFUND} }} }} }}"
)
CHARGE_MUTATION = (
    "mutation Charge($input: ChargePaymentMethodInput!) { chargePaymentMethod(input: $input) "
    f"{{ transaction {{ {_CHARGE} }} }} }}"
)
_PAGE = "pageInfo { hasNextPage endCursor } edges { node { %s } }"
SEARCH_TRANSACTIONS = (
    "query Transactions($input: TransactionSearchInput!, $first: Int, $after: String) "
    "{ search { transactions(input: $input, first: $first, after: $after) { "
    + _PAGE % _CHARGE
    + " } } }"
)
SEARCH_REFUNDS = (
    "query Refunds($input: RefundSearchInput!, $first: Int, $after: String) "
    "{ search { refunds(input: $input, first: $first, after: $after) { "
    + _PAGE % _REFUND
    + " } } }"
)


class BraintreeGateway(Gateway):
    name = "braintree"

    def __init__(
        self,
        public_key: str,
        private_key: str,
        *,
        endpoint: str = PRODUCTION_ENDPOINT,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        declines: DeclineClassifier | None = None,
    ) -> None:
        token = base64.b64encode(f"{public_key}:{private_key}".encode()).decode()
        self._headers = {
            "Authorization": f"Basic {token}",
            "Braintree-Version": BRAINTREE_VERSION,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._endpoint = endpoint
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, DEFAULT_CONNECT_TIMEOUT))
        self._owns_client = client is None
        self._client = client or new_client(timeout=timeout)
        if declines is not None:
            self.declines = declines

    async def aclose(self) -> None:
        """Close the HTTP client if this gateway made it (a shared one is the caller's)."""
        if self._owns_client:
            await self._client.aclose()

    # ------------------------------------------------------------------ Gateway

    async def lookup_capture(self, payment_id: str) -> Capture:
        tx = await self._transaction(payment_id)
        if tx["status"] not in CAPTURED:
            raise self._refused(
                f"transaction is {tx['status']}, not captured", code="payment_not_captured"
            )
        currency = _currency(tx)
        refunded = sum(
            _minor(r["amount"]["value"], currency)
            for r in tx.get("refunds") or []
            if r.get("status") not in FAILED
        )
        amount = _minor(tx["amount"]["value"], currency)
        return Capture(payment_id=payment_id, amount=amount, currency=currency, refunded=refunded)

    async def refund(
        self, *, payment_id: str, amount: int, currency: str, idempotency_key: str
    ) -> GatewayRefund:
        tx = await self._transaction(payment_id)
        self._check_currency(tx, currency)
        earlier = _refund_with_key(tx, idempotency_key)
        if earlier is not None:
            self._check_same(earlier, amount, currency, idempotency_key)
            return _view(earlier)
        variables = {
            "input": {
                "transactionId": payment_id,
                "refund": {"amount": _major(amount, currency), "orderId": idempotency_key},
            }
        }
        data, errors = await self._call(
            REFUND_MUTATION, variables, operation="refund", key=idempotency_key
        )
        self._raise_for(errors)
        return _view(_path(data, "refundTransaction", "refund"))

    async def refund_status(self, gateway_refund_id: str) -> GatewayRefund:
        data, errors = await self._call(REFUND_QUERY, {"id": gateway_refund_id})
        self._raise_for(errors)
        node = data.get("node")
        if not isinstance(node, dict) or node.get("__typename") != "Refund":
            raise self._refused("no such refund", code="resource_missing")
        return _view(node)

    async def find_refund(self, *, payment_id: str, idempotency_key: str) -> GatewayRefund | None:
        refund = _refund_with_key(await self._transaction(payment_id), idempotency_key)
        return None if refund is None else _view(refund)

    async def retry_payment(
        self, *, payment_id: str, amount: int, currency: str, idempotency_key: str
    ) -> PaymentAttempt:
        tx = await self._transaction(payment_id)
        self._check_currency(tx, currency)
        method = tx.get("paymentMethod") or {}
        if not method.get("id"):
            raise self._refused(
                "the transaction has no vaulted payment method", code="payment_method_missing"
            )
        fallback = _network(method.get("details"))
        search = {"input": {"orderId": {"is": idempotency_key}}, "first": PAGE_SIZE}
        data, errors = await self._call(SEARCH_TRANSACTIONS, search)
        self._raise_for(errors)
        edges = _path(data, "search", "transactions").get("edges") or []
        if edges:
            earlier = edges[0]["node"]
            self._check_same(earlier, amount, currency, idempotency_key)
            return self._attempt(earlier, [], fallback)
        charge: dict[str, Any] = {"amount": _major(amount, currency), "orderId": idempotency_key}
        if tx.get("merchantAccountId"):
            charge["merchantAccountId"] = tx["merchantAccountId"]
        variables = {"input": {"paymentMethodId": method["id"], "transaction": charge}}
        data, errors = await self._call(
            CHARGE_MUTATION, variables, operation="retry_payment", key=idempotency_key
        )
        made = (data.get("chargePaymentMethod") or {}).get("transaction")
        if made is None and not any(_processor_code(e) for e in errors):
            self._raise_for(errors)
            raise self._transient("braintree answered the charge without a transaction")
        return self._attempt(made, errors, fallback)

    async def activity(self, day: date) -> list[Movement]:
        start = datetime.combine(day, time(), tzinfo=UTC)
        window = {
            "greaterThanOrEqualTo": start.isoformat().replace("+00:00", "Z"),
            "lessThanOrEqualTo": (start + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        }
        moved = [
            _movement("in", tx["id"], tx)
            for tx in await self._search(SEARCH_TRANSACTIONS, "transactions", window, day)
            if tx.get("status") in CAPTURED
        ]
        refunds = await self._search(SEARCH_REFUNDS, "refunds", window, day)
        # A refund made elsewhere without an orderId is known by its own id.
        return moved + [_movement("out", r.get("orderId") or r["id"], r) for r in refunds]

    # ------------------------------------------------------------------ internals

    async def _search(
        self, query: str, field: str, window: dict[str, str], day: date
    ) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            variables = {"input": {"createdAt": window}, "first": PAGE_SIZE, "after": after}
            data, errors = await self._call(query, variables)
            self._raise_for(errors)
            page = _path(data, "search", field)
            for edge in page.get("edges") or []:
                node = edge["node"]
                if _created_on(node) == day:
                    nodes.append(node)
            info = page.get("pageInfo") or {}
            after = info.get("endCursor")
            if not info.get("hasNextPage") or not after:
                return nodes

    async def _transaction(self, payment_id: str) -> dict[str, Any]:
        data, errors = await self._call(TRANSACTION_QUERY, {"id": payment_id})
        self._raise_for(errors)
        node = data.get("node")
        if not isinstance(node, dict) or node.get("__typename") != "Transaction":
            raise self._refused("no such transaction", code="resource_missing")
        return node

    async def _call(
        self,
        query: str,
        variables: dict[str, Any],
        *,
        operation: str | None = None,
        key: str | None = None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """POST one operation. ``operation`` names a money-moving one: a request that may
        have been sent without an answer is then a GatewayTimeout."""
        what = operation or "read"
        try:
            response = await self._client.post(
                self._endpoint,
                json={"query": query, "variables": variables},
                headers=self._headers,
                timeout=self._timeout,
            )
        except (httpx.ConnectTimeout, httpx.ConnectError, httpx.PoolTimeout) as exc:
            raise self._transient(f"braintree unreachable ({what}): {type(exc).__name__}") from exc
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            if operation is None:
                raise self._transient(f"braintree gave no answer: {type(exc).__name__}") from exc
            raise GatewayTimeout(
                f"braintree {operation} got no answer ({type(exc).__name__}); outcome unknown",
                operation=operation,
                idempotency_key=key,
                gateway=self.name,
            ) from exc
        status = response.status_code
        body = _json(response)
        errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
        if status in (401, 403):
            raise self._refused(
                f"braintree answered HTTP {status}: the API keys were refused",
                code="authentication" if status == 401 else "authorization",
            )
        if status in (408, 429) or status >= 500:
            raise self._transient(f"braintree answered HTTP {status} ({what})")
        if not response.is_success:
            self._raise_for(errors)
            raise self._refused(f"braintree answered HTTP {status} ({what})", code=f"http_{status}")
        if "data" not in body and not errors:
            raise self._transient(f"braintree answered HTTP {status} without a GraphQL body")
        data = body.get("data")
        return (data if isinstance(data, dict) else {}), errors

    def _raise_for(self, errors: list[dict[str, Any]]) -> None:
        if not errors:
            return
        error = errors[0]
        ext = error.get("extensions") or {}
        kind = str(ext.get("errorClass") or "")
        message = f"braintree {kind or 'error'}: {error.get('message') or 'no message'}"
        if kind in TRANSIENT_CLASSES:
            raise self._transient(message)
        if kind == "NOT_FOUND":
            raise self._refused(message, code="resource_missing")
        code = PERMANENT_CLASSES.get(kind) or ext.get("legacyCode") or kind.lower() or None
        raise self._refused(message, code=str(code) if code else None)

    def _attempt(
        self, tx: dict[str, Any] | None, errors: list[dict[str, Any]], fallback: str | None
    ) -> PaymentAttempt:
        network = _network((tx or {}).get("paymentMethodSnapshot")) or fallback
        status = (tx or {}).get("status")
        if status in APPROVED:
            return PaymentAttempt(outcome="approved", network=network)
        code = "generic_decline"
        legacy = next((c for c in map(_processor_code, errors) if c), None)
        for event in (tx or {}).get("statusHistory") or []:
            legacy = legacy or ((event.get("processorResponse") or {}).get("legacyCode"))
            reason = event.get("gatewayRejectionReason")
            if status == "GATEWAY_REJECTED" and reason:
                code = GATEWAY_REJECTIONS.get(str(reason), "generic_decline")
        if status == "FAILED":
            code = "processing_error"
        elif legacy:
            code = PROCESSOR_DECLINES.get(str(legacy), "generic_decline")
        return PaymentAttempt(outcome="declined", decline_code=code, network=network)

    def _check_currency(self, tx: dict[str, Any], currency: str) -> None:
        if _currency(tx) != currency.upper():
            raise self._refused(
                f"the transaction is in {_currency(tx)}, not {currency.upper()}",
                code="currency_mismatch",
            )

    def _check_same(self, made: dict[str, Any], amount: int, currency: str, key: str) -> None:
        if _minor(made["amount"]["value"], currency.upper()) != amount:
            raise self._refused(
                f"orderId {key!r} was used for an amount of {made['amount']['value']}",
                code="idempotency_error",
            )

    def _refused(self, message: str, *, code: str | None) -> GatewayError:
        return GatewayError(message, permanent=True, code=code, gateway=self.name)

    def _transient(self, message: str) -> GatewayError:
        return GatewayError(message, permanent=False, gateway=self.name)


def _movement(direction: Direction, reference: str, node: dict[str, Any]) -> Movement:
    currency = _currency(node)
    failed = direction == "out" and node.get("status") in FAILED
    return Movement(
        direction, reference, _minor(node["amount"]["value"], currency), currency, failed
    )


def _view(refund: dict[str, Any]) -> GatewayRefund:
    status = str(refund.get("status") or "")
    mapped: RefundStatus = "succeeded" if status == "SETTLED" else "pending"
    reason = None
    if status in FAILED:
        mapped, reason = "failed", f"braintree reports the refund {status}"
    return GatewayRefund(status=mapped, gateway_refund_id=refund["id"], failure_reason=reason)


def _refund_with_key(tx: dict[str, Any], key: str) -> dict[str, Any] | None:
    mine = [r for r in tx.get("refunds") or [] if r.get("orderId") == key]
    # A live one first: a failed attempt and its repeat can share the key.
    mine.sort(key=lambda r: r.get("status") in FAILED)
    return mine[0] if mine else None


def _processor_code(error: dict[str, Any]) -> str | None:
    ext = error.get("extensions") or {}
    code = str(ext.get("legacyCode") or "")
    if ext.get("errorClass") == "VALIDATION" and code.isdigit() and 2000 <= int(code) < 4000:
        return code
    return None


def _network(details: Any) -> str | None:
    brand = details.get("brandCode") if isinstance(details, dict) else None
    if not isinstance(brand, str) or not brand:
        return None
    return NETWORKS.get(brand.upper(), brand.lower())


def _currency(node: dict[str, Any]) -> str:
    return str((node.get("amount") or {}).get("currencyCode") or "").upper()


def _minor(value: Any, currency: str) -> int:
    try:
        scaled = Decimal(str(value)).scaleb(get_currency_precision(currency))
    except InvalidOperation:
        scaled = Decimal("NaN")
    if not scaled.is_finite() or scaled != scaled.to_integral_value():
        raise GatewayError(
            f"braintree amount {value!r} is not a whole number of {currency} minor units",
            permanent=True,
            code="invalid_amount",
            gateway="braintree",
        )
    return int(scaled)


def _major(amount: int, currency: str) -> str:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 1:
        raise ValueError(f"amounts are whole minor units of at least 1, got {amount!r}")
    return format(Decimal(amount).scaleb(-get_currency_precision(currency.upper())), "f")


def _created_on(node: dict[str, Any]) -> date | None:
    try:
        return datetime.fromisoformat(str(node.get("createdAt"))).astimezone(UTC).date()
    except ValueError:
        return None


def _path(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        data = data.get(key) or {}
    if not data:
        raise GatewayError(
            f"braintree answered without {'.'.join(keys)}", permanent=False, gateway="braintree"
        )
    return data


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
