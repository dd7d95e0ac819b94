"""An in-memory stand-in for the part of Stripe's API the Stripe gateway uses.

Served over loopback by ``HttpStub``, so requests go through the real ``stripe`` library
and httpx. It answers as https://docs.stripe.com/api documents: form-encoded bodies with
bracket notation (``metadata[k]=v``, ``expand[0]=x`` or ``expand[]=x``), ``Authorization:
Bearer <key>``, the ``Idempotency-Key`` header (the same key with the same parameters
replays the first answer; other parameters are a 400 ``idempotency_error``), list objects
newest first with ``limit``/``starting_after``/``has_more`` and ``created[...]`` filters,
errors as ``{"error": {"type": ..., "code": ..., "message": ...}}``, declines as HTTP 402
``card_error`` carrying ``decline_code``, the ``payment_intent`` and its ``payment_method``.

Harsher than Stripe in one way: a rejected API key is echoed in full in the 401 message
(Stripe masks all but its last characters), so a client that repeats messages is caught.

Test controls: ``add_payment`` (a captured PaymentIntent), ``add_failed_payment`` (one
awaiting retries, with the decline codes its next confirmations get), ``add_refund``,
``next_refund_status``,
``settle_refund`` (a refund's status changes later), ``now`` (the clock, epoch seconds) and
``inject`` (a fault: an error status instead of an answer, or an answer that hangs).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import pytest

from tests.support.http_stub import HttpStub, Reply, Request

# Card errors whose Stripe ``code`` is the reason itself, with no ``decline_code``.
_OWN_CODES = frozenset({"expired_card", "incorrect_cvc", "incorrect_number", "processing_error"})
_KEY_PART = re.compile(r"\[([^\]]*)\]")
Obj = dict[str, Any]


@dataclass
class _Fault:
    method: str
    path: str
    status: int | None
    hang: float
    times: int


def parse_form(pairs: list[tuple[str, str]]) -> Obj:
    """Stripe's bracket notation into nested dicts and lists."""
    result: Obj = {}
    for name, value in pairs:
        base = name.split("[", 1)[0]
        parts = [base, *_KEY_PART.findall(name[len(base) :])]
        node: Any = result
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            following_is_list = not last and (parts[i + 1] == "" or parts[i + 1].isdigit())
            if isinstance(node, list):
                if last:
                    node.append(value)
                    break
                if part == "" or int(part) >= len(node):
                    node.append([] if following_is_list else {})
                node = node[-1] if part == "" else node[int(part)]
                continue
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, [] if following_is_list else {})
    return result


def error(status: int, kind: str, message: str, **fields: Any) -> Reply:
    return Reply(status, {"error": {"type": kind, "message": message, **fields}})


class StripeStub:
    def __init__(self, api_key: str = "sk_test_tidings_4eC39HqLyjWDarjtT1zdp7dc") -> None:
        self.api_key = api_key
        self.now = int(time.time())
        self.next_refund_status = "succeeded"
        self.intents: dict[str, Obj] = {}
        self.charges: dict[str, Obj] = {}
        self.refunds: dict[str, Obj] = {}
        self.methods: dict[str, Obj] = {}
        self.declines: dict[str, list[str]] = {}
        self._idempotent: dict[str, tuple[str, str, Obj, Reply]] = {}
        self._faults: list[_Fault] = []
        self._serial = 0
        self._lock = threading.RLock()
        self.http = HttpStub(self.handle)

    # ------------------------------------------------------------------ set-up

    @property
    def url(self) -> str:
        return self.http.url

    def start(self) -> StripeStub:
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.stop()

    def requests(self, method: str | None = None, path: str | None = None) -> list[Request]:
        return [
            r
            for r in self.http.taken()
            if (method is None or r.method == method) and (path is None or r.path == path)
        ]

    def add_payment(
        self, amount: int, currency: str = "eur", *, brand: str = "visa", created: int | None = None
    ) -> str:
        """A PaymentIntent that succeeded, with its captured charge; returns its id."""
        with self._lock:
            method = self._method(brand)
            intent = self._intent(amount, currency, method, created)
            self._charge(intent, succeeded=True, created=created)
            return str(intent["id"])

    def add_failed_payment(
        self, amount: int, currency: str = "eur", *, brand: str = "visa", declines: list[str]
    ) -> str:
        """A PaymentIntent whose first attempt was declined with ``declines[0]``; the next
        confirmations are declined with the remaining codes in turn, then approved."""
        with self._lock:
            method = self._method(brand)
            intent = self._intent(amount, currency, method, None)
            self._charge(intent, succeeded=False, decline=declines[0])
            self.declines[intent["id"]] = list(declines[1:])
            return str(intent["id"])

    def add_refund(self, payment_id: str, amount: int, *, key: str) -> str:
        """A refund made earlier, as ``POST /v1/refunds`` with ``key`` in its metadata."""
        with self._lock:
            params = {"payment_intent": payment_id, "amount": amount}
            reply = self._create_refund({**params, "metadata": {"tidings_refund": key}})
            assert reply.status == 200, reply.body
            return str(reply.body["id"])

    def settle_refund(self, refund_id: str, status: str, failure_reason: str | None = None) -> None:
        with self._lock:
            refund = self.refunds[refund_id]
            was_failed = refund["status"] in ("failed", "canceled")
            refund["status"] = status
            refund["failure_reason"] = failure_reason
            if status in ("failed", "canceled") and not was_failed:
                self.charges[refund["charge"]]["amount_refunded"] -= refund["amount"]

    def inject(
        self,
        method: str,
        path: str,
        *,
        status: int | None = None,
        hang: float = 0.0,
        times: int = 1,
    ) -> None:
        """The next ``times`` requests to ``method path``: with ``status``, that error and
        nothing done; without, done as usual but answered after ``hang`` seconds."""
        with self._lock:
            self._faults.append(_Fault(method, path, status, hang, times))

    # ------------------------------------------------------------------ serving

    def handle(self, request: Request) -> Reply:
        presented = request.headers.get("authorization", "")
        if presented != f"Bearer {self.api_key}":
            return error(
                401,
                "invalid_request_error",
                f"Invalid API Key provided: {presented.removeprefix('Bearer ')}",
            )
        with self._lock:
            fault = self._fault(request)
            if fault is not None and fault.status is not None:
                failed = error(fault.status, "api_error", "Something went wrong on Stripe's end.")
                return Reply(failed.status, failed.body, hang=fault.hang)
            reply = self._answer(request)
        if fault is not None:
            return Reply(reply.status, reply.body, reply.headers, hang=fault.hang)
        return reply

    def _answer(self, request: Request) -> Reply:
        if request.method == "GET":
            params = parse_form([(k, v) for k, values in request.query.items() for v in values])
            return self._get(request.path, params)
        params = parse_form(parse_qsl(request.body.decode(), keep_blank_values=True))
        key = request.headers.get("idempotency-key")
        if key is not None and key in self._idempotent:
            method, path, first_params, first = self._idempotent[key]
            if (method, path, first_params) != (request.method, request.path, params):
                return error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with.",
                )
            return Reply(first.status, first.body, {**first.headers, "Idempotent-Replayed": "true"})
        reply = self._post(request.path, params)
        if key is not None:
            self._idempotent[key] = (request.method, request.path, params, reply)
        return reply

    def _get(self, path: str, params: Obj) -> Reply:
        if m := re.fullmatch(r"/v1/payment_intents/([^/]+)", path):
            intent = self.intents.get(m.group(1))
            if intent is None:
                return _missing("payment_intent", m.group(1))
            return Reply(200, self._expanded(intent, params))
        if m := re.fullmatch(r"/v1/refunds/([^/]+)", path):
            refund = self.refunds.get(m.group(1))
            return Reply(200, refund) if refund else _missing("refund", m.group(1))
        if path == "/v1/refunds":
            return self._list(path, self.refunds, params, ("payment_intent", "charge"))
        if path == "/v1/charges":
            return self._list(path, self.charges, params, ("payment_intent",))
        return error(404, "invalid_request_error", f"Unrecognized request URL (GET: {path})")

    def _post(self, path: str, params: Obj) -> Reply:
        if path == "/v1/refunds":
            return self._create_refund(params)
        if m := re.fullmatch(r"/v1/payment_intents/([^/]+)/confirm", path):
            return self._confirm(m.group(1), params)
        return error(404, "invalid_request_error", f"Unrecognized request URL (POST: {path})")

    def _create_refund(self, params: Obj) -> Reply:
        intent = self.intents.get(params.get("payment_intent", ""))
        if intent is None:
            return _missing("payment_intent", params.get("payment_intent", ""))
        if intent["status"] != "succeeded":
            return error(
                400,
                "invalid_request_error",
                f"This PaymentIntent ({intent['id']}) does not have a successful charge to refund.",
                code="payment_intent_unexpected_state",
            )
        charge = self.charges[intent["latest_charge"]]
        left = charge["amount_captured"] - charge["amount_refunded"]
        amount = int(params.get("amount", left))
        if left == 0:
            return error(
                400,
                "invalid_request_error",
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        if amount > left:
            return error(
                400,
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                code="amount_too_large",
                param="amount",
            )
        status = self.next_refund_status
        refund: Obj = {
            "id": self._id("re"),
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "status": status,
            "created": self.now,
            "payment_intent": intent["id"],
            "charge": charge["id"],
            "metadata": dict(params.get("metadata", {})),
            "failure_reason": None,
            "reason": params.get("reason"),
        }
        self.refunds[refund["id"]] = refund
        if status not in ("failed", "canceled"):
            charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount_captured"]
        return Reply(200, dict(refund))

    def _confirm(self, intent_id: str, params: Obj) -> Reply:
        intent = self.intents.get(intent_id)
        if intent is None:
            return _missing("payment_intent", intent_id)
        if intent["status"] == "succeeded":
            return error(
                400,
                "invalid_request_error",
                "This PaymentIntent's status is succeeded, so it cannot be confirmed.",
                code="payment_intent_unexpected_state",
            )
        method = self.methods.get(str(params.get("payment_method", intent["payment_method"])))
        if method is None:
            return _missing("payment_method", params.get("payment_method", ""))
        intent["payment_method"] = method["id"]
        queue = self.declines.get(intent_id, [])
        if queue:
            charge = self._charge(intent, succeeded=False, decline=queue.pop(0))
            return self._card_error(intent, charge)
        self._charge(intent, succeeded=True)
        return Reply(200, self._expanded(intent, params))

    def _list(
        self, path: str, store: dict[str, Obj], params: Obj, filters: tuple[str, ...]
    ) -> Reply:
        items = sorted(store.values(), key=lambda o: (o["created"], o["id"]), reverse=True)
        for name in filters:
            if name in params:
                items = [o for o in items if o.get(name) == params[name]]
        bounds = params.get("created", {})
        checks = {
            "gte": lambda c, v: c >= v,
            "gt": lambda c, v: c > v,
            "lte": lambda c, v: c <= v,
            "lt": lambda c, v: c < v,
        }
        for op, bound in bounds.items():
            items = [o for o in items if checks[op](o["created"], int(bound))]
        if "starting_after" in params:
            ids = [o["id"] for o in items]
            if params["starting_after"] not in ids:
                return _missing("object", params["starting_after"])
            items = items[ids.index(params["starting_after"]) + 1 :]
        limit = int(params.get("limit", 10))
        if not 1 <= limit <= 100:
            return error(400, "invalid_request_error", "Invalid limit", param="limit")
        page = items[:limit]
        body = {"object": "list", "data": page, "has_more": len(items) > limit, "url": path}
        return Reply(200, body)

    # ------------------------------------------------------------------ objects

    def _id(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}_stub{self._serial:06d}"

    def _method(self, brand: str) -> Obj:
        method: Obj = {
            "id": self._id("pm"),
            "object": "payment_method",
            "type": "card",
            "card": {"brand": brand, "last4": "4242", "exp_month": 12, "exp_year": 2030},
        }
        self.methods[method["id"]] = method
        return method

    def _intent(self, amount: int, currency: str, method: Obj, created: int | None) -> Obj:
        intent: Obj = {
            "id": self._id("pi"),
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "currency": currency.lower(),
            "status": "requires_payment_method",
            "created": self.now if created is None else created,
            "latest_charge": None,
            "payment_method": method["id"],
            "last_payment_error": None,
            "metadata": {},
            "livemode": False,
        }
        self.intents[intent["id"]] = intent
        return intent

    def _charge(
        self,
        intent: Obj,
        *,
        succeeded: bool,
        decline: str | None = None,
        created: int | None = None,
    ) -> Obj:
        method = self.methods[intent["payment_method"]]
        charge: Obj = {
            "id": self._id("ch"),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"] if succeeded else 0,
            "amount_refunded": 0,
            "captured": succeeded,
            "paid": succeeded,
            "refunded": False,
            "status": "succeeded" if succeeded else "failed",
            "currency": intent["currency"],
            "created": self.now if created is None else created,
            "payment_intent": intent["id"],
            "payment_method": method["id"],
            "payment_method_details": {"type": "card", "card": {"brand": method["card"]["brand"]}},
            "failure_code": None if succeeded else _code_of(decline),
            "metadata": {},
        }
        self.charges[charge["id"]] = charge
        intent["latest_charge"] = charge["id"]
        if succeeded:
            intent.update(status="succeeded", amount_received=intent["amount"])
            intent["last_payment_error"] = None
        else:
            intent["status"] = "requires_payment_method"
            intent["last_payment_error"] = self._decline_error(decline or "generic_decline", charge)
        return charge

    def _decline_error(self, decline: str, charge: Obj) -> Obj:
        fields: Obj = {
            "type": "card_error",
            "code": _code_of(decline),
            "message": f"Your card was declined ({decline}).",
            "charge": charge["id"],
            "payment_method": self.methods[charge["payment_method"]],
        }
        if decline not in _OWN_CODES:
            fields["decline_code"] = decline
        return fields

    def _card_error(self, intent: Obj, charge: Obj) -> Reply:
        details = dict(intent["last_payment_error"])
        return Reply(402, {"error": {**details, "payment_intent": dict(intent)}})

    def _expanded(self, intent: Obj, params: Obj) -> Obj:
        body = dict(intent)
        expand = params.get("expand", [])
        if "latest_charge" in expand and intent["latest_charge"] is not None:
            body["latest_charge"] = dict(self.charges[intent["latest_charge"]])
        return body

    def _fault(self, request: Request) -> _Fault | None:
        for fault in self._faults:
            if (fault.method, fault.path) == (request.method, request.path) and fault.times > 0:
                fault.times -= 1
                return fault
        return None


def _code_of(decline: str | None) -> str:
    return decline if decline in _OWN_CODES else "card_declined"


def _missing(kind: str, identifier: str) -> Reply:
    return error(
        404,
        "invalid_request_error",
        f"No such {kind}: '{identifier}'",
        code="resource_missing",
        param="id",
    )


# stripe 16.1's HTTPXClient hands httpx the encoded form as ``data=<str>``, which httpx
# 0.28 deprecates in favour of ``content=``; the request sent is the same.
ALLOW_STRIPE_FORM_WARNING = pytest.mark.filterwarnings(
    "ignore:Use 'content=<...>' to upload raw bytes/text content.:DeprecationWarning"
)
