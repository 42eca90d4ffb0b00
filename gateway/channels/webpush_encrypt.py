"""Web Push payload encryption (RFC 8291, ``aes128gcm``) for ``gateway.channels.webpush``.

Each request's body is pywebpush's ``WebPusher.encode``: a fresh ECDH key pair and salt per request, so
no two bodies share a key. What is kept is only the parsing: a subscription's ``p256dh`` point and
``auth`` secret are decoded once (``_ENCODERS`` of them, keyed by the keys themselves, so a device
registered again with new keys is never encrypted to with its old ones).

The encryption runs in the event loop: about 0.08 ms a body, a quarter of what a request costs the
gateway. A thread would not run it beside the loop (the GIL); worker processes were measured (batches
of bodies per round trip) and lost: pickling and the round trips cost the loop almost what they saved,
and the workers competed for the cores (``bench/README.md``, Web Push fan-out).
"""

from __future__ import annotations

import base64
from collections import OrderedDict

from cryptography.hazmat.primitives.asymmetric import ec
from pywebpush import WebPusher

__all__ = ["Encryptor"]

_ENCODERS = 10_000  # subscriptions whose decoded keys are kept (about 1 KB each)


class _Encoder(WebPusher):
    """pywebpush's encryption (``WebPusher.encode``) for one subscription, its keys decoded once:
    ``WebPusher.__init__`` deep-copies and base64-decodes the subscription, and http_ece parses the
    ``p256dh`` point, on every send otherwise."""

    def __init__(self, p256dh: str, auth: str) -> None:  # WebPusher.__init__ would decode again
        self.verbose = False
        point = base64.urlsafe_b64decode(p256dh + "=" * (-len(p256dh) % 4))
        # http_ece takes the key as an object too, and then skips parsing it.
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        self.receiver_key = key  # type: ignore[assignment]
        self.auth_key = base64.urlsafe_b64decode(auth + "=" * (-len(auth) % 4))


class Encryptor:
    """Encrypts bodies for subscriptions, keeping the decoded keys of the last ``_ENCODERS``."""

    __slots__ = ("_encoders",)

    def __init__(self) -> None:
        self._encoders: OrderedDict[tuple[str, str], _Encoder] = OrderedDict()

    def encrypt(self, p256dh: str, auth: str, data: bytes) -> bytes:
        """``data`` encrypted to the subscription; a key that is not a P-256 point raises ``ValueError``."""
        key = (p256dh, auth)
        encoder = self._encoders.get(key)
        if encoder is None:
            encoder = _Encoder(p256dh, auth)
            self._encoders[key] = encoder
            if len(self._encoders) > _ENCODERS:
                self._encoders.popitem(last=False)
        else:
            self._encoders.move_to_end(key)
        body: bytes = encoder.encode(data, "aes128gcm")["body"]
        return body
