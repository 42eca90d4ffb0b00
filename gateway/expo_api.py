"""The Expo push API through ``exponent_server_sdk``: the SDK is synchronous (requests), so every call runs
in a worker thread (``asyncio.to_thread``) and the event loop never blocks on Expo.

Each call borrows a ``PushClient`` from a small pool, one per request in flight, so a ``requests.Session``
(and its kept-alive connection) is never used by two threads at once. The SDK's and requests' errors are
translated here, once, into two exceptions the callers act on:

- ``ExpoUnavailable``: try the whole request again later (no answer, a timeout, 408, 429, 5xx, an answer
  that is not Expo's JSON, 401/403 when the access token is wrong: the operator can fix that without a
  message being lost). ``retry_after`` carries Expo's ``Retry-After``.
- ``ExpoRefused``: Expo refused the request as such (400 and other 4xx): sending it again unchanged will
  not help, though its messages may go through one by one.

Per-notification errors (``DeviceNotRegistered``, ``MessageRateExceeded``, ...) are not exceptions here:
they come back in the tickets and receipts, and their callers read them with the SDK's
``validate_response``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from exponent_server_sdk import PushClient, PushMessage, PushReceipt, PushServerError, PushTicket

from gateway.config import ExpoConfig
from gateway.errors import ConfigError

__all__ = [
    "MAX_BATCH",
    "MAX_RECEIPT_BATCH",
    "ExpoApi",
    "ExpoError",
    "ExpoRefused",
    "ExpoUnavailable",
    "Notification",
]

log = logging.getLogger(__name__)

MAX_BATCH = PushClient.DEFAULT_MAX_MESSAGE_COUNT  # 100 notifications per send, Expo's limit
MAX_RECEIPT_BATCH = PushClient.DEFAULT_MAX_RECEIPT_COUNT  # 1000 ids per getReceipts, Expo's limit
_RETRIED_STATUSES = frozenset({401, 403, 408, 429})
_T = TypeVar("_T")


class ExpoError(Exception):
    """Base of the errors of a whole request to Expo."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class ExpoUnavailable(ExpoError):
    """Raised when a request should be tried again later (network, timeout, 408, 429, 5xx, 401/403)."""


class ExpoRefused(ExpoError):
    """Raised when Expo refused a request as malformed (400 and other 4xx)."""


class Notification(PushMessage):
    """A ``PushMessage`` whose token may also be the newer ``ExpoPushToken[...]`` form.

    The SDK's ``get_payload`` accepts only ``ExponentPushToken[...]``, while Expo (and
    ``gateway.devices``, which checked the token at registration) accepts both.
    """

    __slots__ = ()

    def get_payload(self) -> dict[str, Any]:
        plain = PushMessage(*self)._replace(to="ExponentPushToken[checked]")
        payload: dict[str, Any] = plain.get_payload()
        payload["to"] = self.to
        return payload


def _retry_after(response: requests.Response | None) -> float | None:
    value = response.headers.get("Retry-After") if response is not None else None
    return float(value) if value is not None and value.strip().isdigit() else None


def _classify(status: int | None, what: str, response: requests.Response | None) -> ExpoError:
    retry_after = _retry_after(response)
    if status is None or status < 400 or status >= 500 or status in _RETRIED_STATUSES:
        if status in (401, 403):
            what += " (is [expo] access_token right?)"
        return ExpoUnavailable(what, status, retry_after)
    return ExpoRefused(what, status, retry_after)


def _errors_text(errors: Any) -> str:
    if isinstance(errors, list):
        parts = [
            f"{e.get('code', '?')}: {e.get('message', '')}" if isinstance(e, dict) else str(e) for e in errors
        ]
        return "; ".join(parts)
    return str(errors)


def _translated(call: Callable[[], _T]) -> _T:
    """Run one SDK call (in a worker thread) with its errors translated to ``ExpoError``."""
    try:
        return call()
    except PushServerError as exc:
        status = exc.response.status_code if exc.response is not None else None
        detail = _errors_text(exc.errors) if exc.errors else exc.message
        raise _classify(status, f"Expo answered HTTP {status}: {detail}", exc.response) from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise _classify(status, f"Expo answered HTTP {status}", exc.response) from exc
    except requests.Timeout as exc:
        raise ExpoUnavailable(f"Expo did not answer in time ({type(exc).__name__})") from exc
    except requests.RequestException as exc:
        raise ExpoUnavailable(f"cannot reach Expo: {type(exc).__name__}: {exc}") from exc
    except ValueError as exc:  # the SDK's own checks, or an answer that is not the JSON Expo sends
        raise ExpoUnavailable(f"unexpected answer from Expo: {exc}") from exc


class ExpoApi:
    def __init__(self, config: ExpoConfig) -> None:
        parts = urlsplit(config.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"[expo] base_url must be an http(s) URL, got {config.base_url!r}")
        if not 1 <= config.batch_size <= MAX_BATCH:
            raise ConfigError(f"[expo] batch_size must be 1 to {MAX_BATCH}, Expo's limit per request")
        if not 1 <= config.receipt_batch_size <= MAX_RECEIPT_BATCH:
            raise ConfigError(f"[expo] receipt_batch_size must be 1 to {MAX_RECEIPT_BATCH}, Expo's limit")
        if config.concurrency < 1:
            raise ConfigError("[expo] concurrency must be at least 1")
        self._config = config
        self._host = f"{parts.scheme}://{parts.netloc}"
        self._path = parts.path.rstrip("/")
        self._free: list[PushClient] = []
        self._all: list[PushClient] = []

    def _client(self) -> PushClient:
        if self._free:
            return self._free.pop()
        session = requests.Session()
        session.headers.update(
            {
                "accept": "application/json",
                "accept-encoding": "gzip, deflate",
                "content-type": "application/json",
            }
        )
        if self._config.access_token:
            session.headers["Authorization"] = f"Bearer {self._config.access_token}"
        client = PushClient(
            host=self._host,
            api_url=self._path,
            session=session,
            timeout=self._config.timeout,
            max_message_count=self._config.batch_size,
            max_receipt_count=self._config.receipt_batch_size,
        )
        self._all.append(client)
        return client

    async def _call(self, work: Callable[[PushClient], _T]) -> _T:
        client = self._client()
        try:
            result = await asyncio.to_thread(_translated, lambda: work(client))
        except asyncio.CancelledError:
            raise  # the thread may still use the client: it is not lent again (``close`` closes it)
        except BaseException:
            self._free.append(client)
            raise
        self._free.append(client)
        return result

    async def send(self, notifications: Sequence[Notification]) -> list[PushTicket]:
        """One ``push/send`` request (at most ``batch_size`` notifications): a ticket per notification,
        in order."""
        return await self._call(lambda client: client.publish_multiple(list(notifications)))

    async def receipts(self, ticket_ids: Sequence[str]) -> dict[str, PushReceipt]:
        """One ``push/getReceipts`` request (at most ``receipt_batch_size`` ids): the receipts Expo has,
        by ticket id; an id Expo has no receipt for yet is missing."""
        tickets = [
            PushTicket(None, PushTicket.SUCCESS_STATUS, "", None, ticket_id) for ticket_id in ticket_ids
        ]
        found = await self._call(lambda client: client.check_receipts_multiple(tickets))
        return {receipt.id: receipt for receipt in found}

    async def close(self) -> None:
        clients, self._all, self._free = self._all, [], []
        for client in clients:
            await asyncio.to_thread(client.session.close)
