"""Checking and normalizing the addresses customers give us: email, phone, push devices.

Pure functions: each takes what a client sent and returns the canonical form to store, or
raises ``AddressError`` with a stable code, the field at fault and a sentence saying what
to send instead. Storing one canonical form is what makes "the same address again" and
suppression lists match.

Followed: ITU-T E.164 through libphonenumber's metadata (``phonenumbers``); RFC 5321/6531
mailbox syntax through ``email-validator``; for Web Push the W3C Push API
``PushSubscription.toJSON()`` shape, RFC 8291 section 3.1 (``p256dh`` is a P-256 point in
uncompressed form, ``auth`` a 16-octet secret, both base64url per RFC 4648 section 5) and
RFC 8030 section 8 (push resources are only reached over HTTPS); for FCM the
registration token as the client SDK hands it over.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

import phonenumbers
from cryptography.hazmat.primitives.asymmetric import ec
from email_validator import EmailNotValidError, validate_email

MAX_EMAIL_LENGTH = 320  # RFC 5321 4.5.3.1: 64 octets local part, "@", 255 octets domain
MAX_PHONE_INPUT = 64  # generous for spaces, dots, brackets and an extension
MAX_FCM_TOKEN = 4096
MAX_PUSH_ENDPOINT = 4096
P256_POINT_BYTES = 65  # SEC 1 2.3.3: 0x04 | X (32 octets) | Y (32 octets)
PUSH_AUTH_BYTES = 16  # RFC 8291 section 3.2

# RFC 4648 section 5, padding optional (browsers send it without).
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
# Visible ASCII only: a token with a space or a control character was mangled on its way.
_TOKEN = re.compile(r"[\x21-\x7e]+")
# BCP 47 (RFC 5646 2.1): language, optional 4-letter script, then the region subtag.
_LOCALE_REGION = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z]{4})?[-_]([A-Za-z]{2})(?:[-_].*)?$")


class AddressError(ValueError):
    def __init__(self, code: str, field: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.field = field
        self.detail = detail


def normalize_email(value: str) -> str:
    """The mailbox as ``email-validator`` normalizes it (domain lowercased, Unicode NFC).

    Deliverability (DNS) is not checked: a customer's mailbox is proven by the mail that
    reaches it, and a lookup here would make saving preferences depend on the network.
    """
    text = value.strip()
    if len(text) > MAX_EMAIL_LENGTH:
        raise AddressError(
            "invalid_email",
            "email",
            f"The email address is longer than {MAX_EMAIL_LENGTH} characters; "
            "send a single mailbox like camille@example.fr.",
        )
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise AddressError(
            "invalid_email",
            "email",
            f"{exc} Send a single mailbox like camille@example.fr.",
        ) from exc
    normalized: str = result.normalized
    return normalized


def region_from_locale(locale: str | None) -> str | None:
    """The country a locale names (``fr-FR`` → ``FR``), if libphonenumber knows it."""
    if not locale:
        return None
    match = _LOCALE_REGION.match(locale.strip())
    if match is None:
        return None
    region = match.group(1).upper()
    return region if region in phonenumbers.SUPPORTED_REGIONS else None


def normalize_phone(value: str, *, region: str | None = None) -> str:
    """The number in E.164 form (``+33612345678``).

    A number without a leading ``+`` is read as a national number of ``region`` (taken
    from the customer's locale); without a region only international form is accepted.
    """
    text = value.strip()
    example = _example(region)
    if not text or len(text) > MAX_PHONE_INPUT:
        raise AddressError(
            "invalid_phone", "phone", f"Send the phone number in international form, {example}."
        )
    try:
        # ITU-T E.164 section 6: a leading "+" means the country code follows, so the
        # region only matters for numbers written the national way.
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            hint = (
                "it has no country code and the customer's locale names no country"
                if region is None
                else "its country code is unknown"
            )
        else:
            hint = "it is not a phone number"
        raise AddressError(
            "invalid_phone", "phone", f"'{text}' cannot be read: {hint}. Send it as {example}."
        ) from exc
    if not phonenumbers.is_valid_number(number):
        raise AddressError(
            "invalid_phone",
            "phone",
            f"'{text}' is not a number in use in any numbering plan; send it as {example}.",
        )
    e164: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164


def _example(region: str | None) -> str:
    """An E.164 example for the customer's country, for error messages."""
    number = phonenumbers.example_number(region) if region else None
    if number is None:
        return "a '+' then the country code and number, e.g. +33612345678"
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return f"a '+' then the country code and number, e.g. {e164}"


def fcm_token(value: object) -> str:
    """An FCM registration token, as the client SDK returned it."""
    if not isinstance(value, str) or not value.strip():
        raise AddressError(
            "invalid_fcm_token",
            "token",
            "Send the registration token from the Firebase SDK's getToken() in 'token'.",
        )
    token = value.strip()
    if len(token) > MAX_FCM_TOKEN or not _TOKEN.fullmatch(token):
        raise AddressError(
            "invalid_fcm_token",
            "token",
            f"An FCM registration token is printable ASCII without spaces, at most "
            f"{MAX_FCM_TOKEN} characters; send it exactly as getToken() returned it.",
        )
    return token


def push_subscription(value: object) -> str:
    """A Web Push subscription as canonical JSON: ``{"endpoint", "keys": {"auth", "p256dh"}}``.

    Keys are re-encoded (base64url, no padding) and JSON keys sorted, so the same browser
    subscription always yields the same text, whatever padding or key order the client sent.
    """
    if not isinstance(value, Mapping):
        raise AddressError(
            "invalid_push_subscription",
            "subscription",
            "Send the browser's PushSubscription.toJSON() object in 'subscription'.",
        )
    endpoint = _push_endpoint(value.get("endpoint"))
    keys = value.get("keys")
    if not isinstance(keys, Mapping):
        raise AddressError(
            "invalid_push_subscription",
            "subscription.keys",
            'Send the subscription\'s keys as {"p256dh": ..., "auth": ...}, as '
            "PushSubscription.toJSON() gives them.",
        )
    p256dh = _p256dh(keys.get("p256dh"))
    auth = _b64url(keys.get("auth"))
    if auth is None or len(auth) != PUSH_AUTH_BYTES:
        raise AddressError(
            "invalid_push_auth",
            "subscription.keys.auth",
            f"keys.auth must be the subscription's {PUSH_AUTH_BYTES}-byte authentication "
            "secret in base64url, as getKey('auth') gives it.",
        )
    canonical = {
        "endpoint": endpoint,
        "keys": {"auth": _b64url_text(auth), "p256dh": _b64url_text(p256dh)},
    }
    return json.dumps(canonical, sort_keys=True, separators=(",", ":"))


def push_endpoint_of(address: str) -> str:
    """The endpoint of a subscription stored by ``push_subscription`` ("" if unreadable)."""
    try:
        endpoint = json.loads(address).get("endpoint")
    except (ValueError, AttributeError):
        return ""
    return endpoint if isinstance(endpoint, str) else ""


def _push_endpoint(value: object) -> str:
    problem = AddressError(
        "invalid_push_endpoint",
        "subscription.endpoint",
        "subscription.endpoint must be the https:// URL of the push service that the "
        "browser's PushSubscription gave.",
    )
    if not isinstance(value, str) or not value or len(value) > MAX_PUSH_ENDPOINT:
        raise problem
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise problem from exc
    # RFC 8030 section 8: a push resource is only ever used over HTTPS.
    if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in value):
        raise problem
    return value


def _p256dh(value: object) -> bytes:
    raw = _b64url(value)
    problem = AddressError(
        "invalid_push_key",
        "subscription.keys.p256dh",
        "keys.p256dh must be the subscription's P-256 public key: 65 bytes starting with "
        "0x04 (uncompressed point), in base64url, as getKey('p256dh') gives it.",
    )
    if raw is None or len(raw) != P256_POINT_BYTES or raw[0] != 0x04:
        raise problem
    try:
        # Also proves the point lies on the curve, which the encryption relies on.
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError as exc:
        raise problem from exc
    return raw


def _b64url(value: object) -> bytes | None:
    if not isinstance(value, str) or not _BASE64URL.fullmatch(value):
        return None
    text = value.rstrip("=")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _b64url_text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
