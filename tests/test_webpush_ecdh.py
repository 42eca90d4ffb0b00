"""``gateway.channels.webpush_ecdh``: the key agreement helper process makes the sender's key pair and the
ECDH secret for each point, the browser's side agrees on the same secret, and nothing is lost or wrong
when the helper is missing, killed or stuck."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.channels import webpush_ecdh
from gateway.channels.webpush_ecdh import KeyAgreements
from tests.conftest import TIMEOUT, until
from tests.process import running

CURVE = ec.SECP256R1()


def browser_key() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(CURVE)
    return key, key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def browser_secret(key: ec.EllipticCurvePrivateKey, sender_point: bytes) -> bytes:
    """What the browser computes from the sender's point in the body's header."""
    return key.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(CURVE, sender_point))


async def test_the_helper_agrees_on_what_each_browser_computes() -> None:
    agreements = KeyAgreements()
    await agreements.start()
    pid = agreements.pid
    assert pid is not None and pid != os.getpid()
    browsers = [browser_key() for _ in range(200)]
    try:
        results = await asyncio.gather(*(agreements.agree(point) for _, point in browsers))
    finally:
        await agreements.close()
    assert agreements.helped == 200  # all made by the helper, none here
    for (key, _), (sender_point, secret) in zip(browsers, results, strict=True):
        assert browser_secret(key, sender_point) == secret
    assert len({sender for sender, _ in results}) == 200  # a fresh key pair for each
    await until(lambda: _true(not running(pid)), "the helper to end once closed")


async def test_a_point_off_the_curve_is_refused_by_the_helper_and_the_rest_answered() -> None:
    agreements = KeyAgreements()
    await agreements.start()
    key, point = browser_key()
    try:
        bad, good = await asyncio.gather(
            agreements.agree(b"\x04" + bytes(64)), agreements.agree(point), return_exceptions=True
        )
        with pytest.raises(ValueError, match="P-256"):
            await agreements.agree(point[:33])  # compressed: refused before it leaves
    finally:
        await agreements.close()
    assert isinstance(bad, ValueError)
    assert isinstance(good, tuple) and browser_secret(key, good[0]) == good[1]


async def test_before_the_helper_runs_agreements_are_made_here() -> None:
    agreements = KeyAgreements()
    key, point = browser_key()
    sender_point, secret = await agreements.agree(point)  # starts the helper, does not wait for it
    assert browser_secret(key, sender_point) == secret and agreements.helped == 0
    await until(lambda: _true(agreements.pid is not None), "the helper to have been started meanwhile")
    await agreements.close()


async def test_a_killed_helper_loses_no_agreement_and_is_started_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webpush_ecdh, "_RESTART_AFTER", 0.0)
    agreements = KeyAgreements()
    await agreements.start()
    first = agreements.pid
    assert first is not None
    browsers = [browser_key() for _ in range(300)]
    try:
        asked = [asyncio.ensure_future(agreements.agree(point)) for _, point in browsers]
        await asyncio.sleep(0)  # the frame is written
        os.kill(first, signal.SIGKILL)
        results = await asyncio.wait_for(asyncio.gather(*asked), TIMEOUT)
        for (key, _), (sender_point, secret) in zip(browsers, results, strict=True):
            assert browser_secret(key, sender_point) == secret

        async def restarted() -> bool:  # a request after the end was noticed starts a new helper
            await agreements.agree(browsers[0][1])
            return agreements.pid not in (None, first)

        await until(restarted, "a new helper")
    finally:
        await agreements.close()


async def test_a_stuck_helper_is_given_up_and_its_points_agreed_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webpush_ecdh, "_STUCK", 0.2)
    agreements = KeyAgreements()
    await agreements.start()
    pid = agreements.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # alive, but it answers nothing
    try:
        key, point = browser_key()
        sender_point, secret = await asyncio.wait_for(agreements.agree(point), TIMEOUT)
        assert browser_secret(key, sender_point) == secret and agreements.helped == 0
        await until(lambda: _true(not running(pid)), "the stuck helper to be ended")
    finally:
        await agreements.close()


async def _true(value: bool) -> bool:
    return value
