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

from tidings.templates.rendering import (
    RenderedMessage,
    Renderer,
    RenderError,
    locale_chain,
)
from tidings.templates.store import TemplateNotFound, TemplateStore

KIND = "refund_authorized"
NBSP = "\u00a0"


def make_context(name: str = "Ana", **data: Any) -> dict[str, Any]:
    event_data: dict[str, Any] = {
        "order_id": "1042",
        "refund_id": "re_1",
        "payment_id": "pay_1",
        "amount": 1250,
        "currency": "EUR",
        "reason_code": "requested_by_customer",
        "method": "card",
        "authorized_at": "2026-11-21T10:00:00+00:00",
    }
    event_data.update(data)
    return {
        "recipient": {"name": name, "email": "ana@example.test", "locale": "en", "time_zone": None},
        "order": {"id": "ord_9", "number": "1042"},
        "data": event_data,
        "event": {"id": "ev_1", "type": KIND, "time": datetime(2026, 11, 21, 10, tzinfo=UTC)},
        "store": {"name": "Acme & Co", "support_email": "help@acme.test"},
    }


def write(directory: Path, name: str, text: str, kind: str = KIND) -> Path:
    path = directory / kind / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


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
    assert store.locales_for(KIND, "email") == ["en", "fr"]
    assert set(store.parts(KIND, "email", "fr")) == {"subject", "txt", "html"}
    assert set(store.parts(KIND, "in_app", "en")) == {"title", "txt"}
    assert store.parts(KIND, "email", "de") == {}
    assert store.parts(f"../builtin/{KIND}", "email", "en") == {}


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


def test_english_email(renderer: Renderer) -> None:
    msg = email(renderer, "en")
    assert msg.parts["subject"] == "Acme & Co: your refund of €12.50 for order #1042 is on its way"
    assert "Hello Ana," in msg.parts["txt"]
    assert "within 5\u201310 business days" in msg.parts["txt"]
    assert "Reason: requested by you." in msg.parts["txt"]
    assert "Authorized on: November 21, 2026" in msg.parts["txt"]


def test_in_app_channel(renderer: Renderer) -> None:
    msg = renderer.render(KIND, "in_app", "fr", None, make_context(method="store_credit"))
    assert msg.parts["title"] == "Remboursement de 12,50\u00a0€ en route"
    assert "immédiatement" in msg.parts["txt"]


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("paypal", "within 3\u20135 days"),
        ("store_credit", "immediately"),
        ("wire", "a few business days"),
    ],
)
def test_arrival_depends_on_method(renderer: Renderer, method: str, expected: str) -> None:
    assert expected in email(renderer, "en", method=method).parts["txt"]


def test_unknown_reason_is_omitted_and_number_falls_back_to_id(renderer: Renderer) -> None:
    context = make_context(reason_code="zz_internal_code")
    context["order"] = {"id": "ord_9", "number": None}
    txt = renderer.render(KIND, "email", "en", None, context).parts["txt"]
    assert "Reason" not in txt
    assert "zz_internal_code" not in txt
    assert "#ord_9" in txt


def test_jpy_has_no_decimals(renderer: Renderer) -> None:
    assert "¥1,250 " in email(renderer, "en", currency="JPY").parts["subject"]


def test_fallbacks(renderer: Renderer) -> None:
    canadian = email(renderer, "fr-CA")
    assert canadian.locale == "fr"
    assert "12,50\u00a0€" in canadian.parts["txt"]
    german = email(renderer, "de")
    assert german.locale == "en"
    assert "€12.50" in german.parts["txt"]
    with pytest.raises(TemplateNotFound) as caught:
        renderer.render("no_such_kind", "email", "en", None, make_context())
    assert caught.value.code == "template_not_found"


def test_markup_in_user_data_is_escaped_in_html_only(renderer: Renderer) -> None:
    msg = email(renderer, "en", name="<script>alert(1)</script> & Jerry")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Jerry" in msg.parts["html"]
    assert "<script>" not in msg.parts["html"]
    assert "Hello <script>alert(1)</script> & Jerry," in msg.parts["txt"]
    assert "&amp;" not in msg.parts["subject"] + msg.parts["txt"]


def test_template_syntax_in_user_data_is_literal(renderer: Renderer) -> None:
    msg = email(renderer, "en", name="{{ 7*7 }}{% raw %}")
    assert "Hello {{ 7*7 }}{% raw %}," in msg.parts["txt"]
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
    email(renderer, "en")

    def recompile(source: str) -> None:
        raise AssertionError(f"recompiled {source[:40]!r}")

    for env in (renderer._html_env, renderer._text_env):
        monkeypatch.setattr(env, "from_string", recompile)
    for _ in range(5):
        email(renderer, "en")


def test_concurrent_renders_keep_their_own_locale_and_zone(renderer: Renderer) -> None:
    jobs = [("fr", "Europe/Paris", "12,50\u00a0€"), ("en", "UTC", "€12.50")] * 50
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
