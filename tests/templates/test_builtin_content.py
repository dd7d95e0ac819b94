"""The built-in messages: every kind, channel and locale renders, and says the right thing.

Kinds are discovered from the built-in folder, so a kind added later is covered as soon as it
exists. Run with ``-s`` to see the SMS lengths of the non-English locales.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.templates.support import NBSP
from tidings.templates.preview import KINDS_WITH_SAMPLES, default_store, preview, sample_context
from tidings.templates.rendering import RenderedMessage, Renderer
from tidings.templates.store import BUILTIN_DIR, TemplateStore

KINDS = sorted(
    entry.name
    for entry in BUILTIN_DIR.iterdir()
    if entry.is_dir() and not entry.name.startswith(("_", "."))
)
LOCALES = ("en", "fr", "es", "de")
CHANNEL_PARTS = {
    "email": {"subject", "txt", "html"},
    "sms": {"txt", "txt_short"},
    "push": {"title", "txt"},
    "in_app": {"title", "txt"},
}
SMS_LIMIT = 160
DASH = "\u2013"  # en dash, as in "5 to 10 days" written with a dash
APOS = "\u2019"  # typographic apostrophe of French elisions
MINE = (
    "refund_authorized",
    "refund_succeeded",
    "refund_failed",
    "backorder_notice",
    "restock_eta_changed",
    "back_in_stock",
    "inventory_digest",
)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TemplateStore())


def render(
    renderer: Renderer, kind: str, channel: str, locale: str, context: dict[str, Any]
) -> RenderedMessage:
    recipient = context["recipient"]
    full = {**context, "store": default_store(), "recipient": {**recipient, "locale": locale}}
    return renderer.render(kind, channel, locale, recipient.get("time_zone"), full)


def test_kinds_are_discovered() -> None:
    assert set(MINE) <= set(KINDS)
    assert "_layouts" not in KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_all_locales_and_a_sample(kind: str) -> None:
    folder = BUILTIN_DIR / kind
    assert (folder / "sample.yaml").is_file()
    assert kind in KINDS_WITH_SAMPLES
    for locale in LOCALES:
        assert (folder / f"{locale}.yaml").is_file(), f"{kind} has no {locale}.yaml"
    store = TemplateStore()
    for channel in CHANNEL_PARTS:
        assert set(LOCALES) <= set(store.locales_for(kind, channel))


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("channel", sorted(CHANNEL_PARTS))
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_every_channel_and_locale(
    renderer: Renderer, kind: str, channel: str, locale: str
) -> None:
    msg = preview(renderer, kind, channel, locale, default_store())
    assert msg.locale == locale  # no silent fallback to another language
    assert set(msg.parts) == CHANNEL_PARTS[channel]
    for part, text in msg.parts.items():
        assert text.strip(), f"{part} is empty"
        assert "None" not in text, f"{part} shows a missing value: {text!r}"
        if part in ("subject", "title"):
            assert "\n" not in text
    if channel == "email":
        assert f'<html lang="{locale}" dir="ltr">' in msg.parts["html"]


@pytest.mark.parametrize("number", ["#1042", "1042", " #1042 "])
@pytest.mark.parametrize("kind", [k for k in KINDS if sample_context(k)["order"].get("id")])
def test_an_order_number_is_written_once_with_its_sign(
    renderer: Renderer, kind: str, number: str
) -> None:
    # Shopify's order name is "#1042"; other sources send "1042". Both read the same.
    context = sample_context(kind)
    context["order"] = {**context["order"], "number": number}
    for locale in LOCALES:
        for channel in CHANNEL_PARTS:
            text = " ".join(render(renderer, kind, channel, locale, context).parts.values())
            assert "##" not in text, (locale, channel, text)
            assert "1042" in text, (locale, channel)
    english = render(renderer, kind, "email", "en", context).parts["txt"]
    assert "#1042" in english


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", KINDS)
def test_names_are_greeted_escaped_in_html_and_optional(
    renderer: Renderer, kind: str, locale: str
) -> None:
    context = sample_context(kind)
    context["recipient"]["name"] = "<b>x</b>"
    mail = render(renderer, kind, "email", locale, context)
    assert "<b>x</b>" in mail.parts["txt"]
    assert "&lt;b&gt;x&lt;/b&gt;" in mail.parts["html"]
    assert "<b>x</b>" not in mail.parts["html"]
    context["recipient"]["name"] = None
    for channel in CHANNEL_PARTS:
        msg = render(renderer, kind, channel, locale, context)
        for text in msg.parts.values():
            assert "None" not in text


@pytest.mark.parametrize("kind", MINE)
def test_in_app_greets_by_name(renderer: Renderer, kind: str) -> None:
    context = sample_context(kind)
    expected = {
        "en": f"Hi {context['recipient']['name']},",
        "fr": f"Bonjour {context['recipient']['name']},",
        "es": f"Hola, {context['recipient']['name']}:",
        "de": f"Guten Tag {context['recipient']['name']},",
    }
    for locale, greeting in expected.items():
        assert render(renderer, kind, "in_app", locale, context).parts["txt"].startswith(greeting)


def test_english_sms_fit_one_message(renderer: Renderer) -> None:
    too_long = []
    for kind in KINDS:
        msg = preview(renderer, kind, "sms", "en", default_store())
        too_long += [(kind, part, len(t), t) for part, t in msg.parts.items() if len(t) > SMS_LIMIT]
    assert too_long == []


def test_report_sms_lengths_of_other_locales(renderer: Renderer) -> None:
    print()
    for locale in LOCALES[1:]:
        for kind in KINDS:
            msg = preview(renderer, kind, "sms", locale, default_store())
            for part, text in msg.parts.items():
                flag = "  OVER" if len(text) > SMS_LIMIT else ""
                print(f"sms {locale} {kind}.{part}: {len(text)}{flag}")


# --- refunds ---------------------------------------------------------------------------------


def refund(kind: str = "refund_authorized", **data: Any) -> dict[str, Any]:
    context = sample_context(kind)
    context["data"].update(data)
    return context


def test_refund_authorized_english_exact(renderer: Renderer) -> None:
    context = refund()
    mail = render(renderer, "refund_authorized", "email", "en", context)
    assert mail.parts["subject"] == "Your refund of €12.50 for order #1042 is on its way"
    sms = render(renderer, "refund_authorized", "sms", "en", context)
    assert sms.parts == {
        "txt": "Your refund of €12.50 for order #1042 is on its way. "
        "Expect it on your card statement within 5-10 business days.",
        "txt_short": "Your refund of €12.50 for order #1042 is on its way.",
    }
    push = render(renderer, "refund_authorized", "push", "en", context)
    assert push.parts == {
        "title": "Your refund is on its way",
        "txt": "€12.50 for order #1042. "
        "Expect it on your card statement within 5-10 business days.",
    }


@pytest.mark.parametrize("channel", sorted(CHANNEL_PARTS))
def test_french_refund_amount_has_a_no_break_space(renderer: Renderer, channel: str) -> None:
    msg = render(renderer, "refund_authorized", channel, "fr", refund())
    amount = f"12,50{NBSP}€"
    assert all(amount in text for part, text in msg.parts.items() if part != "title"), msg.parts
    if channel == "email":
        assert msg.parts["subject"] == (
            f"Votre remboursement de {amount} pour la commande n°{NBSP}1042 est en route"
        )
        assert f"Bonjour Camille Durand,\n\nBonne nouvelle{NBSP}: nous avons" in msg.parts["txt"]
        assert f"Motif{NBSP}: article arrivé endommagé" in msg.parts["txt"]
        assert f"Autorisé le{NBSP}: 21 novembre 2026" in msg.parts["txt"]


ON_ITS_WAY = {"en": "on its way", "fr": "en route", "es": "en camino", "de": "unterwegs"}
# Phrases that would tell the customer the money has already arrived.
ARRIVED = {
    "en": ("has been returned", "is complete", "completed", "has arrived", "credited", "is back"),
    "fr": ("a été recrédité", "est effectué", "est arrivé", "terminé", "de retour"),
    "es": ("se ha completado", "se ha devuelto", "ya está en su", "ha llegado"),
    "de": ("abgeschlossen", "gutgeschrieben", "angekommen ist", "ist wieder auf"),
}


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("method", ["card", "paypal", "store_credit", "bank_transfer", "wire"])
def test_refund_authorized_never_says_the_money_has_arrived(
    renderer: Renderer, locale: str, method: str
) -> None:
    context = refund(method=method)
    texts = []
    for channel in CHANNEL_PARTS:
        texts += render(renderer, "refund_authorized", channel, locale, context).parts.values()
    everything = "\n".join(texts).lower()
    for phrase in ARRIVED[locale]:
        assert phrase.lower() not in everything
    mail = render(renderer, "refund_authorized", "email", locale, context)
    assert ON_ITS_WAY[locale] in mail.parts["subject"]
    assert ON_ITS_WAY[locale] in mail.parts["txt"]
    assert (
        ON_ITS_WAY[locale]
        in render(renderer, "refund_authorized", "sms", locale, context).parts["txt"]
    )


ARRIVAL = {
    "en": {
        "card": f"within 5{DASH}10 business days",
        "paypal": f"PayPal account within 3{DASH}5 days",
        "store_credit": "store credit immediately",
        "bank_transfer": f"bank account within 3{DASH}7 business days",
        "wire": "within a few business days",
    },
    "fr": {
        "card": "sous 5 à 10 jours ouvrés",
        "paypal": "PayPal sous 3 à 5 jours",
        "store_credit": f"immédiatement sous forme d{APOS}avoir",
        "bank_transfer": "compte bancaire sous 3 à 7 jours ouvrés",
        "wire": "sous quelques jours ouvrés",
    },
    "es": {
        "card": "plazo de 5 a 10 días hábiles",
        "paypal": "PayPal en un plazo de 3 a 5 días",
        "store_credit": "ya está disponible como saldo",
        "bank_transfer": "cuenta bancaria en un plazo de 3 a 7 días hábiles",
        "wire": "en unos pocos días hábiles",
    },
    "de": {
        "card": f"innerhalb von 5{DASH}10 Werktagen",
        "paypal": f"innerhalb von 3{DASH}5 Tagen auf Ihrem PayPal-Konto",
        "store_credit": "ab sofort als Guthaben",
        "bank_transfer": f"innerhalb von 3{DASH}7 Werktagen auf Ihrem Bankkonto",
        "wire": "innerhalb weniger Werktage",
    },
}


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("method", ["card", "paypal", "store_credit", "bank_transfer", "wire"])
def test_refund_arrival_depends_on_method(renderer: Renderer, locale: str, method: str) -> None:
    context = refund(method=method)
    expected = ARRIVAL[locale][method]
    assert expected in render(renderer, "refund_authorized", "email", locale, context).parts["txt"]
    assert expected in render(renderer, "refund_authorized", "in_app", locale, context).parts["txt"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("requested_by_customer", "Reason: requested by you\n"),
        ("damaged", "Reason: item arrived damaged\n"),
        ("late_delivery", "Reason: late delivery\n"),
        ("wrong_item", "Reason: wrong item sent\n"),
        ("duplicate", "Reason: duplicate payment\n"),
        ("fraudulent", "Reason: unauthorized payment\n"),
        ("other", None),
        (None, None),
    ],
)
def test_refund_reason_in_plain_words(
    renderer: Renderer, code: str | None, expected: str | None
) -> None:
    txt = render(renderer, "refund_authorized", "email", "en", refund(reason_code=code)).parts[
        "txt"
    ]
    if expected is None:
        assert "Reason" not in txt
    else:
        assert expected in txt
    assert "Authorized on: November 21, 2026" in txt


@pytest.mark.parametrize("locale", LOCALES)
def test_every_reason_code_has_words_in_every_locale(renderer: Renderer, locale: str) -> None:
    label = {"en": "Reason", "fr": "Motif", "es": "Motivo", "de": "Grund"}[locale]
    words = set()
    codes = ["requested_by_customer", "damaged", "late_delivery", "wrong_item", "duplicate"]
    for code in [*codes, "fraudulent"]:
        mail = render(renderer, "refund_authorized", "email", locale, refund(reason_code=code))
        [line] = [line for line in mail.parts["txt"].splitlines() if line.startswith(label)]
        value = line.split(":", 1)[1].strip()
        assert value
        assert value != code
        words.add(value)
    assert len(words) == 6  # each reason has its own wording


COMPLETE = {
    "en": "Your refund of €12.50 for order #1042 is complete",
    "fr": f"Votre remboursement de 12,50{NBSP}€ pour la commande n°{NBSP}1042 est effectué",
    "es": "Su reembolso de 12,50\u00a0€ del pedido n.º 1042 se ha completado",
    "de": "Ihre Erstattung über 12,50\u00a0€ für Bestellung Nr. 1042 ist abgeschlossen",
}


@pytest.mark.parametrize("locale", LOCALES)
def test_refund_succeeded_says_it_landed(renderer: Renderer, locale: str) -> None:
    context = refund("refund_succeeded")
    mail = render(renderer, "refund_succeeded", "email", locale, context)
    assert mail.parts["subject"] == COMPLETE[locale]
    assert ON_ITS_WAY[locale] not in mail.parts["txt"]
    store_credit = render(
        renderer, "refund_succeeded", "in_app", locale, refund("refund_succeeded", method="x")
    )
    assert "12,50" in store_credit.parts["txt"] or "€12.50" in store_credit.parts["txt"]


@pytest.mark.parametrize("locale", LOCALES)
def test_refund_failed_says_what_happens_and_how_to_reach_support(
    renderer: Renderer, locale: str
) -> None:
    context = refund("refund_failed")
    mail = render(renderer, "refund_failed", "email", locale, context)
    support = default_store()["support_email"]
    assert support is not None
    assert support in mail.parts["txt"].split("\n-- \n")[0]  # in the message, not only the footer
    assert f'<a href="mailto:{support}"' in mail.parts["html"]
    days = {"en": "2 business days", "fr": "2 jours ouvrés", "es": "2 días hábiles"}
    assert days.get(locale, "2 Werktagen") in mail.parts["txt"]
    assert support in render(renderer, "refund_failed", "sms", locale, context).parts["txt"]
    # Without a support address, it still tells the customer to reply.
    bare = {**context, "store": {"name": "Shop"}, "recipient": context["recipient"]}
    txt = renderer.render("refund_failed", "email", locale, None, bare).parts["txt"]
    reply = {"en": "reply to this email", "fr": "répondez", "es": "responda", "de": "antworten"}
    assert reply[locale] in txt
    assert "None" not in txt


def test_english_refund_failed_exact(renderer: Renderer) -> None:
    in_app = render(renderer, "refund_failed", "in_app", "en", refund("refund_failed"))
    assert in_app.parts == {
        "title": "Refund of €12.50 not completed",
        "txt": "Hi Camille Durand,\n\nWe couldn't complete your refund of €12.50 for order #1042. "
        "You are still owed this amount: we will contact you, usually within 2 business days. "
        "Questions? Write to help@atelier-lumen.example.",
    }


# --- inventory -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "dated", "undated"),
    [
        ("en", "by December 5, 2026", "we'll let you know"),
        ("fr", f"d{APOS}ici le 5 décembre 2026", "nous vous préviendrons"),
        ("es", "antes del 5 de diciembre de 2026", "le avisaremos"),
        ("de", "bis zum 5. Dezember 2026", "sagen Ihnen aber Bescheid"),
    ],
)
def test_backorder_says_when_or_that_we_will_tell(
    renderer: Renderer, locale: str, dated: str, undated: str
) -> None:
    context = sample_context("backorder_notice")
    mail = render(renderer, "backorder_notice", "email", locale, context)
    assert dated in mail.parts["txt"]
    assert "Opaline table lamp" in mail.parts["txt"]
    assert "1042" in mail.parts["subject"]
    assert default_store()["support_email"] in mail.parts["txt"].split("\n-- \n")[0]
    context["data"]["restock_eta"] = None
    mail = render(renderer, "backorder_notice", "email", locale, context)
    assert undated.lower() in mail.parts["txt"].lower()
    assert "2026" not in mail.parts["txt"]


def test_backorder_falls_back_to_the_sku_without_a_product_name(renderer: Renderer) -> None:
    context = sample_context("backorder_notice")
    context["product"] = {"sku": "LAMP-01", "name": None}
    assert render(renderer, "backorder_notice", "push", "en", context).parts["title"] == (
        "LAMP-01 is on backorder"
    )


@pytest.mark.parametrize(
    ("restock", "previous", "headline", "phrases", "absent"),
    [
        (
            "2026-12-12",
            "2026-12-05",
            "A new restock date for Opaline table lamp",
            ["by December 12, 2026 (previously December 5, 2026)", "sorry for the wait"],
            ["Good news"],
        ),
        (
            "2026-12-01",
            "2026-12-05",
            "Good news: Opaline table lamp is coming sooner",
            ["by December 1, 2026 (previously December 5, 2026)"],
            ["sorry"],
        ),
        (
            "2026-12-12",
            None,
            "A new restock date for Opaline table lamp",
            ["back in stock by December 12, 2026."],
            ["previously"],
        ),
        (
            None,
            "2026-12-05",
            "A new restock date for Opaline table lamp",
            ["no longer have a confirmed restock date", "If you'd rather not wait"],
            ["2026", "new date"],
        ),
    ],
)
def test_restock_eta_changed(
    renderer: Renderer,
    restock: str | None,
    previous: str | None,
    headline: str,
    phrases: list[str],
    absent: list[str],
) -> None:
    context = sample_context("restock_eta_changed")
    context["data"].update(restock_eta=restock, previous_eta=previous)
    mail = render(renderer, "restock_eta_changed", "email", "en", context)
    body = mail.parts["txt"].split("\n-- \n")[0]
    assert body.startswith(headline + "\n\nHi Jordan Smith,\n\n")
    for phrase in phrases:
        assert phrase in body
    for phrase in absent:
        assert phrase not in body


@pytest.mark.parametrize("locale", LOCALES)
def test_back_in_stock_links_to_the_product_when_there_is_a_url(
    renderer: Renderer, locale: str
) -> None:
    context = sample_context("back_in_stock")
    url = context["product"]["url"]
    mail = render(renderer, "back_in_stock", "email", locale, context)
    assert f'<a href="{url}"' in mail.parts["html"]
    assert f"\n{url}\n" in mail.parts["txt"]
    limited = {"en": "limited", "fr": "limitées", "es": "limitadas", "de": "begrenzt"}
    assert limited[locale] in mail.parts["txt"]
    assert url in render(renderer, "back_in_stock", "sms", locale, context).parts["txt"]
    context["product"] = {**context["product"], "url": None}
    mail = render(renderer, "back_in_stock", "email", locale, context)
    assert '<a href="http' not in mail.parts["html"]
    assert "http" not in mail.parts["txt"]


DIGEST_LINES = {
    "en": [
        "• Opaline table lamp: on backorder, expected back by December 5, 2026",
        "• Warm LED bulb (4-pack): restock date not known yet",
        "• Linen lampshade: back in stock (https://shop.example.com/p/shade-2)",
    ],
    "fr": [
        f"• Opaline table lamp{NBSP}: en rupture de stock, "
        f"retour prévu d{APOS}ici le 5 décembre 2026",
        f"• Warm LED bulb (4-pack){NBSP}: date de retour pas encore connue",
        f"• Linen lampshade{NBSP}: de nouveau en stock (https://shop.example.com/p/shade-2)",
    ],
    "es": [
        "• Opaline table lamp: sin existencias, "
        "reposición prevista antes del 5 de diciembre de 2026",
        "• Warm LED bulb (4-pack): fecha de reposición aún sin confirmar",
        "• Linen lampshade: de nuevo disponible (https://shop.example.com/p/shade-2)",
    ],
    "de": [
        "• Opaline table lamp: nicht vorrätig, voraussichtlich wieder da bis zum 5. Dezember 2026",
        "• Warm LED bulb (4-pack): Liefertermin noch unbekannt",
        "• Linen lampshade: wieder vorrätig (https://shop.example.com/p/shade-2)",
    ],
}


@pytest.mark.parametrize("locale", LOCALES)
def test_inventory_digest_lists_every_item(renderer: Renderer, locale: str) -> None:
    context = sample_context("inventory_digest")
    mail = render(renderer, "inventory_digest", "email", locale, context)
    lines = DIGEST_LINES[locale]
    assert "\n".join(lines) in mail.parts["txt"]
    assert (
        "\n".join(lines)
        in render(renderer, "inventory_digest", "in_app", locale, context).parts["txt"]
    )
    assert "<br>".join(line.replace("&", "&amp;") for line in lines) in mail.parts["html"]
    assert mail.parts["subject"].endswith(("3 items", "3 articles", "3 artículos", "3 Artikel"))


def test_inventory_digest_counts_in_english(renderer: Renderer) -> None:
    context = sample_context("inventory_digest")
    context["items"] = [copy.deepcopy(context["items"][0])]
    assert render(renderer, "inventory_digest", "email", "en", context).parts["subject"] == (
        "Your stock update: 1 item"
    )
    assert render(renderer, "inventory_digest", "sms", "en", context).parts["txt"] == (
        "Stock update: news on 1 item you're waiting for."
    )
