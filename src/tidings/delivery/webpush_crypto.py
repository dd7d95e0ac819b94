"""Web Push message encryption (RFC 8291 over RFC 8188 ``aes128gcm``) and VAPID (RFC 8292).

Followed: RFC 8291 "Message Encryption for Web Push" sections 3.3-4 and its Appendix A
worked example; RFC 8188 "Encrypted Content-Encoding for HTTP" section 2 (header, records,
padding delimiters); RFC 8292 "VAPID" sections 2-3; RFC 7515 appendix A.3 for the raw
``r || s`` form of an ES256 signature.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# RFC 8291 section 4: one record of this size, and a push message body of at most 4096 octets.
RECORD_SIZE = 4096
SALT_BYTES = 16
KEY_ID_BYTES = 65  # an uncompressed P-256 point (X9.62): 0x04 | X | Y
HEADER_BYTES = SALT_BYTES + 4 + 1 + KEY_ID_BYTES
TAG_BYTES = 16
AUTH_SECRET_BYTES = 16
# Section 4: the plaintext of a single 4096-octet record, less its delimiter and the tag.
MAX_PLAINTEXT = RECORD_SIZE - HEADER_BYTES - TAG_BYTES - 1
# RFC 8292 section 2: "exp" no more than 24 hours after the request.
VAPID_MAX_LIFETIME = 24 * 3600
VAPID_LIFETIME = 12 * 3600

_LAST_RECORD = b"\x02"  # RFC 8188 section 2: delimiter of the final record
_NOT_LAST_RECORD = b"\x01"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 section 2), as JWS and push subscriptions use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Base64url with or without padding; anything else raises ValueError."""
    text = text.strip()
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))


def public_key_bytes(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def load_p256_public(raw: bytes) -> ec.EllipticCurvePublicKey:
    """A subscription's ``p256dh``: an uncompressed point on P-256 (RFC 8291 section 3.1)."""
    if len(raw) != KEY_ID_BYTES or raw[0] != 0x04:
        raise ValueError("expected a 65-byte uncompressed P-256 point")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)


def _hkdf(*, salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _content_keys(
    *, ecdh_secret: bytes, auth_secret: bytes, ua_public: bytes, as_public: bytes, salt: bytes
) -> tuple[bytes, bytes]:
    # RFC 8291 section 3.4: the auth secret and both public keys bind the key to this pair.
    key_info = b"WebPush: info\x00" + ua_public + as_public
    ikm = _hkdf(salt=auth_secret, ikm=ecdh_secret, info=key_info, length=32)
    # RFC 8188 section 2.2 and 2.3: CEK and NONCE from the header's salt.
    cek = _hkdf(salt=salt, ikm=ikm, info=b"Content-Encoding: aes128gcm\x00", length=16)
    nonce = _hkdf(salt=salt, ikm=ikm, info=b"Content-Encoding: nonce\x00", length=12)
    return cek, nonce


def _record_nonce(nonce: bytes, sequence: int) -> bytes:
    # RFC 8188 section 2.3: the base nonce XOR the record sequence number.
    value = int.from_bytes(nonce, "big") ^ sequence
    return value.to_bytes(12, "big")


def encrypt(
    plaintext: bytes,
    *,
    ua_public: bytes,
    auth_secret: bytes,
    salt: bytes | None = None,
    as_private: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """The push message body for one subscription. ``salt`` and ``as_private`` are fresh for
    every message unless given (only known-answer tests give them)."""
    if len(plaintext) > MAX_PLAINTEXT:
        raise ValueError(f"push payload of {len(plaintext)} bytes exceeds {MAX_PLAINTEXT}")
    if len(auth_secret) != AUTH_SECRET_BYTES:
        raise ValueError("auth secret must be 16 bytes (RFC 8291 section 3.2)")
    ua_key = load_p256_public(ua_public)
    # Section 3.1: a new key pair for every message, never reused.
    as_key = as_private if as_private is not None else ec.generate_private_key(ec.SECP256R1())
    as_public = public_key_bytes(as_key)
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    if len(salt) != SALT_BYTES:
        raise ValueError("salt must be 16 bytes")
    ecdh_secret = as_key.exchange(ec.ECDH(), ua_key)
    cek, nonce = _content_keys(
        ecdh_secret=ecdh_secret,
        auth_secret=auth_secret,
        ua_public=ua_public,
        as_public=as_public,
        salt=salt,
    )
    # Section 4: a single record, so the last-record delimiter and no padding beyond it.
    ciphertext = AESGCM(cek).encrypt(_record_nonce(nonce, 0), plaintext + _LAST_RECORD, None)
    # RFC 8188 section 2.1 header; RFC 8291 section 4: keyid is the sender's public key.
    header = salt + struct.pack("!IB", RECORD_SIZE, len(as_public)) + as_public
    return header + ciphertext


def decrypt(body: bytes, *, ua_private: ec.EllipticCurvePrivateKey, auth_secret: bytes) -> bytes:
    """What a user agent does on receipt (RFC 8291 section 3.4, RFC 8188 section 2).

    Raises ValueError when the body is malformed or fails authentication."""
    if len(body) < SALT_BYTES + 5:
        raise ValueError("body shorter than the aes128gcm header")
    salt = body[:SALT_BYTES]
    record_size, id_length = struct.unpack("!IB", body[SALT_BYTES : SALT_BYTES + 5])
    if record_size < TAG_BYTES + 2:
        raise ValueError(f"record size {record_size} too small")
    key_end = SALT_BYTES + 5 + id_length
    as_public = body[SALT_BYTES + 5 : key_end]
    as_key = load_p256_public(as_public)
    ua_public = public_key_bytes(ua_private)
    cek, nonce = _content_keys(
        ecdh_secret=ua_private.exchange(ec.ECDH(), as_key),
        auth_secret=auth_secret,
        ua_public=ua_public,
        as_public=as_public,
        salt=salt,
    )
    payload = body[key_end:]
    if not payload:
        raise ValueError("no records")
    records = [payload[i : i + record_size] for i in range(0, len(payload), record_size)]
    cipher = AESGCM(cek)
    plaintext = bytearray()
    for sequence, record in enumerate(records):
        try:
            opened = cipher.decrypt(_record_nonce(nonce, sequence), record, None)
        except InvalidTag as exc:
            raise ValueError("record failed authentication") from exc
        # Section 2: padding is zeros after a delimiter, 0x02 on the last record only.
        unpadded = opened.rstrip(b"\x00")
        last = sequence == len(records) - 1
        expected = _LAST_RECORD if last else _NOT_LAST_RECORD
        if unpadded[-1:] != expected:
            raise ValueError("bad padding delimiter")
        plaintext += unpadded[:-1]
    return bytes(plaintext)


def load_vapid_private_key(value: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 key from PEM (PKCS#8 or SEC1) or from the base64url raw 32-byte scalar that
    VAPID key generators print."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
    else:
        try:
            raw = b64url_decode(text)
        except ValueError as exc:
            raise ValueError("VAPID private key is neither PEM nor base64url") from exc
        if len(raw) != 32:
            raise ValueError("a raw VAPID private key is a 32-byte P-256 scalar")
        key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("VAPID requires a P-256 (secp256r1) key (RFC 8292 section 3.2)")
    return key


def es256_jwt(claims: dict[str, object], private_key: ec.EllipticCurvePrivateKey) -> str:
    """A compact JWS signed with ES256 (RFC 7518 section 3.4)."""
    header = {"typ": "JWT", "alg": "ES256"}
    signing_input = (
        b64url_encode(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    )
    der = private_key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    # RFC 7518 3.4: JWS carries R and S as two 32-byte big-endian integers, not DER.
    r, s = decode_dss_signature(der)
    return signing_input + "." + b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def endpoint_origin(endpoint: str) -> str:
    """RFC 8292 section 2: "aud" is the origin of the push resource (RFC 6454)."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"push endpoint is not an http(s) URL: {endpoint!r}")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    default_port = 443 if parts.scheme == "https" else 80
    port = f":{parts.port}" if parts.port and parts.port != default_port else ""
    return f"{parts.scheme}://{host.lower()}{port}"


def vapid_authorization(
    endpoint: str,
    private_key: ec.EllipticCurvePrivateKey,
    subject: str,
    *,
    now: float,
    lifetime: int = VAPID_LIFETIME,
) -> str:
    """The ``Authorization`` header value for one push request (RFC 8292 section 3)."""
    # Section 2.1: the contact is a mailto: or https: URI.
    if not subject.startswith(("mailto:", "https:")):
        raise ValueError("VAPID subject must be a mailto: or https: URI (RFC 8292 section 2.1)")
    if not 0 < lifetime <= VAPID_MAX_LIFETIME:
        raise ValueError("VAPID token lifetime must be at most 24 hours (RFC 8292 section 2)")
    claims: dict[str, object] = {
        "aud": endpoint_origin(endpoint),
        "exp": int(now) + lifetime,
        "sub": subject,
    }
    token = es256_jwt(claims, private_key)
    # Section 3.1 (t) and 3.2 (k: the uncompressed public key, base64url).
    return f"vapid t={token}, k={b64url_encode(public_key_bytes(private_key))}"
