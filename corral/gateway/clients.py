"""Which agent is calling, from what it says about itself: one name per agent, the same on the
model endpoints and the MCP endpoints, for policies' `when: client:` and for the events."""

from __future__ import annotations

from collections.abc import Mapping

_CLIENTS = (("roocode", "roo-code"), ("roo code", "roo-code"), ("roo-code", "roo-code"), ("roo-cline", "roo-code"),
            ("cline", "cline"), ("claude-cli", "claude-code"), ("claude-code", "claude-code"),
            ("openai/python", "openai-sdk"), ("openai/js", "openai-sdk"), ("anthropic/python", "anthropic-sdk"),
            ("anthropic/js", "anthropic-sdk"))  # first match wins: Roo's referer names Roo-Cline


def client_of(headers: Mapping[str, str]) -> str:
    """Which agent is calling, from what it says about itself (User-Agent, X-Title, originator)."""
    said = " ".join(headers.get(name, "") for name in ("user-agent", "x-title", "originator", "http-referer")).lower()
    for marker, client in _CLIENTS:
        if marker in said:
            return client
    return "other"
