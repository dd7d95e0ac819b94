"""An in-memory stand-in for Braintree's GraphQL endpoint, served by ``HttpStub``.

It checks what the real endpoint requires (POST, ``Authorization: Basic
base64(public:private)``, a dated ``Braintree-Version``, a JSON body with ``query``) and
dispatches on the root field the query selects (``refundTransaction``,
``chargePaymentMethod``, ``search { transactions | refunds }``, ``node``); there is no
GraphQL parser, so every answer carries the whole object, whatever the selection.

Answers follow the documented shapes: HTTP 200 with ``data`` and ``errors[]`` carrying
``extensions.errorClass`` and ``legacyCode``, HTTP 401 for refused keys. Searches use
SearchTimestampInput as documented (upper bound exclusive, plus one minute) and cap pages
at ``page_limit``, with opaque ``endCursor`` values.

Tests drive it: ``add_transaction`` (a capture or an authorization), ``decline`` (the
processor response codes of the next charges of a payment method), ``set_status`` (a
refund settles or fails), ``fail_next`` (answer a reply instead of acting) and
``hang_next`` (act, then answer too late). ``now`` dates what is created.
"""

from __future__ import annotations

import base64
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from babel.numbers import get_currency_precision

from tests.support.http_stub import Reply, Request

DeclineStyle = Literal["transaction", "error"]
FAILED = {"SETTLEMENT_DECLINED", "FAILED", "GATEWAY_REJECTED", "PROCESSOR_DECLINED", "VOIDED"}
REFUNDABLE = {"SETTLED", "SETTLING"}
CAPTURED = {"SUBMITTED_FOR_SETTLEMENT", "SETTLING", "SETTLED", "SETTLEMENT_PENDING"}
MESSAGES = {
    "2000": "Do Not Honor",
    "2001": "Insufficient Funds",
    "2002": "Limit Exceeded",
    "2004": "Expired Card",
    "2013": "Possible Stolen Card",
    "2014": "Fraud Suspected",
}
_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass
class StubRefund:
    id: str
    transaction_id: str
    amount: Decimal
    currency: str
    order_id: str | None
    created_at: datetime
    status: str = "SUBMITTED_FOR_SETTLEMENT"


@dataclass
class StubTransaction:
    id: str
    amount: Decimal
    currency: str
    status: str
    created_at: datetime
    payment_method_id: str | None
    brand_code: str
    order_id: str | None = None
    merchant_account_id: str = "merchant_eur"
    decline_code: str | None = None
    refunds: list[str] = field(default_factory=list)


def graphql_error(message: str, error_class: str, legacy_code: str | None = None) -> dict[str, Any]:
    extensions: dict[str, Any] = {"errorClass": error_class}
    if legacy_code:
        extensions["legacyCode"] = legacy_code
    return {"message": message, "extensions": extensions}


def timestamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class BraintreeApi:
    """The stand-in's state and handler: ``HttpStub(BraintreeApi(...))``."""

    def __init__(self, public_key: str, private_key: str) -> None:
        self._auth = "Basic " + base64.b64encode(f"{public_key}:{private_key}".encode()).decode()
        self._lock = threading.Lock()
        self.now = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
        self.page_limit = 50
        self.decline_style: DeclineStyle = "transaction"
        self.transactions: dict[str, StubTransaction] = {}
        self.refunds: dict[str, StubRefund] = {}
        self.declines: dict[str, deque[str]] = {}
        # Root field → (reply, whether to act first) for the next request selecting it.
        self._faults: dict[str, deque[tuple[Reply, bool]]] = {}
        self.calls: list[str] = []
        self._next = 1

    # ------------------------------------------------------------------ test controls

    def add_transaction(
        self,
        amount: str,
        currency: str,
        *,
        status: str = "SETTLED",
        payment_method_id: str | None = "pm_card_1",
        brand_code: str = "VISA",
        created_at: datetime | None = None,
        order_id: str | None = None,
    ) -> str:
        with self._lock:
            tx = StubTransaction(
                id=self._new_id("transaction"),
                amount=Decimal(amount),
                currency=currency,
                status=status,
                created_at=created_at or self.now,
                payment_method_id=payment_method_id,
                brand_code=brand_code,
                order_id=order_id,
            )
            self.transactions[tx.id] = tx
            return tx.id

    def add_refund(
        self, transaction_id: str, amount: str, *, status: str, order_id: str | None = None
    ) -> str:
        with self._lock:
            tx = self.transactions[transaction_id]
            return self._refund(tx, Decimal(amount), order_id, status=status).id

    def decline(self, payment_method_id: str, *codes: str) -> None:
        """The next charges of ``payment_method_id`` are declined with these processor
        response codes, in order; once they are used up, charges are approved."""
        with self._lock:
            self.declines.setdefault(payment_method_id, deque()).extend(codes)

    def set_status(self, refund_id: str, status: str) -> None:
        with self._lock:
            self.refunds[refund_id].status = status

    def fail_next(self, root: str, reply: Reply) -> None:
        """The next request selecting ``root`` gets ``reply`` and changes nothing."""
        with self._lock:
            self._faults.setdefault(root, deque()).append((reply, False))

    def hang_next(self, root: str, seconds: float) -> None:
        """The next request selecting ``root`` is carried out; its answer comes late."""
        with self._lock:
            self._faults.setdefault(root, deque()).append((Reply(hang=seconds), True))

    # ------------------------------------------------------------------ handler

    def __call__(self, request: Request) -> Reply:
        if request.method != "POST" or request.path != "/graphql":
            return Reply(404, "Not Found")
        if request.headers.get("authorization") != self._auth:
            return Reply(
                401, {"errors": [graphql_error("Authentication failed", "AUTHENTICATION")]}
            )
        if not _VERSION.fullmatch(request.headers.get("braintree-version", "")):
            return self._answer(
                None, [graphql_error("Braintree-Version is required", "VALIDATION")]
            )
        if not request.headers.get("content-type", "").startswith("application/json"):
            return Reply(415, "Unsupported Media Type")
        body = request.json()
        query, variables = body.get("query"), body.get("variables") or {}
        if not isinstance(query, str):
            return self._answer(None, [graphql_error("No query string was present", "VALIDATION")])
        root = _root_field(query)
        with self._lock:
            self.calls.append(root)
            faults = self._faults.get(root)
            fault, act = faults.popleft() if faults else (None, True)
            if fault is not None and not act:
                return fault
            reply = self._dispatch(root, variables)
        if fault is not None:
            return Reply(reply.status, reply.body, hang=fault.hang)
        return reply

    def _dispatch(self, root: str, variables: dict[str, Any]) -> Reply:
        if root == "refundTransaction":
            return self._refund_transaction(variables["input"])
        if root == "chargePaymentMethod":
            return self._charge(variables["input"])
        if root in ("transactions", "refunds"):
            return self._search(root, variables)
        if root == "node":
            return self._node(variables["id"])
        return self._answer(None, [graphql_error(f"unknown field {root}", "VALIDATION")])

    def _node(self, node_id: str) -> Reply:
        if node_id in self.transactions:
            return self._answer({"node": self._transaction_view(self.transactions[node_id])})
        if node_id in self.refunds:
            return self._answer({"node": self._refund_view(self.refunds[node_id])})
        missing = graphql_error("An object with this ID was not found.", "NOT_FOUND")
        return self._answer({"node": None}, [missing])

    def _refund_transaction(self, input: dict[str, Any]) -> Reply:
        tx = self.transactions.get(input["transactionId"])
        if tx is None:
            missing = graphql_error("An object with this ID was not found.", "NOT_FOUND")
            return self._answer({"refundTransaction": None}, [missing])
        refund = input.get("refund") or {}
        amount = Decimal(refund.get("amount") or tx.amount)
        if tx.status not in REFUNDABLE:
            return self._refused("Cannot refund a transaction unless it is settled.", "91506")
        scaled = amount.scaleb(get_currency_precision(tx.currency))
        if scaled != scaled.to_integral_value():
            return self._refused("Amount is an invalid format.", "81503")
        left = tx.amount - sum(
            (r.amount for r in map(self.refunds.get, tx.refunds) if r and r.status not in FAILED),
            Decimal(0),
        )
        if amount > left:
            return self._refused("Refund amount is too large.", "91521")
        made = self._refund(tx, amount, refund.get("orderId"))
        return self._answer({"refundTransaction": {"refund": self._refund_view(made)}})

    def _charge(self, input: dict[str, Any]) -> Reply:
        method = input["paymentMethodId"]
        original = next(
            (t for t in self.transactions.values() if t.payment_method_id == method), None
        )
        if original is None:
            missing = graphql_error("An object with this ID was not found.", "NOT_FOUND")
            return self._answer({"chargePaymentMethod": None}, [missing])
        charge = input["transaction"]
        queued = self.declines.get(method)
        code = queued.popleft() if queued else None
        tx = StubTransaction(
            id=self._new_id("transaction"),
            amount=Decimal(charge["amount"]),
            currency=original.currency,
            status="PROCESSOR_DECLINED" if code else "SUBMITTED_FOR_SETTLEMENT",
            created_at=self.now,
            payment_method_id=method,
            brand_code=original.brand_code,
            order_id=charge.get("orderId"),
            decline_code=code,
        )
        self.transactions[tx.id] = tx
        if code and self.decline_style == "error":
            declined = graphql_error(MESSAGES.get(code, "Processor Declined"), "VALIDATION", code)
            return self._answer({"chargePaymentMethod": None}, [declined])
        return self._answer({"chargePaymentMethod": {"transaction": self._transaction_view(tx)}})

    def _search(self, root: str, variables: dict[str, Any]) -> Reply:
        criteria = variables.get("input") or {}
        found: list[StubTransaction | StubRefund] = list(
            self.transactions.values() if root == "transactions" else self.refunds.values()
        )
        if root == "refunds":
            found = [r for r in found if isinstance(r, StubRefund)]
        created = criteria.get("createdAt") or {}
        if "greaterThanOrEqualTo" in created:
            low = datetime.fromisoformat(created["greaterThanOrEqualTo"])
            found = [x for x in found if x.created_at >= low]
        if "lessThanOrEqualTo" in created:
            # SearchTimestampInput: exclusive, and one minute is always added to it.
            high = datetime.fromisoformat(created["lessThanOrEqualTo"]) + timedelta(minutes=1)
            found = [x for x in found if x.created_at < high]
        if "is" in (criteria.get("orderId") or {}):
            found = [x for x in found if x.order_id == criteria["orderId"]["is"]]
        found.sort(key=lambda x: (x.created_at, x.id))
        start = int(base64.b64decode(variables["after"]).decode()) if variables.get("after") else 0
        size = min(int(variables.get("first") or self.page_limit), self.page_limit)
        page = found[start : start + size]
        end = start + len(page)
        edges = [
            {
                "node": self._transaction_view(x)
                if isinstance(x, StubTransaction)
                else self._refund_view(x)
            }
            for x in page
        ]
        info = {
            "hasNextPage": end < len(found),
            "endCursor": base64.b64encode(str(end).encode()).decode() if page else None,
        }
        return self._answer({"search": {root: {"pageInfo": info, "edges": edges}}})

    # ------------------------------------------------------------------ internals (locked)

    def _refund(
        self,
        tx: StubTransaction,
        amount: Decimal,
        order_id: str | None,
        *,
        status: str = "SUBMITTED_FOR_SETTLEMENT",
    ) -> StubRefund:
        refund = StubRefund(
            id=self._new_id("refund"),
            transaction_id=tx.id,
            amount=amount,
            currency=tx.currency,
            order_id=order_id if order_id is not None else tx.order_id,
            created_at=self.now,
            status=status,
        )
        self.refunds[refund.id] = refund
        tx.refunds.append(refund.id)
        return refund

    def _new_id(self, kind: str) -> str:
        legacy = f"{kind}_{self._next:08x}"
        self._next += 1
        return base64.b64encode(legacy.encode()).decode().rstrip("=")

    def _money(self, amount: Decimal, currency: str) -> dict[str, str]:
        places = get_currency_precision(currency)
        return {"value": f"{amount:.{places}f}", "currencyCode": currency}

    def _refund_view(self, refund: StubRefund) -> dict[str, Any]:
        return {
            "__typename": "Refund",
            "id": refund.id,
            "status": refund.status,
            "orderId": refund.order_id,
            "createdAt": timestamp(refund.created_at),
            "amount": self._money(refund.amount, refund.currency),
        }

    def _transaction_view(self, tx: StubTransaction) -> dict[str, Any]:
        card = {"__typename": "CreditCardDetails", "brandCode": tx.brand_code}
        history: list[dict[str, Any]] = [{"__typename": "AuthorizedEvent", "status": "AUTHORIZED"}]
        if tx.decline_code:
            response = {
                "legacyCode": tx.decline_code,
                "message": MESSAGES.get(tx.decline_code, "Processor Declined"),
            }
            history = [
                {
                    "__typename": "ProcessorDeclinedEvent",
                    "status": "PROCESSOR_DECLINED",
                    "processorResponse": response,
                }
            ]
        return {
            "__typename": "Transaction",
            "id": tx.id,
            "status": tx.status,
            "orderId": tx.order_id,
            "merchantAccountId": tx.merchant_account_id,
            "createdAt": timestamp(tx.created_at),
            "amount": self._money(tx.amount, tx.currency),
            "refunds": [self._refund_view(self.refunds[r]) for r in tx.refunds],
            "paymentMethod": (
                {"id": tx.payment_method_id, "details": card} if tx.payment_method_id else None
            ),
            "paymentMethodSnapshot": card,
            "statusHistory": history,
        }

    def _refused(self, message: str, legacy_code: str) -> Reply:
        error = graphql_error(message, "VALIDATION", legacy_code)
        return self._answer({"refundTransaction": None}, [error])

    @staticmethod
    def _answer(data: dict[str, Any] | None, errors: list[dict[str, Any]] | None = None) -> Reply:
        body: dict[str, Any] = {"data": data, "extensions": {"requestId": "req-stub"}}
        if errors:
            body["errors"] = errors
        return Reply(200, body)


def _root_field(query: str) -> str:
    """The operation's root field: the first field inside the operation's braces (and
    inside ``search { }``). Enough for the operations the adapter sends."""
    inner = query[query.index("{") + 1 :]
    name = re.match(r"\s*(\w+)", inner)
    root = name.group(1) if name else ""
    if root == "search":
        nested = re.match(r"\s*search\s*\{\s*(\w+)", inner)
        return nested.group(1) if nested else root
    return root
