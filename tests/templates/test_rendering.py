"""Rendering: locale fallback, money/date formatting, escaping, sandboxing, overrides."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.templates.support import KIND, make_context, write
from tidings.templates.rendering import (
    RenderedMessage,
    Renderer,
    RenderError,
    locale_chain,
)
from tidings.templates.store import TemplateNotFound, TemplateStore


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(TemplateStore())


def email(
    renderer: Renderer, locale: str | None, tz: str | None = None, **kw: Any
) -> RenderedMessage:
    return renderer.render(KIND, "email", locale, tz, make_context(**kw))


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("fr-CA", ["fr_CA", "fr", "en"]),
        ("fr_CA", ["fr_CA", "fr", "en"]),
        ("EN-us", ["en_US", "en"]),
        ("en", ["en"]),
        ("zh-hant-tw", ["zh_Hant_TW", "zh_Hant", "zh", "en"]),
        ("fr_FR.UTF-8", ["fr_FR", "fr", "en"]),
        (None, ["en"]),
        ("", ["en"]),
        ("../../etc/passwd", ["en"]),
        ("12", ["en"]),
    ],
)
def test_locale_chain(requested: str | None, expected: list[str]) -> None:
    assert locale_chain(requested) == expected


@given(st.one_of(st.none(), st.text(max_size=20)))
def test_locale_chain_never_duplicates_and_ends_with_default(requested: str | None) -> None:
    chain = locale_chain(requested)
    assert len(chain) == len(set(chain))
    assert chain[-1] == "en"


def test_store_lists_builtin_templates() -> None:
    store = TemplateStore()
    assert KIND in store.kinds()
    assert "_layouts" not in store.kinds()
    # One catalogue per locale serves every channel, and nothing else.
    for channel in ("email", "sms", "push", "in_app", "webhook"):
        assert store.locales_for(KIND, channel) == ["de", "en", "es", "fr"]
    assert store.locales_for(KIND, "fax") == []
    assert store.parts(KIND, "email", "fr") == {}  # no per-part files left
    catalogue = store.catalogue(KIND, "fr")
    assert catalogue is not None
    assert catalogue.origin.endswith(f"builtin/{KIND}/fr.yaml")
    assert store.catalogue(KIND, "pt") is None
    assert store.catalogue(KIND, "sample") is None
    layout = store.layout("email.html")
    assert layout is not None
    assert "<html" in layout.text
    assert store.parts(f"../builtin/{KIND}", "email", "en") == {}
    assert store.catalogue(f"../builtin/{KIND}", "en") is None
    assert store.catalogue(KIND, "../../en") is None
    assert store.layout("../store.py") is None


def test_french_email_formats_amount_and_typography(renderer: Renderer) -> None:
    msg = email(renderer, "fr")
    assert msg.locale == "fr"
    assert set(msg.parts) == {"subject", "txt", "html"}
    for text in msg.parts.values():
        assert "12,50\u00a0€" in text
    assert "Bonjour Ana," in msg.parts["txt"]
    assert "n°\u00a01042" in msg.parts["subject"]
    assert "5 à 10 jours ouvrés" in msg.parts["txt"]
    assert "à votre demande" in msg.parts["txt"]


ENGLISH_TXT = """Your refund is on its way

Hi Ana,

Good news: we have authorized a refund of €12.50 for your order #1042. It is on its way to you.

Refund amount: €12.50
Order: #1042
Reason: requested by you
Authorized on: November 21, 2026

The money should appear on your card statement within 5\u201310 business days.

--\u0020
Acme & Co
help@acme.test"""


def test_english_email(renderer: Renderer) -> None:
    msg = email(renderer, "en")
    assert msg.parts["subject"] == "Your refund of €12.50 for order #1042 is on its way"
    assert msg.parts["txt"] == ENGLISH_TXT
    html = msg.parts["html"]
    assert html.startswith('<!DOCTYPE html>\n<html lang="en" dir="ltr">')
    assert "<title>Your refund of €12.50 for order #1042 is on its way</title>" in html
    assert '<p style="margin:0 0 16px;">Hi Ana,</p>' in html
    # A multi-line paragraph keeps its lines apart in HTML too.
    assert "Refund amount: €12.50<br>Order: #1042<br>Reason: requested by you<br>" in html
    assert '<a href="mailto:help@acme.test"' in html
    assert "Acme &amp; Co" in html


def test_in_app_channel(renderer: Renderer) -> None:
    msg = renderer.render(KIND, "in_app", "fr", None, make_context(method="store_credit"))
    assert msg.parts == {
        "title": "Remboursement de 12,50\u00a0€ en route",
        "txt": "Bonjour Ana,\n\nNous avons autorisé un remboursement de 12,50\u00a0€ pour la "
        "commande n°\u00a01042. Le montant est disponible immédiatement sous forme d\u2019avoir.",
    }


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("card", "on your card statement within 5\u201310 business days"),
        ("paypal", "reach your PayPal account within 3\u20135 days"),
        ("store_credit", "available as store credit immediately"),
        ("bank_transfer", "reach your bank account within 3\u20137 business days"),
        ("wire", "reach you within a few business days"),
        (None, "reach you within a few business days"),
    ],
)
def test_arrival_depends_on_method(renderer: Renderer, method: str | None, expected: str) -> None:
    msg = email(renderer, "en", method=method)
    assert expected in msg.parts["txt"]
    assert expected in msg.parts["html"]


def test_unknown_reason_is_omitted_and_number_falls_back_to_id(renderer: Renderer) -> None:
    context = make_context(reason_code="zz_internal_code")
    context["order"] = {"id": "ord_9", "number": None}
    txt = renderer.render(KIND, "email", "en", None, context).parts["txt"]
    assert "Reason" not in txt
    assert "zz_internal_code" not in txt
    assert "#ord_9" in txt
    context["order"] = {"id": "1042", "number": "#1042"}  # Shopify-style numbers keep one "#"
    msg = renderer.render(KIND, "email", "en", None, context)
    assert "order #1042 " in msg.parts["subject"]
    assert "##" not in msg.parts["subject"] + msg.parts["txt"]


def test_jpy_has_no_decimals(renderer: Renderer) -> None:
    assert "¥1,250 " in email(renderer, "en", currency="JPY").parts["subject"]


def test_fallbacks(renderer: Renderer) -> None:
    canadian = email(renderer, "fr-CA")
    assert canadian.locale == "fr"
    assert "12,50\u00a0€" in canadian.parts["txt"]
    austrian = email(renderer, "de-AT")
    assert austrian.locale == "de"
    assert '<html lang="de" dir="ltr">' in austrian.parts["html"]
    assert "€\u00a012,50" in austrian.parts["txt"]  # Austrian German puts the sign first
    portuguese = email(renderer, "pt_BR")
    assert portuguese.locale == "en"
    assert "€12.50" in portuguese.parts["txt"]
    with pytest.raises(TemplateNotFound) as caught:
        renderer.render("no_such_kind", "email", "en", None, make_context())
    assert caught.value.code == "template_not_found"


def test_markup_in_user_data_is_escaped_in_html_only(renderer: Renderer) -> None:
    msg = email(renderer, "en", name="<script>alert(1)</script> & Jerry")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Jerry" in msg.parts["html"]
    assert "<script>" not in msg.parts["html"]
    assert "Hi <script>alert(1)</script> & Jerry," in msg.parts["txt"]
    assert "&amp;" not in msg.parts["subject"] + msg.parts["txt"]


def test_template_syntax_in_user_data_is_literal(renderer: Renderer) -> None:
    msg = email(renderer, "en", name="{{ 7*7 }}{% raw %}")
    assert "Hi {{ 7*7 }}{% raw %}," in msg.parts["txt"]
    assert "{{ 7*7 }}" in msg.parts["html"]
    assert "49" not in msg.parts["txt"]


def test_missing_variable_is_render_error(renderer: Renderer) -> None:
    context = make_context()
    del context["store"]
    with pytest.raises(RenderError, match=r"refund_authorized/email locale=fr part=\w+") as caught:
        renderer.render(KIND, "email", "fr", None, context)
    assert caught.value.code == "render_failed"


@pytest.mark.parametrize(
    ("template", "data"),
    [
        ("{{ ''.__class__.__mro__ }}", {}),
        ("{{ data.update({'x': 1}) }}", {}),
        ("{{ money(data.amount, 'EUR') }}", {"amount": 12.5}),
        ("{{ money(data.amount, 'XYZ') }}", {"amount": 1}),
        ("{{ data.when|datetime }}", {"when": "2026-11-21T10:00:00"}),
        ("{{ data.when|date }}", {"when": "not a date"}),
        ("{% if %}", {}),
    ],
)
def test_template_bugs_become_render_errors(
    tmp_path: Path, template: str, data: dict[str, Any]
) -> None:
    write(tmp_path, "email.en.txt", template, kind="probe")
    renderer = Renderer(TemplateStore(override_dir=tmp_path))
    with pytest.raises(RenderError, match="probe/email locale=en part=txt"):
        renderer.render("probe", "email", "en", None, {"data": data})


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("Europe/Paris", "November 22, 2026 00:30"),
        ("America/New_York", "November 21, 2026 18:30"),
        ("Mars/Olympus_Mons", "November 21, 2026 23:30"),
        (None, "November 21, 2026 23:30"),
    ],
)
def test_dates_shown_in_recipient_zone(tmp_path: Path, zone: str | None, expected: str) -> None:
    write(tmp_path, "email.en.txt", '{{ data.when|date }} {{ datetime(data.when, "HH:mm") }}', "t")
    renderer = Renderer(TemplateStore(override_dir=tmp_path))
    for when in (
        "2026-11-21T23:30:00+00:00",
        "2026-11-21t23:30:00Z",
        datetime(2026, 11, 21, 23, 30, tzinfo=UTC),
    ):
        msg = renderer.render("t", "email", "en", zone, {"data": {"when": when}})
        assert msg.parts["txt"] == expected


def test_override_beats_builtin_per_file_and_version_tracks_text(tmp_path: Path) -> None:
    renderer = Renderer(TemplateStore(override_dir=tmp_path))
    builtin = email(renderer, "en")
    write(tmp_path, "email.en.subject", "Refund {{ money(data.amount, data.currency) }}\n  ok")
    first = email(renderer, "en")
    assert first.parts["subject"] == "Refund €12.50 ok"
    assert first.parts["txt"] == builtin.parts["txt"]
    assert first.version != builtin.version
    write(tmp_path, "email.en.subject", "Your refund: {{ money(data.amount, data.currency) }}")
    second = email(renderer, "en")
    assert second.parts["subject"] == "Your refund: €12.50"
    assert second.version not in (first.version, builtin.version)
    assert email(renderer, "en").version == second.version


def test_templates_are_compiled_once(renderer: Renderer, monkeypatch: pytest.MonkeyPatch) -> None:
    channels = ("email", "sms", "push", "in_app")
    first = {
        channel: renderer.render(KIND, channel, "en", None, make_context()) for channel in channels
    }

    def recompile(source: str) -> None:
        raise AssertionError(f"recompiled {source[:40]!r}")

    for env in (renderer._html_env, renderer._text_env):
        monkeypatch.setattr(env, "from_string", recompile)
    for _ in range(5):
        for channel in channels:
            assert renderer.render(KIND, channel, "en", None, make_context()) == first[channel]


def test_concurrent_renders_keep_their_own_locale_and_zone(renderer: Renderer) -> None:
    jobs = [
        ("fr", "Europe/Paris", "12,50\u00a0€"),
        ("en", "UTC", "€12.50"),
        ("de", "Europe/Berlin", "12,50\u00a0€"),
        ("es", "Europe/Madrid", "12,50\u00a0€"),
    ] * 25
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda job: email(renderer, job[0], job[1]), jobs))
    for (locale, _, amount), msg in zip(jobs, results, strict=True):
        assert msg.locale == locale
        assert amount in msg.parts["txt"]


@pytest.fixture(scope="module")
def money_renderer(tmp_path_factory: pytest.TempPathFactory) -> Renderer:
    root = tmp_path_factory.mktemp("money")
    # Both spellings: the filter form in English, the function form in French.
    write(root, "in_app.en.txt", "{{ data.amount|money(data.currency) }}", "money")
    write(root, "in_app.fr.txt", "{{ money(data.amount, data.currency) }}", "money")
    return Renderer(TemplateStore(builtin_dir=root))


@settings(max_examples=300, deadline=None)
@given(
    amount=st.integers(min_value=0, max_value=10**9),
    currency=st.sampled_from(["EUR", "USD", "JPY", "KWD"]),
    locale=st.sampled_from(["en", "fr"]),
)
def test_money_keeps_every_digit(
    money_renderer: Renderer, amount: int, currency: str, locale: str
) -> None:
    text = money_renderer.render(
        "money", "in_app", locale, None, {"data": {"amount": amount, "currency": currency}}
    ).parts["txt"]
    digits = re.sub(r"\D", "", text)
    decimals = {"EUR": 2, "USD": 2, "JPY": 0, "KWD": 3}[currency]
    assert digits == str(amount).rjust(decimals + 1, "0")
