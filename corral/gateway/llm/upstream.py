"""Calling a target: one request to a provider in the client's dialect, with the provider's
own credential (read from its `env:` reference at call time, never stored, never logged).
What comes back is opened but not read, so a stream can be passed on as it arrives.

`UpstreamFailed` is a target failing (429, 5xx, a timeout, a refused or broken connection):
before any byte reached the client, another target may be tried.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from corral.gateway.llm.dialects import Dialect
from corral.gateway.llm.mock import MockModel
from corral.policy.schema import Provider

ANTHROPIC_VERSION = "2023-06-01"
_PATHS = {("openai", "chat"): "/chat/completions", ("openai", "responses"): "/responses",
          ("anthropic", "chat"): "/v1/messages", ("anthropic", "count_tokens"): "/v1/messages/count_tokens"}
_PASSED_HEADERS = ("anthropic-beta",)  # client headers that change what the provider does


class UpstreamFailed(Exception):
    def __init__(self, message: str, status: int | None = None, timeout: bool = False,
                 retry_after: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.timeout, self.retry_after = message, status, timeout, retry_after


def retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


@dataclass
class Opened:
    """An upstream answer whose status is known and whose body is still to be read."""

    status: int
    content_type: str
    chunks: AsyncIterator[bytes]
    close: Any  # async callable
    parsed: Any = None  # the whole answer's JSON, once something has read it
    retry_after: str | None = None  # the provider's Retry-After

    async def read(self) -> bytes:
        try:
            return b"".join([chunk async for chunk in self.chunks])
        finally:
            await self.close()


async def _nothing() -> None:
    return None


async def once(body: bytes) -> AsyncIterator[bytes]:
    yield body


class Upstreams:
    """Every provider's connection: one pooled HTTP client for all (aiohttp: at 64 concurrent
    requests it costs a twentieth of httpx's pool, bench/gateway.py), and the mock models."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._mocks: dict[tuple[str, Any], MockModel] = {}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # made inside the running loop, at the first call
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=10_000, limit_per_host=0, ttl_dns_cache=300),
                json_serialize=json.dumps, skip_auto_headers=("User-Agent",))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def open(self, name: str, provider: Provider, dialect: Dialect, operation: str, body: dict[str, Any],
                   client_headers: dict[str, str]) -> Opened:
        if provider.kind == "mock":
            mock = self._mocks.get((name, provider.mock))
            if mock is None:
                mock = self._mocks[(name, provider.mock)] = MockModel(provider.mock)
            status, answer = await mock.answer(dialect, operation, body.get("model", ""), body)
            chunks = once(answer) if isinstance(answer, bytes) else answer
            content_type = "text/event-stream" if not isinstance(answer, bytes) else "application/json"
            return Opened(status, content_type, chunks, _nothing)
        url = provider.base_url.rstrip("/") + _PATHS[(dialect, operation)]
        timeout = aiohttp.ClientTimeout(total=None, connect=provider.connect_timeout_s, sock_read=provider.timeout_s)
        try:
            response = await self._http().post(url, data=json.dumps(body).encode(), allow_redirects=False,
                                               headers=_headers(provider, dialect, client_headers), timeout=timeout)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamFailed(f"no answer within {provider.timeout_s:g} s", timeout=True) from None
        except (aiohttp.ClientError, OSError) as error:
            raise UpstreamFailed(f"could not be reached ({type(error).__name__})") from None
        return Opened(response.status, response.headers.get("content-type", ""), _chunks(response, provider),
                      _closer(response), retry_after=response.headers.get("retry-after"))


def _closer(response: aiohttp.ClientResponse):  # noqa: ANN202 - an async callable
    async def close() -> None:
        response.close()  # mid-answer this drops the connection, which stops the upstream's work

    return close


async def _chunks(response: aiohttp.ClientResponse, provider: Provider) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.content.iter_any():
            yield chunk
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamFailed(f"the answer stopped for more than {provider.timeout_s:g} s", timeout=True) from None
    except (aiohttp.ClientError, OSError) as error:
        raise UpstreamFailed(f"the connection broke mid-answer: {type(error).__name__}") from None
    finally:
        response.release()


def _headers(provider: Provider, dialect: Dialect, client_headers: dict[str, str]) -> dict[str, str]:
    headers = {name: client_headers[name] for name in _PASSED_HEADERS if name in client_headers}
    headers["content-type"] = "application/json"
    secret = _secret(provider.api_key)
    if dialect == "anthropic":
        headers["anthropic-version"] = client_headers.get("anthropic-version", ANTHROPIC_VERSION)
        if secret:
            headers["x-api-key"] = secret
    elif secret:
        headers["authorization"] = f"Bearer {secret}"
    return headers


def missing_credential(provider: Provider) -> str | None:
    """The `env:` reference of a credential the provider needs but this process lacks."""
    if provider.api_key and _secret(provider.api_key) is None:
        return provider.api_key
    return None


def _secret(reference: str | None) -> str | None:
    """The value behind an `env:NAME` reference, read when it is needed."""
    if not reference:
        return None
    return os.environ.get(reference.removeprefix("env:")) or None
