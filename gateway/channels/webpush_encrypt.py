"""Web Push payload encryption (RFC 8291, ``aes128gcm``) for ``gateway.channels.webpush``.

Every body gets a fresh ECDH key pair and salt, so no two bodies share a key. The construction is RFC 8291
section 3.4 with the RFC 8188 header, written here with ``cryptography``'s primitives (P-256 ECDH,
AES-128-GCM) and the standard library's HMAC-SHA-256 for HKDF: pywebpush's ``WebPusher.encode`` and
http_ece do the same with about 30 µs more Python per body (objects for each HKDF, a record loop, base64
round trips), a quarter of what a request cost the gateway beside the ECDH itself. The tests check the
bytes against RFC 8291's own example (Appendix A) and decrypt real bodies with http_ece.

It comes in two steps. ``agree`` makes the sender's key pair and the ECDH secret: two P-256 scalar
multiplications, about 60 µs, most of what a request costs; the gateway has them made in a helper process
(``gateway.channels.webpush_ecdh``). ``seal`` derives the keys and encrypts: a few µs. ``Encryptor``
joins them for a subscription, decoding its ``p256dh`` point and ``auth`` secret once (``_KEYS`` of them,
keyed by the keys themselves, so a device registered again with new keys is never encrypted to with its
old ones).
"""

from __future__ import annotations

import base64
import hmac
import os
from collections import OrderedDict
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["POINT_SIZE", "Agreements", "Encryptor", "agree", "encrypt", "seal"]

POINT_SIZE = 65  # an uncompressed P-256 point: 0x04, then x and y
_KEYS = 10_000  # subscriptions whose decoded keys are kept
_CURVE = ec.SECP256R1()
_ECDH = ec.ECDH()
_RECORD_SIZE = 4096  # rs: the whole body is one record (push services take at most 4096 bytes)
_HEADER_TAIL = _RECORD_SIZE.to_bytes(4, "big") + bytes([POINT_SIZE])  # rs, then idlen: the sender's point
_KEY_INFO = b"WebPush: info\x00"
_CEK_INFO = b"Content-Encoding: aes128gcm\x00\x01"  # HKDF-Expand's info with its one counter byte
_NONCE_INFO = b"Content-Encoding: nonce\x00\x01"


def agree(receiver_point: bytes, sender: ec.EllipticCurvePrivateKey | None = None) -> tuple[bytes, bytes]:
    """A sender key pair (fresh unless given) for ``receiver_point``, the user agent's uncompressed P-256
    key: its public point and their ECDH secret. ``ValueError`` when the point is not on the curve."""
    if len(receiver_point) != POINT_SIZE:
        raise ValueError("the subscription's p256dh is not an uncompressed P-256 point")
    receiver = ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, receiver_point)
    sender = sender or ec.generate_private_key(_CURVE)
    sender_point = sender.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return sender_point, sender.exchange(_ECDH, receiver)


def seal(
    receiver_point: bytes,
    sender_point: bytes,
    secret: bytes,
    auth: bytes,
    data: bytes,
    salt: bytes | None = None,
) -> bytes:
    """``data`` as one ``aes128gcm`` record, from the key agreement's result (``agree``) and the user
    agent's ``auth`` secret; ``salt`` is fresh unless given (the RFC's example fixes it)."""
    # HKDF with SHA-256 and outputs of at most 32 bytes: Extract is one HMAC, Expand one HMAC.
    ikm = _hmac(_hmac(auth, secret), _KEY_INFO + receiver_point + sender_point + b"\x01")
    salt = salt or os.urandom(16)
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, _CEK_INFO)[:16]
    nonce = _hmac(prk, _NONCE_INFO)[:12]
    # the last (and only) record ends with the delimiter 0x02 and no padding
    return salt + _HEADER_TAIL + sender_point + AESGCM(cek).encrypt(nonce, data + b"\x02", None)


def encrypt(
    receiver_point: bytes,
    auth: bytes,
    data: bytes,
    *,
    sender: ec.EllipticCurvePrivateKey | None = None,
    salt: bytes | None = None,
) -> bytes:
    """``agree`` and ``seal`` in one, in this thread."""
    sender_point, secret = agree(receiver_point, sender)
    return seal(receiver_point, sender_point, secret, auth, data, salt)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")


class Encryptor:
    """Encrypts bodies for subscriptions, with the key agreements of ``agreements`` (``agree`` in this
    process when ``None``), keeping the decoded keys of the last ``_KEYS`` subscriptions."""

    __slots__ = ("_agreements", "_keys")

    def __init__(self, agreements: Agreements | None = None) -> None:
        self._agreements = agreements
        self._keys: OrderedDict[tuple[str, str], tuple[bytes, bytes]] = OrderedDict()

    async def encrypt(self, p256dh: str, auth: str, data: bytes) -> bytes:
        """``data`` encrypted to the subscription; a key that is not a P-256 point raises ``ValueError``."""
        key = (p256dh, auth)
        decoded = self._keys.get(key)
        if decoded is None:
            decoded = (_unbase64(p256dh), _unbase64(auth))
            self._keys[key] = decoded
            if len(self._keys) > _KEYS:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        point, secret_auth = decoded
        if self._agreements is None:
            sender_point, secret = agree(point)
        else:
            sender_point, secret = await self._agreements.agree(point)
        return seal(point, sender_point, secret, secret_auth, data)


class Agreements(Protocol):
    """Where key agreements are made (``gateway.channels.webpush_ecdh.KeyAgreements``)."""

    async def agree(self, receiver_point: bytes) -> tuple[bytes, bytes]: ...


def _unbase64(text: str) -> bytes:
    """Subscriptions carry base64url, usually unpadded."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
