"""The command line's way to the REST API: CORRAL_URL and CORRAL_KEY, JSON in and out, and every
failure turned into one sentence for the person at the terminal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from corral.settings import ClientSettings

TIMEOUT_S = 30.0


class CliError(Exception):
    """A failure to report as `corral: <message>` and exit 1."""


class ApiClient:
    def __init__(self, settings: ClientSettings) -> None:
        self.url = settings.url
        self._key = settings.key.get_secret_value() if settings.key else None

    def call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        """The JSON answer of an API call; any failure is a CliError saying what went wrong."""
        return self._request(method, path, json=json, params=params).json()

    def call_text(self, method: str, path: str, *, params: dict[str, Any] | None = None) -> str:
        return self._request(method, path, params=params).text

    def stream_lines(self, method: str, path: str, *, params: dict[str, Any] | None = None) -> Iterator[str]:
        """The lines of a streamed answer (JSON lines), as they arrive."""
        params = {name: value for name, value in (params or {}).items() if value is not None}
        try:
            with httpx.stream(method, f"{self.url}/api/v1{path}", params=params, timeout=TIMEOUT_S,
                              headers=self._headers()) as response:
                if not response.is_success:
                    response.read()
                    raise CliError(self._message(response))
                yield from response.iter_lines()
        except httpx.TransportError as error:
            raise CliError(self._unreachable(error)) from None

    def _headers(self) -> dict[str, str]:
        if self._key is None:
            raise CliError("set CORRAL_KEY to your API key (the first admin key is in .corral/admin.key)")
        return {"Authorization": f"Bearer {self._key}", "User-Agent": "corral-cli"}

    def _message(self, response: httpx.Response) -> str:
        try:
            return response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            return f"HTTP {response.status_code} from {self.url}"

    def _request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
                 ) -> httpx.Response:
        headers = self._headers()
        params = {name: value for name, value in (params or {}).items() if value is not None}
        try:
            response = httpx.request(method, f"{self.url}/api/v1{path}", json=json, params=params, timeout=TIMEOUT_S,
                                     headers=headers)
        except httpx.TransportError as error:
            raise CliError(self._unreachable(error)) from None
        if response.is_success:
            return response
        raise CliError(self._message(response))

    def _unreachable(self, error: Exception) -> str:
        return (f"cannot reach Corral at {self.url} ({type(error).__name__}): "
                "is `corral serve` running, and is CORRAL_URL right?")
