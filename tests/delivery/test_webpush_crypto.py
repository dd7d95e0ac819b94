"""RFC 8291 payload encryption against the RFC's own worked example, and VAPID tokens
checked the way a push service checks them (RFC 8292 section 4)."""

from __future__ import annotations

import json
import os
import struct

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tidings.delivery.webpush_crypto import (
    MAX_PLAINTEXT,
    RECORD_SIZE,
    b64url_decode,
    b64url_encode,
    decrypt,
    encrypt,
    endpoint_origin,
    load_vapid_private_key,
    public_key_bytes,
    vapid_authorization,
)

# RFC 8291 Appendix A, with the document's line breaks removed.
RFC_PLAINTEXT = b"When I grow up, I want to be a watermelon"
RFC_AS_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
RFC_AS_PUBLIC = (
    "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
)
RFC_UA_PRIVATE = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
RFC_UA_PUBLIC = (
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
)
RFC_AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
RFC_SALT = "DGv6ra1nlYgDCS1FRnbzlw"
RFC_BODY = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS"
    "6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulc"
    "y4a-fN"
)


def scalar_key(b64: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(b64url_decode(b64), "big"), ec.SECP256R1())


def new_user_agent() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    return ec.generate_private_key(ec.SECP256R1()), os.urandom(16)


def test_encrypt_reproduces_rfc8291_appendix_a() -> None:
    body = encrypt(
        RFC_PLAINTEXT,
        ua_public=b64url_decode(RFC_UA_PUBLIC),
        auth_secret=b64url_decode(RFC_AUTH),
        salt=b64url_decode(RFC_SALT),
        as_private=scalar_key(RFC_AS_PRIVATE),
    )
    assert body == b64url_decode(RFC_BODY)


def test_decrypt_opens_the_rfc8291_example() -> None:
    ua_private = scalar_key(RFC_UA_PRIVATE)
    assert public_key_bytes(ua_private) == b64url_decode(RFC_UA_PUBLIC)
    opened = decrypt(
        b64url_decode(RFC_BODY), ua_private=ua_private, auth_secret=b64url_decode(RFC_AUTH)
    )
    assert opened == RFC_PLAINTEXT


def test_header_layout_and_fresh_key_per_message() -> None:
    ua_private, auth = new_user_agent()
    ua_public = public_key_bytes(ua_private)
    first = encrypt(b"hello", ua_public=ua_public, auth_secret=auth)
    second = encrypt(b"hello", ua_public=ua_public, auth_secret=auth)
    salt, (rs, idlen) = first[:16], struct.unpack("!IB", first[16:21])
    key_id = first[21 : 21 + idlen]
    assert rs == RECORD_SIZE
    assert idlen == 65
    assert key_id[0] == 0x04
    # One record: plaintext, delimiter, 16-byte tag.
    assert len(first) == 21 + 65 + len(b"hello") + 1 + 16
    # RFC 8291 3.1 / RFC 8188 2.1: new salt and new sender key for every message.
    assert second[:16] != salt
    assert second[21:86] != key_id
    assert decrypt(first, ua_private=ua_private, auth_secret=auth) == b"hello"
    assert decrypt(second, ua_private=ua_private, auth_secret=auth) == b"hello"


def test_decrypt_refuses_a_wrong_auth_secret_or_key() -> None:
    ua_private, auth = new_user_agent()
    body = encrypt(b"secret", ua_public=public_key_bytes(ua_private), auth_secret=auth)
    with pytest.raises(ValueError, match="authentication"):
        decrypt(body, ua_private=ua_private, auth_secret=os.urandom(16))
    with pytest.raises(ValueError, match="authentication"):
        decrypt(body, ua_private=ec.generate_private_key(ec.SECP256R1()), auth_secret=auth)


def test_payload_limit_is_one_4096_byte_record() -> None:
    ua_private, auth = new_user_agent()
    ua_public = public_key_bytes(ua_private)
    largest = encrypt(b"x" * MAX_PLAINTEXT, ua_public=ua_public, auth_secret=auth)
    assert len(largest) == RECORD_SIZE
    with pytest.raises(ValueError, match="exceeds"):
        encrypt(b"x" * (MAX_PLAINTEXT + 1), ua_public=ua_public, auth_secret=auth)


def test_encrypt_rejects_a_key_that_is_not_an_uncompressed_point() -> None:
    ua_private, auth = new_user_agent()
    compressed = ua_private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    with pytest.raises(ValueError, match="uncompressed"):
        encrypt(b"hi", ua_public=compressed, auth_secret=auth)


def parse_vapid(header: str) -> tuple[dict[str, str], dict[str, object], bytes, bytes]:
    """Split ``vapid t=<jwt>, k=<key>`` and verify the ES256 signature with k."""
    scheme, _, params = header.partition(" ")
    assert scheme == "vapid"
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    token, k = fields["t"], b64url_decode(fields["k"])
    head_b64, claims_b64, signature_b64 = token.split(".")
    signature = b64url_decode(signature_b64)
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), k)
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    public.verify(der, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    return (
        json.loads(b64url_decode(head_b64)),
        json.loads(b64url_decode(claims_b64)),
        signature,
        k,
    )


def test_vapid_header_is_a_verifiable_es256_jwt_for_the_endpoint_origin() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = 1_800_000_000
    header = vapid_authorization(
        "https://push.example.net:8443/wpush/v2/abc?x=1", key, "mailto:ops@example.com", now=now
    )
    jwt_header, claims, signature, k = parse_vapid(header)
    assert jwt_header == {"typ": "JWT", "alg": "ES256"}
    assert len(signature) == 64  # raw r || s, not DER
    assert k == public_key_bytes(key)
    assert claims["aud"] == "https://push.example.net:8443"
    assert claims["sub"] == "mailto:ops@example.com"
    assert isinstance(claims["exp"], int)
    assert now < claims["exp"] <= now + 24 * 3600


def test_vapid_signature_fails_under_another_key() -> None:
    header = vapid_authorization(
        "https://push.example.net/x",
        ec.generate_private_key(ec.SECP256R1()),
        "https://shop.example.com",
        now=1_800_000_000,
    )
    other = b64url_encode(public_key_bytes(ec.generate_private_key(ec.SECP256R1())))
    forged = header.rsplit("k=", 1)[0] + f"k={other}"
    with pytest.raises(InvalidSignature):
        parse_vapid(forged)


def test_vapid_refuses_a_subject_that_is_not_a_contact_uri() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="mailto"):
        vapid_authorization("https://push.example.net/x", key, "ops@example.com", now=0)


def test_origin_drops_default_port_path_and_query() -> None:
    assert endpoint_origin("https://FCM.googleapis.com:443/fcm/send/abc") == (
        "https://fcm.googleapis.com"
    )
    assert endpoint_origin("http://127.0.0.1:8080/push/1") == "http://127.0.0.1:8080"
    with pytest.raises(ValueError, match="http"):
        endpoint_origin("ftp://push.example.net/x")


def test_vapid_key_loads_from_raw_scalar_and_from_pem_alike() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    raw = b64url_encode(key.private_numbers().private_value.to_bytes(32, "big"))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    assert public_key_bytes(load_vapid_private_key(raw)) == public_key_bytes(key)
    assert public_key_bytes(load_vapid_private_key(pem)) == public_key_bytes(key)
    with pytest.raises(ValueError, match="32-byte"):
        load_vapid_private_key(b64url_encode(b"short"))
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="P-256"):
        load_vapid_private_key(p384.decode())
