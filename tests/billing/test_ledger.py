"""The ledger: every posting balances, unbalanced ones are refused, the trial balance is zero."""

from __future__ import annotations

from collections import defaultdict

import pytest
from sqlalchemy import Engine, func, select

from tests.billing.support import NOW
from tidings.billing import ledger
from tidings.billing.ledger import Line
from tidings.db.schema import ledger_lines, ledger_transactions

POSTINGS = {
    "capture": ledger.capture,
    "refund_authorized": ledger.refund_authorized,
    "refund_succeeded": ledger.refund_succeeded,
    "refund_released": ledger.refund_released,
    "refund_reversed": ledger.refund_reversed,
    "fee": ledger.fee,
    "write_off": ledger.write_off,
}


def net(lines: list[Line]) -> dict[str, int]:
    """Net movement per account name (the part after store and currency)."""
    totals: dict[str, int] = defaultdict(int)
    for line in lines:
        totals[line.account.rsplit(":", 1)[1]] += line.amount
    return {name: amount for name, amount in totals.items() if amount}


@pytest.mark.parametrize("kind", sorted(POSTINGS))
def test_every_posting_balances(kind: str) -> None:
    lines = POSTINGS[kind]("lumen", "EUR", 1234)
    assert ledger.imbalance(lines) == {}
    assert all(line.account.startswith("lumen:EUR:") for line in lines)


def test_postings_debit_and_credit_the_documented_accounts() -> None:
    assert net(ledger.capture("s", "EUR", 500)) == {"gateway_clearing": 500, "revenue": -500}
    assert net(ledger.refund_authorized("s", "EUR", 200)) == {
        "refunds": 200,
        "customer_refunds_payable": -200,
    }
    assert net(ledger.refund_succeeded("s", "EUR", 200)) == {
        "customer_refunds_payable": 200,
        "gateway_clearing": -200,
    }
    assert net(ledger.fee("s", "EUR", 30)) == {"fees": 30, "gateway_clearing": -30}
    assert net(ledger.write_off("s", "EUR", 70)) == {"bad_debt": 70, "gateway_clearing": -70}


def test_a_reversal_undoes_the_success_and_the_authorization_exactly() -> None:
    done = ledger.refund_authorized("s", "USD", 900) + ledger.refund_succeeded("s", "USD", 900)
    assert net(done + ledger.refund_reversed("s", "USD", 900)) == {}
    assert (
        net(ledger.refund_authorized("s", "USD", 900) + ledger.refund_released("s", "USD", 900))
        == {}
    )


@pytest.mark.parametrize("amount", [0, -5, True])
def test_a_posting_needs_a_positive_amount(amount: int) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        ledger.capture("s", "EUR", amount)


@pytest.mark.parametrize(
    ("store", "currency", "name"),
    [
        ("a:b", "EUR", "revenue"),
        ("", "EUR", "revenue"),
        ("s", "eur", "revenue"),
        ("s", "EUR", "cash"),
    ],
)
def test_account_names_are_checked(store: str, currency: str, name: str) -> None:
    with pytest.raises(ValueError, match=r"store|currency|account"):
        ledger.account(store, currency, name)


def test_post_writes_a_balanced_transaction_and_the_trial_balance_sums_it(engine: Engine) -> None:
    with engine.begin() as conn:
        ledger.post(
            conn, kind="capture", reference="pay_1", lines=ledger.capture("s", "EUR", 700), at=NOW
        )
        ledger.post(
            conn, kind="capture", reference="pay_2", lines=ledger.capture("s", "USD", 300), at=NOW
        )
        ledger.post(conn, kind="fee", reference="pay_1", lines=ledger.fee("s", "EUR", 25), at=NOW)
    with engine.connect() as conn:
        balance = ledger.trial_balance(conn)
    assert balance[("s:EUR:gateway_clearing", "EUR")] == 675
    assert balance[("s:EUR:revenue", "EUR")] == -700
    assert balance[("s:EUR:fees", "EUR")] == 25
    assert balance[("s:USD:gateway_clearing", "USD")] == 300
    assert ledger.totals_by_currency(balance) == {"EUR": 0, "USD": 0}
    assert ledger.is_balanced(balance)


def unbalanced_cases() -> list[list[Line]]:
    eur = ledger.capture("s", "EUR", 100)
    usd = ledger.capture("s", "USD", 100)
    return [
        [eur[0], Line(eur[1].account, "EUR", -99)],  # off by one
        [eur[0], usd[1]],  # balances in total, not per currency
        [Line("s:USD:revenue", "EUR", -100), eur[0]],  # an account of another currency
        [Line("s:EUR:revenue", "EUR", 0)],
        [],
    ]


@pytest.mark.parametrize("lines", unbalanced_cases())
def test_post_refuses_what_does_not_balance_and_writes_nothing(
    engine: Engine, lines: list[Line]
) -> None:
    with engine.begin() as conn:
        with pytest.raises(ValueError, match=r"balance|account|line"):
            ledger.post(conn, kind="capture", reference="pay_x", lines=lines, at=NOW)
        written = conn.execute(select(func.count()).select_from(ledger_transactions)).scalar()
        lines_written = conn.execute(select(func.count()).select_from(ledger_lines)).scalar()
    assert (written, lines_written) == (0, 0)


def test_totals_show_an_unbalanced_book() -> None:
    balance = {("s:EUR:revenue", "EUR"): -100, ("s:EUR:gateway_clearing", "EUR"): 90}
    assert ledger.totals_by_currency(balance) == {"EUR": -10}
    assert not ledger.is_balanced(balance)
