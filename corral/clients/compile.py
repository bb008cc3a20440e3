"""What every client's compiled configuration is made from: the person it is for (their key and
Corral's URL), the effective policy read for that person (which rules apply to them always,
which only sometimes), and the list of what the client cannot express and where that is
enforced instead. Pure: no I/O. The key is made or checked by corral/api/routes/connect.py;
nothing here stores or logs it.

A client's own settings are a first line that must never be looser than the policy: whatever a
client cannot say exactly is left to Corral (the gateways and the hooks decide every call), and
is named in `unexpressed`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from corral.policy.commands import SHELLS, WRAPPERS
from corral.policy.engine import STRICTNESS, EffectivePolicy, Request, Subject, text_glob
from corral.policy.overrides import Override
from corral.policy.schema import Policy, Rule, When

Client = Literal["roo", "claude-code", "cline"]
CLIENTS: tuple[str, ...] = Client.__args__  # type: ignore[attr-defined]
# `corral connect`'s names for the clients -> the engine's `client` (corral/gateway/clients.py).
ENGINE_CLIENT = {"roo": "roo-code", "claude-code": "claude-code", "cline": "cline"}
KEY_FILE_MODE, SCRIPT_MODE, PLAIN_MODE = 0o600, 0o700, 0o644
# Programs that run other commands (wrappers, shells, eval, watch, find -exec): the policy
# decides what they run on its own (corral/policy/commands.py), so a prefix naming them would
# let a client approve commands the policy does not.
RUNNERS = frozenset({*WRAPPERS, *SHELLS, "eval", "watch", "find"})
# Overrides that make actions stricter for the people they cover, and the actions they touch.
TIGHTENING = {"read_only": ("command.exec", "file.write", "tool.call"),
              "tighten_approvals": ("command.exec", "file.write", "tool.call")}


@dataclass(frozen=True)
class Target:
    """Who a configuration is compiled for, with what key, against which Corral and policy."""

    client: str  # roo | claude-code | cline
    subject: Subject  # its `client` is the engine's name for the client
    key: str
    url: str  # Corral's public URL, without a trailing slash
    effective: EffectivePolicy
    now: datetime  # overrides in force at this moment are taken into account
    roomodes: bool = False

    @property
    def policy(self) -> Policy:
        return self.effective.compiled.policy


@dataclass(frozen=True)
class File:
    """One file to install: where it goes is `install`, in words for the person installing it."""

    kind: str  # what the file is (roo-settings, claude-settings, cline-hook, ...), for drift checks
    path: str  # relative to the directory `corral connect --out` writes to
    content: str
    mode: int
    install: str


@dataclass
class Compiled:
    files: list[File]
    unexpressed: list[str]  # rules and settings the client cannot express, and where they are enforced
    next_steps: list[str] = field(default_factory=list)  # commands the person runs after installing


@dataclass(frozen=True)
class Pattern:
    """One pattern of a rule, as it stands for one person. `sometimes` says when the rule
    applies if that depends on what a client cannot see (the mode, a command's class)."""

    rule: str
    effect: str
    key: str  # what the pattern matches: command, path or tool
    glob: str  # the rule's pattern; `*` (`**` for paths) for a rule that names nothing to match
    sometimes: str | None

    @property
    def everything(self) -> bool:
        """Whether the pattern matches whatever the action is on."""
        return self.glob == ("**" if self.key == "path" else "*")

    @property
    def literal(self) -> str:
        """The text every match starts with (what is before the first `*`)."""
        return self.glob.split("*", 1)[0]

    def shown(self) -> str:
        when = f" {self.sometimes}" if self.sometimes else ""
        return f"rule {self.rule} ({self.effect} `{self.glob}`{when})"


@dataclass
class Unexpressed:
    """What a client cannot express and who enforces it instead: one line per rule and reason,
    with the rule's patterns that share the reason listed together."""

    _entries: dict[tuple[str, str], list[Pattern]] = field(default_factory=dict)

    def rule(self, pattern: Pattern, why: str) -> None:
        self._entries.setdefault((pattern.rule, why), []).append(pattern)

    def note(self, line: str) -> None:
        self._entries.setdefault(("", line), [])

    def lines(self) -> list[str]:
        shown = []
        for (rule, why), found in self._entries.items():
            if not found:
                shown.append(why)
                continue
            first = found[0]
            globs = ", ".join(f"`{p.glob}`" for p in found)
            when = f" {first.sometimes}" if first.sometimes else ""
            shown.append(f"rule {rule} ({first.effect} {first.key} {globs}{when}): {why}")
        return shown


def as_json(value: object) -> str:
    """A JSON file as people read it: indented, with a final newline."""
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def patterns(target: Target, action: str, key: str) -> list[Pattern]:
    """The patterns of the rules for `action` that can apply to this person, in policy order."""
    roles = target.effective.compiled.roles_of(target.subject)
    found: list[Pattern] = []
    for rule in target.policy.rules:
        if rule.action != action or not _holds(rule.when, target.subject, roles):
            continue
        globs = (getattr(rule.match, key, None) if rule.match else None) or ("**" if key == "path" else "*",)
        found.extend(Pattern(rule.id, rule.effect, key, glob, _sometimes(rule)) for glob in globs)
    return found


def _holds(when: When | None, subject: Subject, roles: frozenset[str]) -> bool:
    """Whether a rule's conditions on the person and the client hold (as the engine reads them)."""
    if when is None:
        return True
    if when.user and not text_glob(when.user, ignore_case=True).match(subject.email.lower()):
        return False
    if when.team and not set(when.team).intersection(subject.teams):
        return False
    if when.role and not set(when.role).intersection(roles):
        return False
    return not (when.client and not text_glob(when.client, ignore_case=True).match(subject.client or ""))


def _sometimes(rule: Rule) -> str | None:
    when = rule.when
    if when is None or not (when.mode or when.class_):
        return None
    parts = []
    if when.mode:
        parts.append(f"mode is {' or '.join(when.mode)}")
    if when.class_:
        parts.append(f"class is {' or '.join(when.class_)}")
    return "when " + " and ".join(parts)


def default_effect(policy: Policy, action: str) -> str:
    return policy.defaults.get(action, policy.default)  # type: ignore[call-overload]


def tightening(target: Target, action: str) -> list[Override]:
    """The overrides in force now that make `action` stricter for this person."""
    subject = target.subject
    return [o for o in target.effective.overrides
            if o.active(target.now) and action in TIGHTENING.get(o.kind, ())
            and o.covers(subject.email, subject.teams)]


def disabling(target: Target) -> list[Override]:
    """The overrides in force now that disable MCP tools or servers."""
    return [o for o in target.effective.overrides
            if o.active(target.now) and o.kind in ("disable_tool", "disable_server")]


def always_allowed(target: Target, action: str, key: str) -> bool:
    """Whether every `action` this person asks for is allowed, whatever it is on: no rule can
    make it stricter, and no rule is needed to allow it, or one allows it all always."""
    found = patterns(target, action, key)
    if any(p.effect != "allow" for p in found) or tightening(target, action):
        return False
    return default_effect(target.policy, action) == "allow" or any(
        p.everything and p.sometimes is None for p in found)


def runs_other_commands(prefix: str) -> bool:
    words = prefix.split()
    return bool(words) and words[0].rsplit("/", 1)[-1] in RUNNERS


def overlaps(a: str, b: str) -> bool:
    """Whether two literal prefixes can start the same text (compared as clients do, without case)."""
    a, b = a.lower(), b.lower()
    return a.startswith(b) or b.startswith(a)


def stricter(effect: str) -> bool:
    return STRICTNESS[effect] > STRICTNESS["allow"]


def task_limits(target: Target) -> tuple[int | None, float | None]:
    """The per-task request and cost limits: the policy's `clients` ones, or a `scope_tasks`
    override in force for this person, whichever is smaller."""
    settings = target.policy.clients
    requests, cost = settings.max_requests_per_task, settings.max_cost_per_task_usd
    subject = target.subject
    for override in target.effective.overrides:
        if override.kind != "scope_tasks" or not override.active(target.now) \
                or not override.covers(subject.email, subject.teams):
            continue
        if "max_requests" in override.params:
            requests = min(filter(None, (requests, override.params["max_requests"])))
        if "max_cost_usd" in override.params:
            cost = min(filter(None, (cost, override.params["max_cost_usd"])))
    return requests, cost


def usable_profiles(target: Target, mode: str | None = None) -> list[str]:
    """The policy's profiles this person may send requests to (in mode `mode`), best first: the
    mode's own profile, then the other modes' profiles, then the rest in policy order."""
    policy = target.policy
    preferred = [policy.modes[mode].profile] if mode in policy.modes else []
    candidates = [*preferred, *(m.profile for m in policy.modes.values()), *policy.profiles]
    usable = []
    for name in dict.fromkeys(c for c in candidates if c):
        asked = Request("llm.request", name, target.subject, mode=mode)  # overrides only reroute a profile
        if target.effective.decide(asked).effect == "allow":
            usable.append(name)
    return usable
