"""Drift: whether a file installed on a machine still says what the current policy gives. The
file is recognised by its content (which client and which of its files), the key and Corral URL
it holds are read out so it can be compiled again the same way, and the two are compared as
data (JSON, YAML, variables; script text line by line), so formatting never counts. Pure.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from corral.clients.cline import read_env_file, url_of_script
from corral.clients.compile import File
from corral.errors import InvalidRequest
from corral.identity.tokens import DISPLAY_LENGTH, is_well_formed

KIND_CLIENT = {"roo-settings": "roo", "roo-mcp": "roo", "roomodes": "roo", "claude-settings": "claude-code",
               "claude-mcp": "claude-code", "cline-hook": "cline", "cline-key": "cline", "cline-env": "cline"}
MAX_DIFFERENCES = 50
_KEY = re.compile(r"ck_[A-Za-z0-9]{49}")
_SHOWN_CHARS = 300


@dataclass(frozen=True)
class Installed:
    """A file `corral connect` wrote, as found on a machine."""

    kind: str
    key: str | None  # the personal key it holds, if it holds one
    url: str | None  # the Corral it points at, if it says

    @property
    def client(self) -> str:
        return KIND_CLIENT[self.kind]


def read_installed(content: str, name: str = "this file") -> Installed:
    """Which file this is, and the key and URL in it; InvalidRequest if `corral connect` does not
    write anything like it."""
    text = content.strip()
    if is_well_formed(text):
        return Installed("cline-key", text, None)
    if text.startswith("#!") and "Corral's hook for Cline" in text:
        return Installed("cline-hook", None, url_of_script(text))
    if "# Corral for Cline" in text:
        variables = read_env_file(text)
        return Installed("cline-env", _bearer(variables.get("CLINE_OTEL_EXPORTER_OTLP_HEADERS", "").partition("=")[2]),
                         variables.get("CORRAL_URL"))
    data = _parse(text, name)
    if not isinstance(data, dict):
        raise InvalidRequest(f"{name} is not a file `corral connect` writes: its top level is not an object")
    if "providerProfiles" in data:
        profiles = [p for p in _get(data, "providerProfiles", "apiConfigs").values() if isinstance(p, dict)]
        profile = profiles[0] if profiles else {}
        base = profile.get("openAiBaseUrl")
        return Installed("roo-settings", _text(profile.get("openAiApiKey")),
                         base.removesuffix("/v1") if isinstance(base, str) else None)
    if "customModes" in data:
        return Installed("roomodes", None, None)
    if "mcpServers" in data:
        server = _get(data, "mcpServers", "corral")
        url = server.get("url")
        return Installed("claude-mcp" if server.get("type") == "http" else "roo-mcp",
                         _bearer(_get(server, "headers").get("Authorization", "")),
                         url.removesuffix("/mcp") if isinstance(url, str) else None)
    if {"permissions", "hooks", "env"} & set(data):
        env = _get(data, "env")
        return Installed("claude-settings", _text(env.get("CORRAL_KEY")), _text(env.get("ANTHROPIC_BASE_URL")))
    raise InvalidRequest(f"{name} is not a file `corral connect` writes (no providerProfiles, customModes, "
                         "mcpServers, permissions or env in it)")


def differences(installed_content: str, kind: str, expected: File) -> list[str]:
    """What differs between an installed file and what the policy gives now, one line each."""
    if kind == "cline-hook":
        found = _line_differences(installed_content, expected.content)
    elif kind == "cline-env":
        found = _value_differences(read_env_file(installed_content), read_env_file(expected.content), "")
    elif kind == "cline-key":
        found = [] if installed_content.strip() == expected.content.strip() else ["the key file holds another key"]
    else:
        found = _value_differences(_parse(installed_content.strip(), expected.path),
                                   _parse(expected.content, expected.path), "")
    return found[:MAX_DIFFERENCES]


def _value_differences(installed: Any, expected: Any, where: str) -> list[str]:
    if isinstance(installed, dict) and isinstance(expected, dict):
        found = []
        for name in [*expected, *(name for name in installed if name not in expected)]:
            place = f"{where}.{name}" if where else str(name)
            if name not in installed:
                found.append(f"{place}: missing; policy gives {_shown(expected[name])}")
            elif name not in expected:
                found.append(f"{place}: installed has {_shown(installed[name])}, policy gives nothing")
            else:
                found.extend(_value_differences(installed[name], expected[name], place))
        return found
    if installed != expected or type(installed) is not type(expected):
        return [f"{where or 'the file'}: installed has {_shown(installed)}, policy gives {_shown(expected)}"]
    return []


def _line_differences(installed: str, expected: str) -> list[str]:
    ours, theirs = installed.splitlines(), expected.splitlines()
    found = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ours, b=theirs, autojunk=False).get_opcodes():
        if tag != "equal":
            has = " / ".join(ours[i1:i2]) or "nothing"
            gives = " / ".join(theirs[j1:j2]) or "nothing"
            found.append(f"line {i1 + 1}: installed has {_clip(has)!r}, policy gives {_clip(gives)!r}")
    return found


def _shown(value: Any) -> str:
    return _clip(json.dumps(value, ensure_ascii=False, default=str))  # YAML may hold dates


def _clip(text: str) -> str:
    """A value as shown in a difference: keys cut to their display prefix, long values cut
    short, and anything that is not text (a lone surrogate) escaped."""
    text = _KEY.sub(lambda found: found.group(0)[:DISPLAY_LENGTH] + "…", text)
    text = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _parse(text: str, name: str) -> Any:
    """JSON, or else YAML without anchors or aliases (which nothing `corral connect` writes has,
    and which could make a small file expand without bound)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        if any(isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None)
               for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise InvalidRequest(f"{name} uses YAML anchors or aliases, which no file `corral connect` writes has")
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: a value YAML cannot build (2026-13-01)
        raise InvalidRequest(f"{name} is not a file `corral connect` writes: it is neither JSON nor YAML, "
                             "a Cline hook script, cline.env or a key file") from None


def _get(data: Any, *names: str) -> dict[str, Any]:
    """A nested object, or {} when it is missing or not an object (an edited file stays readable)."""
    for name in names:
        data = data.get(name) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _bearer(header: Any) -> str | None:
    scheme, _, value = str(header).partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None
