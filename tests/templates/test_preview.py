"""Previews: sample contexts, default branding, rendering a kind as a customer gets it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings.templates import preview as preview_module
from tidings.templates.preview import (
    KINDS_WITH_SAMPLES,
    SampleError,
    default_store,
    preview,
    sample_context,
)
from tidings.templates.rendering import Renderer, RenderError
from tidings.templates.store import TemplateNotFound, TemplateStore


def test_kinds_with_samples_are_sorted_and_loadable() -> None:
    assert list(KINDS_WITH_SAMPLES) == sorted(KINDS_WITH_SAMPLES)
    assert {"refund_authorized", "inventory_digest", "back_in_stock"} <= set(KINDS_WITH_SAMPLES)
    for kind in KINDS_WITH_SAMPLES:
        context = sample_context(kind)
        assert {"data", "order", "recipient", "event"} <= set(context)
        assert "store" not in context


def test_sample_context_is_a_fresh_copy() -> None:
    first = sample_context("refund_authorized")
    first["data"]["amount"] = 1
    assert sample_context("refund_authorized")["data"]["amount"] == 1250


def test_unknown_kind_names_the_kinds_that_have_samples() -> None:
    with pytest.raises(TemplateNotFound, match=r"kinds with samples: .*refund_authorized"):
        sample_context("no_such_kind")
    with pytest.raises(LookupError):  # what the CLI catches
        sample_context("../refund_authorized")


def test_preview_renders_in_the_requested_locale_with_the_given_store() -> None:
    renderer = Renderer(TemplateStore())
    store = {**default_store(), "name": "Maison Test", "support_email": "aide@maison.test"}
    msg = preview(renderer, "refund_failed", "email", "fr", store)
    assert msg.locale == "fr"
    assert "aide@maison.test" in msg.parts["txt"]
    assert "\nMaison Test\n" in msg.parts["txt"]
    assert msg.parts["subject"] == (
        "Votre remboursement pour la commande n°\u00a01042 n\u2019a pas pu aboutir"
    )


def test_default_store_has_every_branding_key() -> None:
    assert set(default_store()) == {
        "name",
        "sender_name",
        "support_email",
        "logo_url",
        "primary_color",
        "accent_color",
        "footer",
        "address",
    }


def test_sample_dates_become_iso_strings_and_bad_samples_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preview_module, "BUILTIN_DIR", tmp_path)
    good = tmp_path / "probe" / "sample.yaml"
    good.parent.mkdir()
    good.write_text(
        "data: {restock_eta: 2026-12-05, at: 2026-11-21T10:00:00+00:00, n: [2026-01-02]}\n"
        "order: {id: '1', number: null}\nrecipient: {name: A}\nevent: {id: e}\n"
        "store: {name: ignored}\n",
        encoding="utf-8",
    )
    context = sample_context("probe")
    assert context["data"] == {
        "restock_eta": "2026-12-05",
        "at": "2026-11-21T10:00:00+00:00",
        "n": ["2026-01-02"],
    }
    assert "store" not in context
    for text, problem in [
        ("- a\n", "is not a mapping"),
        ("data: {}\norder: {}\nrecipient: {}\n", "needs mappings for: event"),
        ("data: [\n", "is not valid YAML"),
        ("data: {}\ndata: {}\n", "duplicated key"),
    ]:
        good.write_text(text, encoding="utf-8")
        with pytest.raises(SampleError, match=problem) as caught:
            sample_context("probe")
        assert str(good) in str(caught.value)
        assert isinstance(caught.value, RenderError)
