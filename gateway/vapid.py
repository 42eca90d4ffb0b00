"""The VAPID key pair (RFC 8292) that signs every Web Push request, and the public key browsers subscribe
with.

The key comes from ``[webpush] vapid_private_key`` (the raw 32-byte private key in base64url, as
``web-push generate-vapid-keys`` and similar tools print it, or PEM text), else from the PEM file
``[webpush] vapid_private_key_file``, else from ``<data_dir>/vapid_private_key.pem``, generated there at
first start with mode 0600 and kept: browsers' subscriptions are bound to the public key, so a new key
would silently orphan every one of them.

The public key is published (``GET /api/webpush/vapid-public-key``) as base64url without padding of the
uncompressed P-256 point (65 bytes, ``0x04 || x || y``): the form ``pushManager.subscribe({
applicationServerKey})`` takes after a base64url-to-bytes conversion, and the ``k=`` of the
``Authorization: vapid t=…, k=…`` header push services compare it with.

Signing (``VapidTokens``): one JWT per push service origin (its ``aud``), valid 12 hours (``exp``) and
reused for every request to that origin until less than an hour of it is left, then signed anew, as
high-volume senders do: an ES256 signature per request would cost more than the request's encryption.
Each signature gets a claims dict of its own (``sub``, ``aud``, ``exp``), built afresh: no claims dict is
shared or mutated between signatures, so one origin's ``aud`` or an old ``exp`` can never leak into
another token. A token is a bearer credential for its origin only (RFC 8292 binds it to ``aud``).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid

from gateway.config import WebPushConfig
from gateway.errors import ConfigError

__all__ = ["JWT_LIFETIME", "KEY_FILE", "RESIGN_BEFORE", "VapidKey", "VapidTokens", "b64url", "load_vapid_key"]

KEY_FILE = "vapid_private_key.pem"
JWT_LIFETIME = 12 * 3600  # seconds a signed token is valid: RFC 8292 allows at most 24 hours
RESIGN_BEFORE = 3600  # seconds of validity left below which a token is signed anew (clock skew, slow sends)
_ORIGINS = 256  # origins whose token is kept: push services are a handful of hosts


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class VapidKey:
    """The signer pywebpush takes (``py_vapid.Vapid``, RFC 8292's ``vapid`` scheme) and the public key."""

    signer: Vapid
    public_key: str  # base64url, uncompressed point


def _from_private(key: object, where: str) -> VapidKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(f"{where}: the VAPID key must be an EC P-256 (prime256v1) private key")
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return VapidKey(Vapid(private_key=key), b64url(point))


def _parse(text: str, where: str) -> VapidKey:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: not a readable unencrypted PEM private key ({exc})") from exc
        return _from_private(key, where)
    try:
        raw = base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (ValueError, binascii.Error) as exc:
        raise ConfigError(f"{where}: neither PEM nor base64url") from exc
    if len(raw) != 32:
        raise ConfigError(f"{where}: a raw VAPID private key is 32 bytes in base64url; this is {len(raw)}")
    try:
        key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except ValueError as exc:
        raise ConfigError(f"{where}: not a valid P-256 private key ({exc})") from exc
    return _from_private(key, where)


def _generated(path: Path) -> VapidKey:
    """Read the key kept in the data dir, or generate it there (0600) on first start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        text = path.read_text()
        if text.strip():
            return _parse(text, str(path))
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # an earlier start died before writing it
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    return _from_private(key, str(path))


def load_vapid_key(config: WebPushConfig, data_dir: str) -> VapidKey:
    """The configured key, or the one kept in (first generated into) ``data_dir``. Blocking file I/O:
    call it in a thread."""
    if config.vapid_private_key:
        return _parse(config.vapid_private_key, "[webpush] vapid_private_key")
    if config.vapid_private_key_file:
        where = f"[webpush] vapid_private_key_file {config.vapid_private_key_file}"
        try:
            text = Path(config.vapid_private_key_file).read_text()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot be read ({exc.strerror})") from exc
        return _parse(text, where)
    return _generated(Path(data_dir) / KEY_FILE)


class VapidTokens:
    """The ``Authorization: vapid t=<JWT>, k=<key>`` header per push service origin, signed once and reused
    until less than ``RESIGN_BEFORE`` seconds of its ``JWT_LIFETIME`` are left (the module says why)."""

    __slots__ = ("_key", "_subject", "_tokens")

    def __init__(self, key: VapidKey, subject: str) -> None:
        self._key = key
        self._subject = subject
        self._tokens: OrderedDict[str, tuple[str, int]] = OrderedDict()  # origin -> (header, exp)

    def header(self, origin: str, now: float) -> str:
        """The header for requests to ``origin`` (``https://host[:port]``) at ``now`` (Unix seconds)."""
        token = self._tokens.get(origin)
        if token is not None and token[1] - now >= RESIGN_BEFORE:
            return token[0]
        exp = int(now) + JWT_LIFETIME
        claims = {"sub": self._subject, "aud": origin, "exp": exp}  # a fresh dict for each signature
        header: str = self._key.signer.sign(claims)["Authorization"]
        self._tokens[origin] = (header, exp)
        self._tokens.move_to_end(origin)
        if len(self._tokens) > _ORIGINS:
            self._tokens.popitem(last=False)
        return header
