"""Message catalogues and shared layouts: channels, precedence, escaping, links, versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.templates.support import KIND, make_context, write
from tidings.templates.catalogue import CatalogueError
from tidings.templates.rendering import RenderedMessage, Renderer, RenderError
from tidings.templates.store import BUILTIN_DIR, TemplateStore

PROBE = """\
define: "{% set who = recipient.name or 'there' %}"
subject: "Probe for {{ who }}"
headline: "Probe headline"
body: |
  {% if recipient.name %}Hi {{ recipient.name }},{% else %}Hello,{% endif %}

  First paragraph,
  on two lines.
  {% if data.get("extra") %}
  Extra line.
  {% endif %}


  Last   paragraph.
sms: "Probe
  sms   for {{ who }}"
"""


def probe_context(name: str | None = "Ana", **data: Any) -> dict[str, Any]:
    return {
        "recipient": {"name": name},
        "data": data,
        "store": {"name": "Probe Shop", "support_email": "help@probe.test"},
    }


def render(renderer: Renderer, channel: str, kind: str = "probe", **kw: Any) -> RenderedMessage:
    return renderer.render(kind, channel, "en", None, probe_context(**kw))


@pytest.fixture
def overrides(tmp_path: Path) -> Path:
    return tmp_path / "overrides"


@pytest.fixture
def renderer(overrides: Path) -> Renderer:
    return Renderer(TemplateStore(override_dir=overrides))


def test_one_catalogue_feeds_every_channel_with_defaults(
    overrides: Path, renderer: Renderer
) -> None:
    write(overrides, "en.yaml", PROBE, kind="probe")
    body = "Hi Ana,\n\nFirst paragraph,\non two lines.\n\nLast paragraph."
    assert render(renderer, "sms").parts == {
        "txt": "Probe sms for Ana",
        "txt_short": "Probe sms for Ana",
    }
    assert render(renderer, "push").parts == {"title": "Probe headline", "txt": "Probe sms for Ana"}
    assert render(renderer, "in_app").parts == {"title": "Probe headline", "txt": body}
    mail = render(renderer, "email")
    assert set(mail.parts) == {"subject", "txt", "html"}
    assert mail.parts["subject"] == "Probe for Ana"
    assert mail.parts["txt"] == (
        "Probe headline\n\n" + body + "\n\n-- \nProbe Shop\nhelp@probe.test"
    )
    assert render(renderer, "in_app", extra=True).parts["txt"] == (
        "Hi Ana,\n\nFirst paragraph,\non two lines.\nExtra line.\n\nLast paragraph."
    )
    assert render(renderer, "in_app", name=None).parts["txt"].startswith("Hello,\n\nFirst")
    # A catalogue does not serve channels it knows nothing about.
    store = TemplateStore(override_dir=overrides)
    assert store.locales_for("probe", "sms") == ["en"]
    assert store.locales_for("probe", "fax") == []
    assert "probe" in store.kinds()


def test_optional_fields_override_the_defaults(overrides: Path, renderer: Renderer) -> None:
    write(
        overrides,
        "en.yaml",
        PROBE
        + 'sms_short: "Short"\npush_title: "Push T"\npush_body: "Push B"\n'
        + 'in_app_title: "Inbox T"\nin_app_body: |\n  Inbox\n\n\n  body\n',
        kind="probe",
    )
    assert render(renderer, "sms").parts["txt_short"] == "Short"
    assert render(renderer, "push").parts == {"title": "Push T", "txt": "Push B"}
    assert render(renderer, "in_app").parts == {"title": "Inbox T", "txt": "Inbox\n\nbody"}


ESCAPE_CATALOGUE = """\
subject: "Hello {{ recipient.name }}"
headline: "For {{ recipient.name }}"
body: "Dear {{ recipient.name }}"
next_step: "Next for {{ recipient.name }}"
action:
  label: "Go {{ recipient.name }}"
  url: "{{ data.url }}"
sms: "x"
"""


def test_user_data_is_escaped_in_html_and_verbatim_in_text(
    overrides: Path, renderer: Renderer
) -> None:
    write(overrides, "en.yaml", ESCAPE_CATALOGUE, kind="probe")
    name = "<b>x</b>"
    mail = render(renderer, "email", name=name, url="https://shop.test/p?a=1&b=<2>")
    html, txt = mail.parts["html"], mail.parts["txt"]
    assert "<b>x</b>" not in html
    for expected in (
        "<title>Hello &lt;b&gt;x&lt;/b&gt;</title>",
        ">For &lt;b&gt;x&lt;/b&gt;</h1>",
        ">Dear &lt;b&gt;x&lt;/b&gt;</p>",
        ">Next for &lt;b&gt;x&lt;/b&gt;</td>",
        '<a href="https://shop.test/p?a=1&amp;b=&lt;2&gt;"',
        ">Go &lt;b&gt;x&lt;/b&gt;</a>",
    ):
        assert expected in html
    assert mail.parts["subject"] == "Hello <b>x</b>"
    assert txt.startswith("For <b>x</b>\n\nDear <b>x</b>\n\nNext for <b>x</b>\n\n")
    assert "Go <b>x</b>\nhttps://shop.test/p?a=1&b=<2>\n" in txt
    assert "&lt;" not in txt + mail.parts["subject"]


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "  javascript:alert(1)",
        "java\tscript:alert(1)",
        "https://ok.test/\nx",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "//evil.test/x",
        "/relative/path",
        "mailto:help@probe.test",
        "https://",
        "",
    ],
)
def test_unsafe_action_url_drops_the_button(overrides: Path, renderer: Renderer, url: str) -> None:
    write(overrides, "en.yaml", ESCAPE_CATALOGUE, kind="probe")
    mail = render(renderer, "email", name="Ana", url=url)
    assert "Go Ana" not in mail.parts["html"]
    assert "Go Ana" not in mail.parts["txt"]
    assert "script" not in mail.parts["html"].lower()
    assert "evil" not in mail.parts["html"]
    # Everything else of the message is still there.
    assert ">Next for Ana</td>" in mail.parts["html"]


def test_per_part_file_beats_the_catalogue(overrides: Path, renderer: Renderer) -> None:
    builtin = renderer.render(KIND, "email", "en", None, make_context())
    write(overrides, "email.en.subject", "Override {{ money(data.amount, data.currency) }}")
    write(overrides, "sms.en.txt_short", "Short override")
    mail = renderer.render(KIND, "email", "en", None, make_context())
    assert mail.parts["subject"] == "Override €12.50"
    assert mail.parts["txt"] == builtin.parts["txt"]
    assert mail.parts["html"] == builtin.parts["html"]
    assert mail.version != builtin.version
    sms = renderer.render(KIND, "sms", "en", None, make_context())
    assert sms.parts["txt_short"] == "Short override"
    assert sms.parts["txt"].startswith("Your refund of €12.50 for order #1042 is on its way.")
    # French has no per-part file: untouched.
    french = renderer.render(KIND, "email", "fr", None, make_context())
    assert french.parts["subject"].startswith("Votre remboursement")


def test_builtin_per_part_file_beats_an_override_catalogue(tmp_path: Path) -> None:
    builtin, overrides = tmp_path / "builtin", tmp_path / "overrides"
    for name in ("email.html", "email.txt"):
        write(builtin, name, (BUILTIN_DIR / "_layouts" / name).read_text(), kind="_layouts")
    write(builtin, "in_app.en.title", "Built-in title", kind="probe")
    write(overrides, "en.yaml", PROBE, kind="probe")
    renderer = Renderer(TemplateStore(builtin_dir=builtin, override_dir=overrides))
    assert render(renderer, "in_app").parts["title"] == "Built-in title"
    assert render(renderer, "in_app").parts["txt"].startswith("Hi Ana,")
    assert render(renderer, "push").parts["title"] == "Probe headline"


def test_override_catalogue_beats_builtin_and_version_follows_it(
    overrides: Path, renderer: Renderer
) -> None:
    before = renderer.render(KIND, "email", "en", None, make_context())
    sms_before = renderer.render(KIND, "sms", "en", None, make_context())
    path = write(overrides, "en.yaml", PROBE.replace("Probe for", "Custom for"))
    first = renderer.render(KIND, "email", "en", None, make_context())
    assert first.parts["subject"] == "Custom for Ana"
    assert first.parts["txt"].startswith("Probe headline\n\nHi Ana,\n\nFirst paragraph,")
    assert first.version != before.version
    sms = renderer.render(KIND, "sms", "en", None, make_context())
    assert sms.parts["txt"] == "Probe sms for Ana"
    assert sms.version != sms_before.version
    path.write_text(PROBE.replace("Probe for", "Edited for"), encoding="utf-8")
    second = renderer.render(KIND, "email", "en", None, make_context())
    assert second.parts["subject"] == "Edited for Ana"
    assert second.version not in (first.version, before.version)
    assert renderer.render(KIND, "email", "en", None, make_context()).version == second.version
    # Other locales keep the built-in catalogue.
    french = renderer.render(KIND, "email", "fr", None, make_context())
    assert (
        french.version
        == Renderer(TemplateStore()).render(KIND, "email", "fr", None, make_context()).version
    )
    path.unlink()
    assert renderer.render(KIND, "email", "en", None, make_context()) == before


def test_override_layout_beats_builtin_and_version_follows_it(
    overrides: Path, renderer: Renderer
) -> None:
    before = renderer.render(KIND, "email", "en", None, make_context())
    sms = renderer.render(KIND, "sms", "en", None, make_context())
    layout = "{{ store.name }} | {{ message.headline }} | {{ message.paragraphs|length }}"
    path = write(overrides, "email.txt", layout, kind="_layouts")
    first = renderer.render(KIND, "email", "en", None, make_context())
    assert first.parts["txt"] == "Acme & Co | Your refund is on its way | 3"
    assert first.parts["html"] == before.parts["html"]
    assert first.version != before.version
    path.write_text(layout + " | {{ lang }}", encoding="utf-8")
    second = renderer.render(KIND, "email", "en", None, make_context())
    assert second.parts["txt"].endswith(" | 3 | en")
    assert second.version not in (first.version, before.version)
    # Layouts are email-only: other channels do not change version.
    assert renderer.render(KIND, "sms", "en", None, make_context()).version == sms.version


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- subject\n- body\n", "expected a mapping of keys to text, got list"),
        ("", "expected a mapping of keys to text, got NoneType"),
        ("subject: [\n", "is not valid YAML"),
        ("subject: a\nheadline: b\nbody: c\nsms: d\nsubjet: typo\n", "unknown key(s) subjet"),
        ("subject: a\nheadline: b\nbody: c\n", "missing required key(s) sms"),
        ("subject: 2026\nheadline: b\nbody: c\nsms: d\n", "'subject' must be text"),
        ("subject: a\nheadline: b\nbody: c\nsms: yes\n", "'sms' must be text"),
        ("subject: a\nheadline: b\nbody: c\nsms: d\naction: {label: x}\n", "'action' must be"),
        (
            "subject: a\nheadline: b\nbody: c\nsms: d\naction: {label: x, url: 1}\n",
            "'action.url' must be text",
        ),
        ("subject: a\nheadline: b\nbody: c\nsms: d\nsms: e\n", "duplicated key 'sms'"),
    ],
)
def test_invalid_catalogue_is_a_clear_error_naming_the_file(
    overrides: Path, renderer: Renderer, text: str, problem: str
) -> None:
    path = write(overrides, "en.yaml", text, kind="probe")
    with pytest.raises(CatalogueError) as caught:
        render(renderer, "in_app")
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)
    assert isinstance(caught.value, RenderError)  # the worker treats it as permanent
    assert caught.value.code == "template_invalid"


def test_jinja_error_in_a_catalogue_names_file_field_and_part(
    overrides: Path, renderer: Renderer
) -> None:
    write(overrides, "en.yaml", PROBE.replace("Probe headline", "{{ data.nope.deeper }}"), "probe")
    with pytest.raises(
        RenderError, match=r"probe/push locale=en part=title .*en\.yaml \[headline\]"
    ):
        render(renderer, "push")
    with pytest.raises(RenderError, match=r"probe/email locale=en part=txt .*\[headline\]"):
        render(renderer, "email")
    assert render(renderer, "sms").parts["txt"] == "Probe sms for Ana"


def test_a_line_ending_in_a_tag_keeps_its_line_break(overrides: Path, renderer: Renderer) -> None:
    catalogue = PROBE.replace(
        "  First paragraph,\n  on two lines.\n",
        "  {% if data.get('extra') %}With extra.{% else %}No extra.{% endif %}\n"
        "  Same paragraph.\n",
    )
    write(overrides, "en.yaml", catalogue, kind="probe")
    # "Hi Ana,{% else %}...{% endif %}" ends its line: the blank line after it still counts.
    assert render(renderer, "in_app").parts["txt"] == (
        "Hi Ana,\n\nNo extra.\nSame paragraph.\n\nLast paragraph."
    )


BRANDED = """\
subject: "s"
headline: "h"
body: "b"
sms: "x"
"""


@pytest.mark.parametrize(
    ("store", "present", "absent"),
    [
        ({}, ["#1f4e79"], ["<img", "mailto:", "None"]),
        (
            {"name": "Lumen", "primary_color": "#AA0011", "logo_url": "https://cdn.test/l.png"},
            ["#AA0011", '<img src="https://cdn.test/l.png" alt="Lumen"'],
            ["#1f4e79"],
        ),
        (
            {"primary_color": "red;background:url(https://evil.test)", "logo_url": "javascript:x"},
            ["#1f4e79"],
            ["evil", "<img", "javascript"],
        ),
        (
            {"footer": "Footer <i>text</i>", "address": "1 Main St\nSpringfield"},
            ["Footer &lt;i&gt;text&lt;/i&gt;", "1 Main St<br>Springfield<br>"],
            ["<i>"],
        ),
    ],
)
def test_layout_branding_has_defaults_and_refuses_unsafe_values(
    overrides: Path,
    renderer: Renderer,
    store: dict[str, str],
    present: list[str],
    absent: list[str],
) -> None:
    write(overrides, "en.yaml", BRANDED, kind="probe")
    context = {"recipient": {"name": None}, "data": {}, "store": store}
    mail = renderer.render("probe", "email", "en", None, context)
    for text in present:
        assert text in mail.parts["html"]
    for text in absent:
        assert text not in mail.parts["html"]
    assert "None" not in mail.parts["txt"]


def test_layout_language_comes_from_the_resolved_locale(
    overrides: Path, renderer: Renderer
) -> None:
    for locale in ("fr", "ar"):
        write(overrides, f"{locale}.yaml", BRANDED, kind="probe")
    context = {"recipient": {"name": None}, "data": {}, "store": {}}
    html = renderer.render("probe", "email", "fr-CA", None, context).parts["html"]
    assert '<html lang="fr" dir="ltr">' in html
    html = renderer.render("probe", "email", "ar_EG", None, context).parts["html"]
    assert '<html lang="ar" dir="rtl">' in html
