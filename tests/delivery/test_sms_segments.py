"""SMS length per GSM 03.38 and the choice of the text that fits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.delivery.sms_segments import (
    GSM7_ELLIPSIS,
    UCS2_ELLIPSIS,
    choose_text,
    is_gsm7,
    measure,
)

# ------------------------------------------------------------------ measure


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 0),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        # Extension characters take an escape and themselves: 80 of them fill one SMS.
        ("€" * 80, "GSM-7", 160, 1),
        ("[]{}|^~\\" + "a" * 144, "GSM-7", 160, 1),
        ("€" + "a" * 159, "GSM-7", 161, 2),
        # Accented letters of the default alphabet stay GSM-7.
        ("Café à Paris, voilà: £5 ¥ § ¿¡ ÄÖÑÜäöñüÆæßÉ", "GSM-7", 43, 1),
        ("a" * 70 + "ж", "UCS-2", 71, 2),
        ("ж" * 70, "UCS-2", 70, 1),
        ("ж" * 134, "UCS-2", 134, 2),
        ("ж" * 135, "UCS-2", 135, 3),
        # "…" is not GSM-7, and an emoji is two UTF-16 code units.
        ("Wait…", "UCS-2", 5, 1),
        ("😀" * 35, "UCS-2", 70, 1),
        ("😀" * 35 + "a", "UCS-2", 71, 2),
    ],
)
def test_measure_counts_units_and_segments(
    text: str, encoding: str, units: int, segments: int
) -> None:
    length = measure(text)
    assert (length.encoding, length.units, length.segments) == (encoding, units, segments)


def test_an_escape_pair_is_never_split_between_segments() -> None:
    # 306 septets would fill two segments, but "€" cannot start in the last septet of the
    # first one, so it moves whole and pushes the last character into a third.
    text = "a" * 152 + "€" + "a" * 152
    assert measure(text).units == 306
    assert measure(text).segments == 3


def test_a_surrogate_pair_is_never_split_between_segments() -> None:
    text = "a" * 66 + "😀" + "a" * 66
    assert measure(text).units == 134
    assert measure(text).segments == 3


def test_every_character_of_the_default_alphabet_is_gsm7_and_others_are_not() -> None:
    assert is_gsm7("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?")
    assert is_gsm7("¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
    assert is_gsm7("\f^{}\\[]~|€")
    for char in ("…", "ç", "ê", "\u2019", "\u201c", "\t", "ж", "😀", "\x1b"):
        assert not is_gsm7(char), char


# ------------------------------------------------------------------ choose_text


def words(count: int, word: str = "parcel") -> str:
    return " ".join([word] * count)


def test_the_full_text_is_used_when_it_fits() -> None:
    parts = {"txt": words(40), "txt_short": "Shipped."}
    assert measure(parts["txt"]).segments == 2
    assert choose_text(parts, max_segments=2) == parts["txt"]


def test_the_short_text_is_used_when_the_full_one_does_not_fit() -> None:
    parts = {"txt": words(100), "txt_short": "Your parcel has shipped."}
    assert choose_text(parts, max_segments=3) == "Your parcel has shipped."


def test_when_nothing_fits_the_shortest_text_is_cut_after_a_word() -> None:
    parts = {"txt": words(100), "txt_short": words(30, "colis")}
    chosen = choose_text(parts, max_segments=1)
    assert chosen.endswith(GSM7_ELLIPSIS)
    body = chosen.removesuffix(GSM7_ELLIPSIS)
    assert parts["txt_short"].startswith(body)
    assert parts["txt_short"][len(body)] == " "
    assert measure(chosen).segments == 1
    # The longest cut that fits: one more word would not.
    longer = parts["txt_short"][: len(body) + len(" colis")] + GSM7_ELLIPSIS
    assert measure(longer).segments > 1


def test_a_gsm7_text_is_cut_with_three_dots_so_it_stays_gsm7() -> None:
    chosen = choose_text({"txt": words(60)}, max_segments=1)
    assert chosen.endswith("...")
    assert measure(chosen).encoding == "GSM-7"


def test_a_ucs2_text_is_cut_with_the_ellipsis_character() -> None:
    chosen = choose_text({"txt": words(40, "посылка")}, max_segments=1)
    assert chosen.endswith(UCS2_ELLIPSIS)
    assert measure(chosen).segments == 1


def test_a_single_word_too_long_for_the_limit_is_never_cut() -> None:
    assert choose_text({"txt": "x" * 400}, max_segments=1) == GSM7_ELLIPSIS


def test_parts_without_text_or_a_limit_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="txt"):
        choose_text({"title": "Hello"}, max_segments=1)
    with pytest.raises(ValueError, match="max_segments"):
        choose_text({"txt": "Hello"}, max_segments=0)


# ------------------------------------------------------------------ properties

WORD_CHARS = st.sampled_from(list("abcdefghijklmnopqrstuvwxyzé€{}[]ж😀…ÄΩ0123456789.,!"))
WORD = st.text(WORD_CHARS, min_size=1, max_size=30)
SEPARATOR = st.sampled_from([" ", "  ", "\n", " \n "])


@st.composite
def sentences(draw: st.DrawFn) -> str:
    chunks = draw(st.lists(st.tuples(WORD, SEPARATOR), min_size=1, max_size=80))
    return "".join(word + separator for word, separator in chunks).rstrip()


@given(
    txt=sentences(),
    txt_short=st.none() | sentences(),
    max_segments=st.integers(min_value=1, max_value=4),
)
def test_the_chosen_text_always_fits_and_never_cuts_a_word(
    txt: str, txt_short: str | None, max_segments: int
) -> None:
    parts = {"txt": txt} if txt_short is None else {"txt": txt, "txt_short": txt_short}
    chosen = choose_text(parts, max_segments=max_segments)

    assert measure(chosen).segments <= max_segments
    if chosen in parts.values():
        return
    ellipsis = UCS2_ELLIPSIS if chosen.endswith(UCS2_ELLIPSIS) else GSM7_ELLIPSIS
    assert chosen.endswith(ellipsis)
    body = chosen[: -len(ellipsis)]
    # A prefix of one of the texts that ends where a word ends, before whitespace.
    assert any(
        text.startswith(body) and (not body or text[len(body)].isspace()) for text in parts.values()
    )
    # Cutting never changes the encoding of what is kept.
    if body and is_gsm7(body):
        assert ellipsis == GSM7_ELLIPSIS
        assert measure(chosen).encoding == "GSM-7"


@given(txt=sentences(), max_segments=st.integers(min_value=1, max_value=4))
def test_a_text_that_fits_is_sent_whole(txt: str, max_segments: int) -> None:
    chosen = choose_text({"txt": txt, "txt_short": "short"}, max_segments=max_segments)
    assert (chosen == txt) == (measure(txt).segments <= max_segments)
