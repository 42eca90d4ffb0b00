"""``gateway.channels.webpush_encrypt``: RFC 8291 ``aes128gcm`` bodies, checked against the RFC's own
example byte for byte and decrypted by http_ece (pywebpush's implementation) as a browser would."""

from __future__ import annotations

import base64
import os

import http_ece
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.channels.webpush import MAX_PLAINTEXT
from gateway.channels.webpush_encrypt import Encryptor, encrypt


def b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_rfc_8291_appendix_a() -> None:
    """The RFC's example: its sender key and salt fixed, the body must be exactly the RFC's."""
    receiver_point = b64(
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
    )
    sender = ec.derive_private_key(
        int.from_bytes(b64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"), "big"), ec.SECP256R1()
    )
    body = encrypt(
        receiver_point,
        b64("BTBZMqHH6r4Tts7J_aSIgg"),
        b"When I grow up, I want to be a watermelon",
        sender=sender,
        salt=b64("DGv6ra1nlYgDCS1FRnbzlw"),
    )
    assert base64.urlsafe_b64encode(body).rstrip(b"=").decode() == (
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6Tl"
        "zAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
    )


@pytest.mark.parametrize("size", [0, 1, 300, MAX_PLAINTEXT])
async def test_a_browser_decrypts_what_the_encryptor_sends(size: int) -> None:
    browser = ec.generate_private_key(ec.SECP256R1())
    point = browser.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    p256dh = base64.urlsafe_b64encode(point).rstrip(b"=").decode()
    secret = os.urandom(16)
    auth = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
    data = os.urandom(size)
    encryptor = Encryptor()
    first, second = await encryptor.encrypt(p256dh, auth, data), await encryptor.encrypt(p256dh, auth, data)
    for body in (first, second):
        assert http_ece.decrypt(body, private_key=browser, auth_secret=secret, version="aes128gcm") == data
        assert len(body) <= 4096  # what push services accept
    assert first[:16] != second[:16] and first[21:86] != second[21:86]  # a fresh salt and key per body


async def test_a_key_that_is_not_a_p256_point_is_refused() -> None:
    with pytest.raises(ValueError):
        await Encryptor().encrypt(base64.urlsafe_b64encode(b"\x04" + bytes(64)).decode(), "c2VjcmV0", b"x")
