"""The one error hierarchy. Every stage raises these; each surface renders them in its own
dialect (REST, OpenAI, Anthropic, JSON-RPC) in one place. Messages are written for the person
who reads them: say what is wrong and what to do. Never put a secret in a message.
"""

from __future__ import annotations


class CorralError(Exception):
    """An error a client can act on. `status` is the HTTP status it maps to."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule


class InvalidRequest(CorralError):
    status, code = 400, "invalid_request"


class Unauthenticated(CorralError):
    status, code = 401, "unauthenticated"


class Forbidden(CorralError):
    status, code = 403, "forbidden"


class NotFound(CorralError):
    status, code = 404, "not_found"


class Conflict(CorralError):
    status, code = 409, "conflict"


class PayloadTooLarge(CorralError):
    status, code = 413, "payload_too_large"


class Unavailable(CorralError):
    status, code = 503, "unavailable"


class ConfigError(Exception):
    """A bad setting: one line naming the variable. The process exits non-zero."""
