"""The failed-payment family: what each step tells the customer, in every locale."""

from __future__ import annotations

from typing import Any

import pytest

from tests.templates.test_builtin_content import CHANNEL_PARTS, LOCALES, render
from tidings.templates.preview import sample_context
from tidings.templates.rendering import Renderer
from tidings.templates.store import TemplateStore

KINDS = ("payment_failed", "payment_retry_scheduled", "payment_final_notice", "payment_recovered")
URL = "https://lumen.example/compte/paiement/1050"
# Attempted at 23:30 UTC on 22 November: already the 23rd for a customer in Paris.
LATE_EVENING = "2026-11-22T23:30:00+00:00"
LOCAL_DAY = {"en": "November 23, 2026", "fr": "23 novembre 2026", "es": "23 de noviembre de 2026"}
# What a bank's decline says; the customer never reads it (a fraud flag told to a
# fraudster helps them; told to a customer, it alarms).
DECLINE_WORDS = ("insufficient", "stolen", "lost", "fraud", "do_not_honor", "expired")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TemplateStore())


def context(kind: str, **data: Any) -> dict[str, Any]:
    found = sample_context(kind)
    found["data"].update(data)
    return found


def every_part(renderer: Renderer, kind: str, locale: str, ctx: dict[str, Any]) -> str:
    return "\n".join(
        text
        for channel in CHANNEL_PARTS
        for text in render(renderer, kind, channel, locale, ctx).parts.values()
    )


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("code", ["stolen_card", "insufficient_funds", "fraudulent"])
def test_no_step_names_the_decline(renderer: Renderer, kind: str, locale: str, code: str) -> None:
    category = "soft" if code == "insufficient_funds" else "hard"
    text = every_part(
        renderer, kind, locale, context(kind, decline_code=code, decline_category=category)
    ).lower()
    for word in DECLINE_WORDS:
        assert word not in text


@pytest.mark.parametrize("locale", ["en", "fr", "es"])
def test_a_soft_decline_says_when_we_try_again_in_the_customers_zone(
    renderer: Renderer, locale: str
) -> None:
    ctx = context("payment_failed", next_attempt_at=LATE_EVENING, update_payment_url=URL)
    mail = render(renderer, "payment_failed", "email", locale, ctx)
    assert LOCAL_DAY[locale] in mail.parts["txt"]
    assert URL in mail.parts["txt"]
    assert f'href="{URL}"' in mail.parts["html"]


@pytest.mark.parametrize("locale", LOCALES)
def test_a_hard_decline_asks_for_another_card_and_names_no_next_attempt(
    renderer: Renderer, locale: str
) -> None:
    soft = context("payment_failed", update_payment_url=URL)
    hard = context(
        "payment_failed", decline_category="hard", next_attempt_at=None, update_payment_url=URL
    )
    soft_text = render(renderer, "payment_failed", "email", locale, soft).parts["txt"]
    hard_text = render(renderer, "payment_failed", "email", locale, hard).parts["txt"]
    assert soft_text != hard_text
    # The sample's next attempt (22 November) appears for the soft decline only.
    assert "22" in soft_text
    assert "22" not in hard_text.replace(URL, "")
    assert URL in hard_text


@pytest.mark.parametrize("locale", LOCALES)
def test_the_final_notice_says_what_happens_to_the_order(renderer: Renderer, locale: str) -> None:
    texts = {
        action: render(
            renderer,
            "payment_final_notice",
            "email",
            locale,
            context("payment_final_notice", final_action=action, update_payment_url=URL),
        ).parts
        for action in ("cancel_order", "mark_uncollectible", "escalate")
    }
    assert len({parts["txt"] for parts in texts.values()}) == 3
    assert len({parts["subject"] for parts in texts.values()}) == 2  # canceled, or still owed
    # A canceled order has nothing left to pay: no payment link.
    assert URL not in texts["cancel_order"]["txt"]
    assert URL not in texts["cancel_order"]["html"]
    assert URL in texts["mark_uncollectible"]["txt"]


def test_english_steps_exact(renderer: Renderer) -> None:
    failed = render(renderer, "payment_failed", "sms", "en", context("payment_failed"))
    assert failed.parts["txt"] == (
        f"We couldn't take €45.90 for order #1050. We'll try again on November 22, 2026. {URL}"
    )
    reminder = render(
        renderer, "payment_retry_scheduled", "email", "en", context("payment_retry_scheduled")
    )
    assert reminder.parts["subject"] == (
        "We'll try your payment for order #1050 again on November 24, 2026"
    )
    last = render(
        renderer,
        "payment_retry_scheduled",
        "email",
        "en",
        context("payment_retry_scheduled", attempts_left=1),
    )
    assert "That will be our last attempt." in last.parts["txt"]
    assert "last attempt" not in reminder.parts["txt"]
    recovered = render(renderer, "payment_recovered", "push", "en", context("payment_recovered"))
    assert recovered.parts == {
        "title": "Thank you, your payment went through",
        "txt": "€45.90 received for order #1050. Your order goes ahead.",
    }
