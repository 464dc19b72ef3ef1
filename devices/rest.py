"""Recording swaps through the REST API, safe to retry.

Every attempt of one swap carries the same `Idempotency-Key`, so a request that reached the
server but whose answer was lost (a timeout, a dropped connection, a 502 from a proxy) is
replayed by the server, never recorded twice. Connection errors, timeouts, 408, 429 and 5xx
are retried with exponential backoff and jitter; any other answer, a 409 or 422 rejection
included, is the result. Persist the key with the swap if retries must survive a restart.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from pydantic import BaseModel

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class SwapResult:
    """What became of one swap: the API's answer, and what a simulated fleet acts on (its
    stand-in backends build one without an HTTP exchange)."""

    accepted: bool
    installed_battery_serial: str | None = None
    # The problem's stable code (the rejection reason) when the swap was not accepted.
    reason_code: str | None = None
    swap_id: str | None = None
    # The HTTP exchange behind it, when there was one.
    status_code: int | None = None
    body: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    attempts: int = 0
    # The server answered from its idempotency store: an earlier attempt had been recorded.
    replayed: bool = False

    @classmethod
    def from_response(
        cls,
        status_code: int,
        body: dict[str, Any],
        *,
        idempotency_key: str,
        attempts: int,
        replayed: bool,
    ) -> SwapResult:
        accepted = 200 <= status_code < 300
        installed = body.get("installed_battery_serial") if accepted else None
        swap_id = body.get("id") if accepted else None
        code = None if accepted else body.get("code")
        return cls(
            accepted=accepted,
            installed_battery_serial=str(installed) if installed else None,
            reason_code=str(code) if code is not None else None,
            swap_id=str(swap_id) if swap_id is not None else None,
            status_code=status_code,
            body=body,
            idempotency_key=idempotency_key,
            attempts=attempts,
            replayed=replayed,
        )

    @property
    def code(self) -> str | None:
        """reason_code under the name the API's problem details give it."""
        return self.reason_code


class SwapDeliveryError(Exception):
    """The server could not be reached or kept failing; retry later with the same key."""

    def __init__(self, idempotency_key: str, attempts: int, last_error: str) -> None:
        super().__init__(f"swap not delivered after {attempts} attempts: {last_error}")
        self.idempotency_key = idempotency_key
        self.attempts = attempts
        self.last_error = last_error


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        # Full jitter: a fleet of stations that lost the API together must not return together.
        ceiling = min(self.max_delay_s, self.initial_delay_s * 2 ** (attempt - 1))
        jittered = random.uniform(0, ceiling)
        return min(self.max_delay_s, max(jittered, retry_after or 0.0))


class SwapApiClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self._api_key = api_key
        self._retry = retry or RetryPolicy()
        self._owns_http = http is None
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout_s)

    def record_swap(
        self, swap: BaseModel | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> SwapResult:
        key = idempotency_key or str(uuid.uuid4())
        body = orjson.dumps(
            swap.model_dump(mode="json", exclude_none=True)
            if isinstance(swap, BaseModel)
            else dict(swap)
        )
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Content-Type": "application/json",
            "Idempotency-Key": key,
        }
        last_error = ""
        for attempt in range(1, self._retry.max_attempts + 1):
            retry_after: float | None = None
            try:
                response = self._http.post("/v1/swaps", content=body, headers=headers)
            except httpx.TransportError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    return SwapResult.from_response(
                        response.status_code,
                        _json_body(response),
                        idempotency_key=key,
                        attempts=attempt,
                        replayed=response.headers.get("Idempotent-Replayed") == "true",
                    )
                last_error = f"HTTP {response.status_code}"
                retry_after = _retry_after(response)
            if attempt < self._retry.max_attempts:
                delay = self._retry.delay(attempt, retry_after)
                log.warning(
                    "event=swap_post_retry attempt=%s error=%r delay_s=%.2f idempotency_key=%s",
                    attempt,
                    last_error,
                    delay,
                    key,
                )
                self._retry.sleep(delay)
        raise SwapDeliveryError(key, self._retry.max_attempts, last_error)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> SwapApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        document = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {"raw": response.text[:500]}
    return document if isinstance(document, dict) else {"value": document}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # the HTTP-date form: fall back to our own backoff
