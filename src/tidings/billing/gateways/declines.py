"""Hard or soft: whether a declined payment is worth retrying with the same card.

The vocabulary is Stripe's decline codes, "Card decline codes" table of
https://docs.stripe.com/declines/codes (with "Retrying issuer declines" in
https://docs.stripe.com/declines/card); other gateways map their refusal reasons to
these codes before asking.

- **hard**: retrying the same card cannot succeed until the customer does something (the
  card is lost, stolen, closed, blocked, expired, not accepted here, or its details are
  wrong). Card networks also count retries after these against the merchant, so the
  retry workflow skips straight to its final path.
- **soft**: a later attempt with the same card can succeed (funds arrive, the issuer comes
  back, a limit resets), so the retry policy applies.

``do_not_honor`` is the issuer saying no without a reason. Once or twice it is often
temporary; after ``do_not_honor_limit`` earlier ones on the same workflow it is treated as
hard, since the issuer keeps refusing and each retry only adds to the network's count.

A code not listed here is **soft**. New codes appear (Stripe adds them; other gateways map
imperfectly), and a hard verdict is irreversible: it cancels the order or writes the debt
off at once. A soft verdict wrongly given costs at most what the retry policy allows
(its maximum attempts and days, and its per-network cap), which is bounded and recoverable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

DeclineCategory = Literal["hard", "soft"]

DO_NOT_HONOR = "do_not_honor"

# Each group cites the "Next steps" column of https://docs.stripe.com/declines/codes.
HARD_DECLINES: frozenset[str] = frozenset(
    {
        # "The customer needs to contact their card issuer"; never tell the customer which:
        # lost, stolen, picked up, suspected fraud or blocked by security rules.
        "fraudulent",
        "lost_card",
        "merchant_blacklist",
        "pickup_card",
        "security_violation",
        "stolen_card",
        # The account or authorization is gone: closed, revoked, stopped.
        "invalid_account",
        "new_account_information_available",
        "revocation_of_all_authorizations",
        "revocation_of_authorization",
        "stop_payment_order",
        # The issuer says not to try again, in so many words.
        "do_not_try_again",
        # The card cannot be used for this purchase at all.
        "card_not_supported",
        "currency_not_supported",
        "not_permitted",
        "restricted_card",
        "service_not_allowed",
        "transaction_not_allowed",
        "testmode_decline",
        # The card or its details are wrong; an unattended retry sends the same details.
        "expired_card",
        "incorrect_cvc",
        "incorrect_number",
        "incorrect_zip",
        "invalid_cvc",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "invalid_number",
        "invalid_amount",
        # PINs are entered at a card reader; a retry with nobody there cannot give one.
        "incorrect_pin",
        "invalid_pin",
        "offline_pin_required",
        "online_or_offline_pin_required",
        "pin_try_exceeded",
    }
)

SOFT_DECLINES: frozenset[str] = frozenset(
    {
        # "Attempt the payment again": the issuer or the network had a passing problem.
        "approve_with_id",
        "issuer_not_available",
        "processing_error",
        "reenter_transaction",
        "try_again_later",
        # Money or limits that change with time.
        "card_velocity_exceeded",
        "insufficient_funds",
        "withdrawal_count_limit_exceeded",
        # No reason given; do_not_honor turns hard after repeats (see module docstring).
        DO_NOT_HONOR,
        "call_issuer",
        "generic_decline",
        "no_action_taken",
        # Stripe calls this a soft decline: the customer authenticates when next in session.
        "authentication_required",
        # A very recent identical charge; a later attempt is not a duplicate.
        "duplicate_transaction",
    }
)


@dataclass(frozen=True, slots=True)
class DeclineClassifier:
    """Classifies decline codes; ``do_not_honor_limit`` earlier do_not_honor make it hard."""

    do_not_honor_limit: int = 2

    def __post_init__(self) -> None:
        limit = self.do_not_honor_limit
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ValueError(
                f"do_not_honor_limit is a count of earlier do_not_honor declines (0 or more), "
                f"got {limit!r}"
            )

    def category(
        self, decline_code: str | None, *, earlier_codes: Iterable[str | None] = ()
    ) -> DeclineCategory:
        """``earlier_codes``: the decline codes of the previous attempts on this payment."""
        code = normalize(decline_code)
        if code in HARD_DECLINES:
            return "hard"
        if code == DO_NOT_HONOR:
            repeats = sum(1 for earlier in earlier_codes if normalize(earlier) == DO_NOT_HONOR)
            return "hard" if repeats >= self.do_not_honor_limit else "soft"
        # Listed soft codes, unknown codes and a decline with no code at all.
        return "soft"


def normalize(decline_code: str | None) -> str:
    """Codes compare without case or surrounding blanks, as gateways are not all consistent."""
    return (decline_code or "").strip().lower()
