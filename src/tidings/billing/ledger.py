"""The double-entry ledger: balanced journal transactions over per-store, per-currency accounts.

Amounts are integers in minor units, debits positive and credits negative, so a
transaction balances when its lines sum to zero in each currency (DESIGN.md, invariant 6)
and the trial balance, the sum of every line, is zero per currency.

Accounts are named ``<store>:<currency>:<name>``:

- ``gateway_clearing`` (asset): money the gateway holds for the store, captured and not
  yet paid out, less what it paid back to customers.
- ``revenue`` (income): sales, credited at capture and kept gross.
- ``refunds`` (contra-revenue): refunds granted. Keeping them apart from ``revenue``
  is the usual "sales returns and allowances" treatment: gross sales stay visible and
  net revenue is ``revenue + refunds``.
- ``customer_refunds_payable`` (liability): refunds the store owes and has not paid out.
- ``fees`` (expense): what the gateway keeps for itself.
- ``bad_debt`` (expense): amounts written off as never to be collected.
- ``accounts_receivable`` (asset): payments due that failed and are being recovered.

Postings:

- capture: debit gateway_clearing, credit revenue.
- refund authorized: debit refunds, credit customer_refunds_payable. Authorization is
  the point the store commits to pay (DESIGN.md, "Authorization Complete").
- refund succeeded: debit customer_refunds_payable, credit gateway_clearing (the money
  left through the gateway).
- refund released (failed after authorization, before success): the exact opposite of
  the authorization.
- refund reversed (a succeeded refund the gateway later failed): the exact opposite of
  the success and of the authorization, so the money is back in clearing and the
  refund no longer reduces revenue.
- fee: debit fees, credit gateway_clearing.
- write-off: debit bad_debt, credit gateway_clearing (an amount the gateway will never
  settle).
- payment due (a payment failed and its recovery began): debit accounts_receivable,
  credit revenue. The sale stands; the customer owes it.
- payment collected (a retry, or the customer, paid it): debit gateway_clearing, credit
  accounts_receivable. With the payment due this is what a capture posts, in two steps.
- payment due canceled (the order was canceled, or the recovery stopped): the exact
  opposite of the payment due.
- receivable written off (the policy marks it uncollectible): debit bad_debt, credit
  accounts_receivable.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from tidings.db.ids import new_id
from tidings.db.schema import ledger_lines, ledger_transactions

ACCOUNTS = (
    "gateway_clearing",
    "customer_refunds_payable",
    "revenue",
    "refunds",
    "fees",
    "bad_debt",
    "accounts_receivable",
)
KINDS = (
    "capture",
    "refund_authorized",
    "refund_succeeded",
    "refund_released",
    "refund_reversed",
    "fee",
    "write_off",
    "payment_due",
    "payment_collected",
    "payment_due_canceled",
    "receivable_written_off",
)


@dataclass(frozen=True, slots=True)
class Line:
    """One side of a posting: positive debits, negative credits."""

    account: str
    currency: str
    amount: int


def account(store: str, currency: str, name: str) -> str:
    if name not in ACCOUNTS:
        raise ValueError(f"unknown ledger account {name!r}; accounts are {', '.join(ACCOUNTS)}")
    if not store or ":" in store:
        raise ValueError(f"a store name must be non-empty and contain no ':', got {store!r}")
    if len(currency) != 3 or not currency.isupper():
        raise ValueError(f"currency must be an ISO 4217 code such as EUR, got {currency!r}")
    return f"{store}:{currency}:{name}"


def _pair(store: str, currency: str, debit: str, credit: str, amount: int) -> list[Line]:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"a posting needs a positive integer amount in minor units: {amount!r}")
    return [
        Line(account(store, currency, debit), currency, amount),
        Line(account(store, currency, credit), currency, -amount),
    ]


def capture(store: str, currency: str, amount: int) -> list[Line]:
    return _pair(store, currency, "gateway_clearing", "revenue", amount)


def refund_authorized(store: str, currency: str, amount: int) -> list[Line]:
    return _pair(store, currency, "refunds", "customer_refunds_payable", amount)


def refund_succeeded(store: str, currency: str, amount: int) -> list[Line]:
    return _pair(store, currency, "customer_refunds_payable", "gateway_clearing", amount)


def refund_released(store: str, currency: str, amount: int) -> list[Line]:
    return opposite(refund_authorized(store, currency, amount))


def refund_reversed(store: str, currency: str, amount: int) -> list[Line]:
    return opposite(
        refund_succeeded(store, currency, amount) + refund_authorized(store, currency, amount)
    )


def fee(store: str, currency: str, amount: int) -> list[Line]:
    return _pair(store, currency, "fees", "gateway_clearing", amount)


def write_off(store: str, currency: str, amount: int) -> list[Line]:
    return _pair(store, currency, "bad_debt", "gateway_clearing", amount)


def payment_due(store: str, currency: str, amount: int) -> list[Line]:
    return _pair(store, currency, "accounts_receivable", "revenue", amount)


def payment_collected(store: str, currency: str, amount: int) -> list[Line]:
    return _pair(store, currency, "gateway_clearing", "accounts_receivable", amount)


def payment_due_canceled(store: str, currency: str, amount: int) -> list[Line]:
    return opposite(payment_due(store, currency, amount))


def receivable_written_off(store: str, currency: str, amount: int) -> list[Line]:
    return _pair(store, currency, "bad_debt", "accounts_receivable", amount)


# A refund's move (state before, state after) → what it posts; the kind is the name.
REFUND_POSTINGS: dict[tuple[str, str], Callable[[str, str, int], list[Line]]] = {
    ("submitted", "authorized"): refund_authorized,
    ("authorized", "succeeded"): refund_succeeded,
    ("authorized", "failed"): refund_released,
    ("succeeded", "reversed"): refund_reversed,
}


def opposite(lines: Iterable[Line]) -> list[Line]:
    """The lines that undo ``lines`` exactly: every debit becomes the same credit."""
    return [Line(line.account, line.currency, -line.amount) for line in lines]


def imbalance(lines: Iterable[Line]) -> dict[str, int]:
    """Per currency, what the lines fail to balance by; empty when they balance."""
    totals: dict[str, int] = defaultdict(int)
    for line in lines:
        totals[line.currency] += line.amount
    return {currency: total for currency, total in totals.items() if total != 0}


def post(
    conn: Connection,
    *,
    kind: str,
    reference: str,
    lines: Sequence[Line],
    at: datetime,
    description: str | None = None,
) -> str:
    """Write one journal transaction in the caller's transaction; returns its id.

    Refuses (ValueError, nothing written) a transaction that does not balance in every
    currency, or a line whose account belongs to another currency.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown ledger transaction kind {kind!r}; kinds are {KINDS}")
    if not lines:
        raise ValueError("a journal transaction needs at least one line")
    for line in lines:
        if isinstance(line.amount, bool) or not isinstance(line.amount, int) or not line.amount:
            raise ValueError(f"a line needs a non-zero integer amount: {line!r}")
        parts = line.account.split(":")
        if len(parts) != 3 or parts[1] != line.currency or parts[2] not in ACCOUNTS:
            raise ValueError(
                f"account {line.account!r} is not a '<store>:{line.currency}:<name>' account"
            )
    off = imbalance(lines)
    if off:
        # DESIGN.md invariant 6: every ledger transaction balances.
        raise ValueError(f"journal transaction {kind} {reference} does not balance: {off}")
    transaction_id = new_id("ltx")
    conn.execute(
        ledger_transactions.insert().values(
            id=transaction_id, at=at, kind=kind, reference=reference, description=description
        )
    )
    conn.execute(
        ledger_lines.insert(),
        [
            {
                "transaction_id": transaction_id,
                "account": line.account,
                "currency": line.currency,
                "amount": line.amount,
            }
            for line in lines
        ],
    )
    return transaction_id


def trial_balance(conn: Connection) -> dict[tuple[str, str], int]:
    """Every account's balance: ``{(account, currency): debits minus credits}``."""
    rows = conn.execute(
        select(ledger_lines.c.account, ledger_lines.c.currency, func.sum(ledger_lines.c.amount))
        .group_by(ledger_lines.c.account, ledger_lines.c.currency)
        .order_by(ledger_lines.c.account)
    ).all()
    return {(str(row[0]), str(row[1])): int(row[2]) for row in rows}


def totals_by_currency(balance: Mapping[tuple[str, str], int]) -> dict[str, int]:
    """The trial balance summed per currency: zero everywhere when the books balance."""
    totals: dict[str, int] = defaultdict(int)
    for (_, currency), amount in balance.items():
        totals[currency] += amount
    return dict(totals)


def is_balanced(balance: Mapping[tuple[str, str], int]) -> bool:
    return all(total == 0 for total in totals_by_currency(balance).values())
