"""Address checks: email and phone normalization, FCM tokens, Web Push subscriptions."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import phonenumbers
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from tidings.engine.addresses import (
    AddressError,
    fcm_token,
    normalize_email,
    normalize_phone,
    push_endpoint_of,
    push_subscription,
    region_from_locale,
)

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
NUMBER_TYPES = [
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.TOLL_FREE,
]


def b64url(raw: bytes, *, padded: bool = False) -> str:
    text = base64.urlsafe_b64encode(raw).decode()
    return text if padded else text.rstrip("=")


def p256_point() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def subscription(**changes: object) -> dict[str, object]:
    keys = {"p256dh": b64url(p256_point()), "auth": b64url(bytes(range(16)))}
    base: dict[str, object] = {
        "endpoint": "https://fcm.googleapis.com/fcm/send/abc:def",
        "expirationTime": None,
        "keys": keys,
    }
    for key, value in changes.items():
        if key in ("p256dh", "auth"):
            keys[key] = value  # type: ignore[assignment]
        else:
            base[key] = value
    return base


def attempt(call: Callable[[], str]) -> str | AddressError:
    """The normalized address, or the error that refused it."""
    try:
        return call()
    except AddressError as exc:
        return exc


def code_of(call: object) -> tuple[str, str]:
    assert callable(call)
    with pytest.raises(AddressError) as caught:
        call()
    return caught.value.code, caught.value.field


# --- phone -------------------------------------------------------------------------------


@st.composite
def valid_e164(draw: st.DrawFn) -> str:
    region = draw(st.sampled_from(REGIONS))
    number = phonenumbers.example_number_for_type(region, draw(st.sampled_from(NUMBER_TYPES)))
    if number is None or not phonenumbers.is_valid_number(number):
        number = phonenumbers.example_number(region)
    if number is None or not phonenumbers.is_valid_number(number):
        number = phonenumbers.parse("+33612345678")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@given(valid_e164(), st.sampled_from([None, "FR", "US", "JP"]))
def test_valid_e164_stays_itself_whatever_the_region(number: str, region: str | None) -> None:
    assert normalize_phone(number, region=region) == number


@given(
    st.text(alphabet="+0123456789 ()-./", max_size=24),
    st.sampled_from([None, *REGIONS[:40], "FR", "US", "GB", "DE"]),
)
def test_phone_normalization_is_idempotent(text: str, region: str | None) -> None:
    once = attempt(lambda: normalize_phone(text, region=region))
    if isinstance(once, AddressError):
        assert (once.code, once.field) == ("invalid_phone", "phone")
        assert "+" in once.detail  # tells what to send
        return
    assert once.startswith("+")
    assert once[1:].isdigit()
    assert normalize_phone(once, region=region) == once
    assert normalize_phone(once) == once  # E.164 needs no region


@given(valid_e164())
def test_national_form_reads_in_the_locale_country(number: str) -> None:
    parsed = phonenumbers.parse(number)
    region = phonenumbers.region_code_for_number(parsed)
    national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    if phonenumbers.parse(national, region) != parsed:
        return  # a few plans write national numbers that libphonenumber cannot read back
    assert normalize_phone(national, region=region) == number


def test_phone_examples() -> None:
    assert normalize_phone("06 12 34 56 78", region="FR") == "+33612345678"
    assert normalize_phone("0033 6 12 34 56 78", region="FR") == "+33612345678"
    assert normalize_phone("+1 (415) 555-2671") == "+14155552671"
    assert code_of(lambda: normalize_phone("06 12 34 56 78")) == ("invalid_phone", "phone")
    assert code_of(lambda: normalize_phone("+33 1", region="FR")) == ("invalid_phone", "phone")
    assert code_of(lambda: normalize_phone("call me")) == ("invalid_phone", "phone")
    assert code_of(lambda: normalize_phone("")) == ("invalid_phone", "phone")


@pytest.mark.parametrize(
    ("locale", "region"),
    [
        ("fr-FR", "FR"),
        ("en_US", "US"),
        ("zh-Hant-TW", "TW"),
        ("pt-br", "BR"),
        ("fr", None),
        ("es-419", None),  # a UN M.49 area, not a country
        ("en-ZZ", None),
        (None, None),
        ("", None),
    ],
)
def test_region_from_locale(locale: str | None, region: str | None) -> None:
    assert region_from_locale(locale) == region


# --- email -------------------------------------------------------------------------------


@given(st.emails())
def test_email_normalization_is_idempotent(email: str) -> None:
    once = attempt(lambda: normalize_email(email))
    if isinstance(once, AddressError):
        assert (once.code, once.field) == ("invalid_email", "email")
        return
    assert normalize_email(once) == once


@given(st.text(max_size=40))
def test_any_text_is_an_address_or_a_clear_error(text: str) -> None:
    once = attempt(lambda: normalize_email(text))
    if isinstance(once, AddressError):
        assert (once.code, once.field) == ("invalid_email", "email")
        assert once.detail.endswith("camille@example.fr.")
        return
    assert "@" in once
    assert normalize_email(once) == once


def test_email_examples() -> None:
    assert normalize_email("  Camille@EXAMPLE.FR ") == "Camille@example.fr"
    assert normalize_email("x@BÜCHER.de") == "x@bücher.de"
    for bad in ("camille", "camille@", "a b@example.fr", "x@localhost", "x" * 320 + "@a.fr"):
        assert code_of(lambda bad=bad: normalize_email(bad)) == ("invalid_email", "email")


# --- FCM ---------------------------------------------------------------------------------


def test_fcm_tokens() -> None:
    token = "dGVzdA:APA91bH" + "x" * 140
    assert fcm_token(f"  {token}\n") == token
    assert fcm_token("t" * 4096) == "t" * 4096
    for bad in (None, "", "   ", 42, "t" * 4097, "has space", "tab\there", "é-token"):
        assert code_of(lambda bad=bad: fcm_token(bad)) == ("invalid_fcm_token", "token")


@given(st.text(min_size=1, max_size=64))
def test_fcm_token_is_visible_ascii_or_refused(text: str) -> None:
    token = attempt(lambda: fcm_token(text))
    if isinstance(token, AddressError):
        stripped = text.strip()
        assert not stripped or any(not ("!" <= c <= "~") for c in stripped)
        return
    assert token == text.strip()
    assert fcm_token(token) == token


# --- Web Push ----------------------------------------------------------------------------


def test_subscription_is_canonical() -> None:
    sent = subscription()
    canonical = push_subscription(sent)
    stored = json.loads(canonical)
    assert stored == {"endpoint": sent["endpoint"], "keys": sent["keys"]}
    assert push_endpoint_of(canonical) == sent["endpoint"]
    # Padding, key order and extra members do not make another address.
    keys = sent["keys"]
    assert isinstance(keys, dict)
    padded = {
        "keys": {
            "auth": b64url(base64.urlsafe_b64decode(keys["auth"] + "=="), padded=True),
            "p256dh": keys["p256dh"] + "=",
        },
        "endpoint": sent["endpoint"],
    }
    assert push_subscription(padded) == canonical
    assert push_subscription(json.loads(canonical)) == canonical


def test_bad_subscriptions_name_the_field() -> None:
    point = p256_point()
    off_curve = b"\x04" + bytes(64)
    cases = [
        ("not an object", ("invalid_push_subscription", "subscription")),
        (subscription(endpoint="http://push.example.com/x"), ("invalid_push_endpoint",)),
        (subscription(endpoint="https:///nohost"), ("invalid_push_endpoint",)),
        (subscription(endpoint="https://push.example.com:port/x"), ("invalid_push_endpoint",)),
        (subscription(endpoint=None), ("invalid_push_endpoint",)),
        (subscription(keys=None), ("invalid_push_subscription", "subscription.keys")),
        (subscription(p256dh=b64url(point[1:])), ("invalid_push_key",)),
        (subscription(p256dh=b64url(b"\x02" + point[1:33])), ("invalid_push_key",)),
        (subscription(p256dh=b64url(off_curve)), ("invalid_push_key",)),
        (subscription(p256dh="not base64!"), ("invalid_push_key",)),
        (subscription(auth=b64url(bytes(15))), ("invalid_push_auth",)),
        (subscription(auth=b64url(bytes(17))), ("invalid_push_auth",)),
        (subscription(auth=None), ("invalid_push_auth",)),
    ]
    fields = {
        "invalid_push_endpoint": "subscription.endpoint",
        "invalid_push_key": "subscription.keys.p256dh",
        "invalid_push_auth": "subscription.keys.auth",
    }
    for value, expected in cases:
        code, field = code_of(lambda value=value: push_subscription(value))
        assert code == expected[0], value
        assert field == (expected[1] if len(expected) > 1 else fields[code]), value
