"""The decision engine: a policy compiled once per version, and `decide()`, a pure function of
(effective policy, who, action, resource, context) that does no I/O. Combining is
deny > approve > confirm > allow; nothing matching means the policy's default. A command line is
decided as the simple commands it would run, and a line that cannot be fully known is never
allowed. Overrides are applied after the policy and can only make a decision stricter.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from corral.policy.commands import parse_command_line
from corral.policy.overrides import Override
from corral.policy.schema import Policy, Rule

CACHE_SIZE = 20_000  # decisions kept per effective policy (a new version or override starts afresh)
CACHE_RESOURCE_CHARS = 1024  # longer resources are decided afresh each time, to bound the memory
STRICTNESS = {"allow": 0, "confirm": 1, "approve": 2, "deny": 3}
# The Roo Code tool group each action needs from the mode it runs in.
TOOL_GROUP = {"tool.call": "mcp", "command.exec": "command", "file.read": "read", "file.write": "edit"}
# Commands that only read. Anything else a command line runs is `mutating`.
READ_ONLY_COMMANDS = frozenset({
    "ls", "cat", "head", "tail", "grep", "egrep", "fgrep", "rg", "ag", "wc", "pwd", "echo", "printf", "which",
    "whereis", "type", "stat", "du", "df", "diff", "cmp", "sort", "cut", "tr", "column", "nl", "whoami", "id",
    "uname", "env", "printenv", "true", "false", ":", "test", "[", "basename", "dirname", "realpath", "readlink",
    "jq", "md5sum", "sha256sum", "cd",
})
READ_ONLY_GIT = frozenset({"status", "diff", "log", "show", "blame", "grep", "ls-files", "rev-parse",
                           "describe", "shortlog", "cat-file", "ls-tree"})
# Options with which a reader writes files or runs programs.
_WRITING_OPTIONS = {
    "find": ("-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0", "-fprintf", "-fls"),
    "git": ("--output", "--ext-diff", "-O", "--open-files-in-pager", "-c", "--exec-path", "--git-dir", "--work-tree"),
    "sort": ("-o", "--output", "--compress-program"),
    "rg": ("--pre", "--search-zip", "-z"),
    "grep": ("--file=/dev",),
}


def strictest(*effects: str) -> str:
    return max(effects, key=STRICTNESS.__getitem__)


# ---- what is asked -----------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """Who acts, as the engine sees them."""

    email: str
    teams: tuple[str, ...] = ()
    roles: frozenset[str] = frozenset()
    client: str | None = None


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    subject: Subject
    mode: str | None = None
    tool_annotations: dict[str, Any] | None = None  # an MCP tool's annotations, hints only
    task_requests: int | None = None  # what the task has used so far, for scope_tasks overrides
    task_cost_usd: float | None = None
    now: datetime | None = None  # when overrides are judged; None: no override is active


@dataclass(slots=True)
class Decision:  # a value: never changed once made (not frozen, which costs a microsecond per decision)
    effect: str
    rules: tuple[str, ...]
    reason: str
    obligations: dict[str, Any] = field(default_factory=dict)
    parts: tuple["Decision", ...] = ()  # for a command line: each simple command and file it writes
    resource: str = ""
    policy_version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"effect": self.effect, "rules": list(self.rules), "reason": self.reason,
                "obligations": self.obligations, "resource": self.resource, "policy_version": self.policy_version,
                "parts": [part.as_dict() for part in self.parts]}


@dataclass(frozen=True)
class Trace:
    """One line of `explain`: a rule (or check) and whether it matched, and why."""

    rule: str
    effect: str
    matched: bool
    why: str


# ---- patterns ----------------------------------------------------------------------------


def text_glob(patterns: Iterable[str], ignore_case: bool = False) -> re.Pattern[str]:
    """`*` matches any text; everything else is literal."""
    body = "|".join(re.escape(p).replace(r"\*", ".*") for p in patterns)
    return re.compile(f"(?:{body})\\Z", re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def path_glob(patterns: Iterable[str]) -> re.Pattern[str]:
    """Path globs: `**` crosses directories, `*` and `?` do not."""
    bodies = []
    for pattern in patterns:
        pattern = normalise_path(pattern)
        out, index = [], 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                out.append("(?:.*/)?")
                index += 3
            elif pattern.startswith("**", index):
                out.append(".*")
                index += 2
            elif pattern[index] == "*":
                out.append("[^/]*")
                index += 1
            elif pattern[index] == "?":
                out.append("[^/]")
                index += 1
            else:
                out.append(re.escape(pattern[index]))
                index += 1
        bodies.append("".join(out))
    return re.compile(f"(?:{'|'.join(bodies)})\\Z", re.DOTALL)


def normalise_path(path: str) -> str:
    path = path.replace("\\", "/")
    if not path:
        return path
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")  # POSIX keeps a leading //; it names / all the same
    return normal[2:] if normal.startswith("./") else normal


def outside_workspace(path: str) -> bool:
    return path.startswith("/") or path == ".." or path.startswith("../") or re.match(r"^[A-Za-z]:/", path) is not None


def _first_token(key: str, pattern: str) -> str | None:
    """The literal a resource must start with to match `pattern`, used to index rules; None
    when the pattern could match anything."""
    if key == "command":
        head = pattern.split(" ", 1)[0]
    elif key == "tool":
        head = pattern.split("/", 1)[0]
    else:
        head = pattern
    return None if "*" in head else head


def command_class(command: str) -> str:
    """`read-only` for a known reader used without options that write or run programs;
    `mutating` for anything else."""
    words = command.split(" ")
    name = words[0]
    if name not in READ_ONLY_COMMANDS and name not in ("git", "find"):
        return "mutating"
    if name in ("env", "printenv") and any(not w.startswith("-") for w in words[1:]):
        return "read-only" if name == "printenv" else "mutating"  # `env cmd` runs cmd (decided on its own too)
    writing = _WRITING_OPTIONS.get(name, ())
    if any(word.startswith(option) for word in words[1:] for option in writing):
        return "mutating"
    if name == "git":
        sub = next((w for w in words[1:] if not w.startswith("-")), "")
        return "read-only" if sub in READ_ONLY_GIT else "mutating"
    return "read-only"


# ---- the compiled policy -----------------------------------------------------------------


@dataclass(slots=True)
class Facts:
    """What the rules look at, worked out once per decision."""

    action: str
    email: str
    teams: frozenset[str]
    roles: frozenset[str]
    client: str
    mode: str | None
    values: dict[str, str]  # match keys: command, path, tool, profile, model, provider
    tool_class: str | None


Condition = tuple[str, Callable[[Facts], bool]]


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    order: int
    conditions: tuple[Condition, ...]
    tests: tuple[Callable[[Facts], bool], ...] = ()  # the conditions' tests alone, for speed
    effect: str = ""
    obligations: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tests", tuple(test for _, test in self.conditions))
        object.__setattr__(self, "effect", self.rule.effect)
        if self.rule.obligations:
            object.__setattr__(self, "obligations", self.rule.obligations.model_dump(exclude_none=True))

    def why_not(self, facts: Facts) -> str | None:
        for text, test in self.conditions:
            if not test(facts):
                return text
        return None


def _compile_rule(rule: Rule, order: int) -> CompiledRule:
    conditions: list[Condition] = []
    match = rule.match
    for key in ("command", "path", "tool", "profile", "model", "provider"):
        patterns = getattr(match, key) if match else None
        if patterns:
            regex = path_glob(patterns) if key == "path" else text_glob(patterns)
            conditions.append((f"{key} is not {' or '.join(patterns)}",
                               lambda f, k=key, r=regex: (v := f.values.get(k)) is not None and r.match(v) is not None))
    when = rule.when
    if when:
        if when.user:
            regex = text_glob(when.user, ignore_case=True)
            conditions.append((f"user is not {' or '.join(when.user)}", lambda f, r=regex: r.match(f.email) is not None))
        if when.team:
            teams = frozenset(when.team)
            conditions.append((f"not in team {' or '.join(when.team)}", lambda f, t=teams: not t.isdisjoint(f.teams)))
        if when.role:
            roles = frozenset(when.role)
            conditions.append((f"no role {' or '.join(when.role)}", lambda f, r=roles: not r.isdisjoint(f.roles)))
        if when.mode:
            regex = text_glob(when.mode)
            conditions.append((f"mode is not {' or '.join(when.mode)}",
                               lambda f, r=regex: f.mode is not None and r.match(f.mode) is not None))
        if when.client:
            regex = text_glob(when.client, ignore_case=True)
            conditions.append((f"client is not {' or '.join(when.client)}", lambda f, r=regex: r.match(f.client) is not None))
        if when.class_:
            classes = frozenset(when.class_)
            conditions.append((f"class is not {' or '.join(when.class_)}", lambda f, c=classes: f.tool_class in c))
    return CompiledRule(rule=rule, order=order, conditions=tuple(conditions))


class CompiledPolicy:
    """A policy version made ready to decide: rules grouped by action and indexed by the literal
    their main pattern starts with, so a decision looks only at rules that could match."""

    def __init__(self, policy: Policy, version: int | None = None) -> None:
        self.policy = policy
        self.version = version
        self.team_roles = {team: frozenset(settings.roles) for team, settings in policy.teams.items()}
        self.tool_classes = [(text_glob([entry.match]), entry.class_) for entry in policy.tools]
        self.trusted_servers = frozenset(name for name, server in policy.mcp_servers.items() if server.trust_annotations)
        self.edit_paths = {name: path_glob(mode.edit_paths) for name, mode in policy.modes.items() if mode.edit_paths}
        self.rules: dict[str, list[CompiledRule]] = {}
        # action -> (index key, {token: rules}, rules that must always be looked at)
        self._index: dict[str, tuple[str | None, dict[str, list[CompiledRule]], list[CompiledRule]]] = {}
        for order, rule in enumerate(policy.rules):
            self.rules.setdefault(rule.action, []).append(_compile_rule(rule, order))
        for action, compiled in self.rules.items():
            self._index[action] = self._build_index(compiled)

    @staticmethod
    def _build_index(compiled: list[CompiledRule]) -> tuple[str | None, dict[str, list[CompiledRule]], list[CompiledRule]]:
        key = next((k for k in ("command", "tool", "profile", "model", "provider")
                    if any(getattr(c.rule.match, k, None) for c in compiled)), None)
        by_token: dict[str, list[CompiledRule]] = {}
        always: list[CompiledRule] = []
        for rule in compiled:
            patterns = getattr(rule.rule.match, key, None) if key else None
            tokens = [_first_token(key, p) for p in patterns] if patterns and key else [None]
            if None in tokens:
                always.append(rule)
                continue
            for token in dict.fromkeys(tokens):
                by_token.setdefault(token, []).append(rule)  # type: ignore[arg-type]
        merged = {token: sorted([*always, *rules], key=lambda rule: rule.order) for token, rules in by_token.items()}
        return key, merged, always

    def candidates(self, facts: Facts) -> list[CompiledRule]:
        entry = self._index.get(facts.action)
        if entry is None:
            return []
        key, by_token, always = entry
        if key is None or not by_token:
            return always
        value = facts.values.get(key)
        token = _first_token(key, value) if value else None
        return by_token.get(token, always) if token is not None else always  # type: ignore[arg-type]

    def tool_class(self, tool: str, annotations: dict[str, Any] | None) -> str:
        """The policy's `tools:` entries win; a trusted server's annotations come next; anything
        else is `destructive`, the MCP default."""
        for regex, tool_class in self.tool_classes:
            if regex.match(tool):
                return tool_class
        if annotations and tool.split("/", 1)[0] in self.trusted_servers:
            if annotations.get("readOnlyHint") is True:
                return "read-only"
            if annotations.get("destructiveHint") is False:
                return "mutating"
        return "destructive"

    def roles_of(self, subject: Subject) -> frozenset[str]:
        roles = subject.roles
        for team in subject.teams:
            granted = self.team_roles.get(team)
            if granted:
                roles = roles | granted
        return roles

    def targets(self, profile: str) -> tuple[str, ...]:
        found = self.policy.profiles.get(profile)
        return found.targets if found else ()


# ---- deciding ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EffectivePolicy:
    """The active policy version with the overrides in force: what every decision uses."""

    compiled: CompiledPolicy
    overrides: tuple[Override, ...] = ()
    # Agents repeat themselves (the same tools, profiles and commands), so decisions are kept,
    # keyed by everything they depend on, including which overrides are in force right now.
    _cache: dict[tuple[Any, ...], Decision] = field(default_factory=dict, compare=False, repr=False)

    def decide(self, request: Request) -> Decision:
        annotations = request.tool_annotations
        subject = request.subject
        active = self._active_overrides(request) if self.overrides else ()
        scoped = any(o.kind == "scope_tasks" for o in active)  # only then does a task's usage matter
        key = (request.action, request.resource, subject.email, subject.teams, subject.roles, subject.client,
               request.mode, tuple(sorted(annotations.items())) if annotations else None,
               request.task_requests if scoped else None, request.task_cost_usd if scoped else None,
               tuple(o.id for o in active))
        try:
            return self._cache[key]
        except KeyError:
            pass
        except TypeError:  # annotations that are not hashable: decide without the cache
            return self._decide(request, trace=None)
        decision = self._decide(request, trace=None)
        if len(request.resource) <= CACHE_RESOURCE_CHARS:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = decision
        return decision

    def mode_groups(self, mode: str | None) -> tuple[str, ...] | None:
        """The tool groups a mode may use; None when the mode is unknown (nothing to go by)."""
        found = self.compiled.policy.modes.get(mode) if mode else None
        return found.tools if found is not None else None

    def explain(self, request: Request) -> tuple[Decision, list[Trace]]:
        trace: list[Trace] = []
        return self._decide(request, trace), trace

    # The steps, in order: the mode's tool groups, the policy's rules (or defaults), the
    # overrides; a command line is each of its parts through the same steps.

    def _decide(self, request: Request, trace: list[Trace] | None) -> Decision:
        if request.action == "command.exec":
            return self._command_line(request, trace)
        return self._single(request, self._facts(request), trace)

    def _active_overrides(self, request: Request) -> list[Override]:
        now = request.now
        if now is None or not self.overrides:
            return []
        return [o for o in self.overrides if o.active(now)]

    def _facts(self, request: Request, command: str | None = None, path: str | None = None) -> Facts:
        compiled = self.compiled
        values: dict[str, str] = {}
        tool_class = None
        action = request.action
        if action == "tool.call":
            values["tool"] = request.resource
            tool_class = compiled.tool_class(request.resource, request.tool_annotations)
        elif action == "command.exec":
            values["command"] = command if command is not None else request.resource
            tool_class = command_class(values["command"])
        elif action in ("file.read", "file.write"):
            values["path"] = normalise_path(path if path is not None else request.resource)
            tool_class = "read-only" if action == "file.read" else "mutating"
        elif action == "llm.request":
            values.update(self._route(request.resource, request))
        mode = request.resource if action == "mode.use" else request.mode
        subject = request.subject
        return Facts(action=action, email=subject.email.lower(), teams=frozenset(subject.teams),
                     roles=compiled.roles_of(subject), client=subject.client or "", mode=mode, values=values,
                     tool_class=tool_class)

    def _route(self, asked: str, request: Request) -> dict[str, str]:
        """What an LLM request asks for: a profile (routed to its first target, after overrides)
        or `provider/model` directly."""
        if asked in self.compiled.policy.profiles:
            targets = self._profile_targets(asked, self._active_overrides(request) if self.overrides else [])
            provider, _, model = targets[0].partition("/")
            return {"profile": asked, "provider": provider, "model": model}
        provider, slash, model = asked.partition("/")
        if slash and provider in self.compiled.policy.providers:
            return {"provider": provider, "model": model}
        return {"model": asked}

    def _profile_targets(self, profile: str, active: list[Override]) -> tuple[str, ...]:
        targets = self.compiled.targets(profile)
        for override in active:
            if override.kind == "switch_profile" and override.target == profile:
                to = override.params.get("to")
                targets = (to,) if to else targets[1:] or targets
        return targets

    def _mode_check(self, facts: Facts, request: Request) -> Decision | None:
        slug = facts.mode
        if slug is None:
            return None
        modes = self.compiled.policy.modes
        rule_id = f"mode:{slug}"
        if slug not in modes:
            return Decision("deny", (rule_id,), f"mode {slug!r} is not in the policy", resource=request.resource,
                            policy_version=self.compiled.version)
        group = TOOL_GROUP.get(facts.action)
        if group is not None and group not in modes[slug].tools:
            return Decision("deny", (rule_id,), f"mode {slug!r} does not have the {group!r} tool group",
                            resource=request.resource, policy_version=self.compiled.version)
        if facts.action == "file.write" and slug in self.compiled.edit_paths:
            path = facts.values["path"]
            if outside_workspace(path) or not self.compiled.edit_paths[slug].match(path):
                allowed = ", ".join(modes[slug].edit_paths or ())
                return Decision("deny", (rule_id,), f"mode {slug!r} may only edit {allowed}", resource=path,
                                policy_version=self.compiled.version)
        return None

    def _single(self, request: Request, facts: Facts, trace: list[Trace] | None) -> Decision:
        resource = facts.values.get("command") or facts.values.get("path") or request.resource
        mode_denial = self._mode_check(facts, request)
        if trace is not None and facts.mode is not None:
            trace.append(Trace(f"mode:{facts.mode}", "deny", mode_denial is not None,
                               mode_denial.reason if mode_denial else f"mode {facts.mode!r} permits this"))
        if mode_denial is not None:
            return mode_denial
        decision = self._rules(facts, resource, trace)
        return self._apply_overrides(decision, facts, request, trace)

    def _rules(self, facts: Facts, resource: str, trace: list[Trace] | None) -> Decision:
        compiled = self.compiled
        if trace is not None:
            for rule in compiled.rules.get(facts.action, []):
                why = rule.why_not(facts)
                trace.append(Trace(rule.rule.id, rule.rule.effect, why is None, why or "every condition holds"))
        matched: list[CompiledRule] = []
        for candidate in compiled.candidates(facts):
            for test in candidate.tests:
                if not test(facts):
                    break
            else:
                matched.append(candidate)
        if not matched:  # the common case for unlisted actions: the defaults
            defaults = compiled.policy.defaults
            if facts.action in defaults:
                effect = defaults[facts.action]
                reason = f"no rule matched {resource!r}; the default for {facts.action} is {effect}"
                return Decision(effect, (f"defaults.{facts.action}",), reason, resource=resource,
                                policy_version=compiled.version)
            effect = compiled.policy.default
            return Decision(effect, ("default",), f"no rule matched {resource!r}; the policy's default is {effect}",
                            resource=resource, policy_version=compiled.version)
        effect = matched[0].effect if len(matched) == 1 else max((c.effect for c in matched), key=STRICTNESS.__getitem__)
        deciding = [c for c in matched if c.effect == effect]
        obligations: dict[str, Any] = {}
        if effect != "deny":
            for candidate in matched:
                if candidate.obligations:
                    _oblige(obligations, candidate.obligations)
        names = ", ".join(c.rule.id for c in deciding)
        described = next((c.rule.description for c in deciding if c.rule.description), "")
        reason = f"{_past(effect)} by {'rule' if len(deciding) == 1 else 'rules'} {names} ({resource!r})"
        return Decision(effect, tuple(c.rule.id for c in deciding), reason + (f": {described}" if described else ""),
                        obligations=obligations, resource=resource, policy_version=compiled.version)

    def _apply_overrides(self, decision: Decision, facts: Facts, request: Request,
                         trace: list[Trace] | None) -> Decision:
        active = self._active_overrides(request)
        if not active and facts.action != "llm.request":
            return decision
        obligations = dict(decision.obligations)
        if facts.action == "llm.request" and "profile" in facts.values:
            profile = obligations.get("profile", facts.values["profile"])
            obligations["profile"] = profile
            obligations["targets"] = list(self._profile_targets(profile, active))
            found = self.compiled.policy.profiles.get(profile)
            if found is not None and found.max_tokens:
                _oblige(obligations, {"max_tokens": found.max_tokens})
        effect, rules, reasons = decision.effect, list(decision.rules), [decision.reason]
        for override in active:
            outcome = _override_effect(override, facts, request)
            if outcome is None:
                continue
            tightened, extra, why = outcome
            _oblige(obligations, extra)
            if trace is not None:
                trace.append(Trace(f"override:{override.id}", tightened or "allow", True, why))
            if tightened and STRICTNESS[tightened] >= STRICTNESS[effect]:
                if STRICTNESS[tightened] > STRICTNESS[effect]:
                    rules, reasons = [], []
                effect = tightened
                rules.append(f"override:{override.id}")
                reasons.append(f"override {override.id} ({override.kind} for {override.target}): {why}")
        return Decision(effect, tuple(rules), "; ".join(reasons), obligations=obligations, resource=decision.resource,
                        policy_version=self.compiled.version)

    def _command_line(self, request: Request, trace: list[Trace] | None) -> Decision:
        parsed = parse_command_line(request.resource)
        parts: list[Decision] = []
        for command in parsed.commands:
            parts.append(self._single(request, self._facts(request, command=command), trace))
        for path in parsed.writes:
            write = Request(**{**request.__dict__, "action": "file.write", "resource": path})
            parts.append(self._single(write, self._facts(write), trace))
        if parsed.uncertain or not parts:
            parts.insert(0, self._unknown_part(request, parsed.uncertain, trace))  # first: its reason explains
        effect = strictest(*(part.effect for part in parts))
        deciding = [part for part in parts if part.effect == effect]
        rules = tuple(dict.fromkeys(rule for part in deciding for rule in part.rules))
        obligations: dict[str, Any] = {}
        for part in parts:
            _oblige(obligations, part.obligations)
        return Decision(effect, rules, deciding[0].reason, obligations=obligations, parts=tuple(parts),
                        resource=request.resource, policy_version=self.compiled.version)


    def _unknown_part(self, request: Request, uncertain: list[str], trace: list[Trace] | None) -> Decision:
        """What the part of a line that cannot be known gets: never `allow`: at least confirm,
        or the action's fallback if that is stricter, through the mode check and the overrides
        like any command (treated as mutating)."""
        facts = self._facts(request)
        facts.tool_class = "mutating"
        mode_denial = self._mode_check(facts, request)
        if mode_denial is not None:
            return mode_denial
        why = "; ".join(uncertain) or "the line runs nothing"
        policy = self.compiled.policy
        effect = strictest("confirm", policy.defaults.get("command.exec", policy.default))
        if trace is not None:
            trace.append(Trace("parser", effect, True, why))
        cap = Decision(effect, ("parser",), f"what this line runs cannot be fully known ({why}), so it is never "
                       "allowed without a person", resource=request.resource, policy_version=self.compiled.version)
        return self._apply_overrides(cap, facts, request, trace)


def _past(effect: str) -> str:
    return {"allow": "allowed", "confirm": "needs confirmation", "approve": "needs approval",
            "deny": "denied"}[effect]


def _oblige(obligations: dict[str, Any], extra: dict[str, Any]) -> None:
    """Merge obligations: limits take the smaller value, a route the first one given."""
    for name, value in extra.items():
        if name.startswith("max_") or name.startswith("task_max_"):
            obligations[name] = min(value, obligations.get(name, value))
        elif name == "denied_modes":
            obligations[name] = sorted({*obligations.get(name, []), *value})
        else:
            obligations.setdefault(name, value)


@lru_cache(maxsize=256)
def _target_glob(target: str) -> re.Pattern[str]:
    """An override's `server/tool` glob, compiled once rather than on every decision."""
    return text_glob([target])


def _override_effect(override: Override, facts: Facts, request: Request) -> tuple[str | None, dict[str, Any], str] | None:
    """What an override does to one decision: (effect it imposes or None, obligations, why), or
    None when it does not apply."""
    kind, action = override.kind, facts.action
    if kind == "disable_tool":
        if action == "tool.call" and _target_glob(override.target).match(facts.values["tool"]):
            return "deny", {}, f"tool {facts.values['tool']} is disabled"
        return None
    if kind == "disable_server":
        if action == "tool.call" and facts.values["tool"].split("/", 1)[0] == override.target:
            return "deny", {}, f"server {override.target} is disabled"
        return None
    if kind == "switch_profile":
        return None  # applied when routing
    if not override.covers(facts.email, tuple(facts.teams)):
        return None
    mutating = facts.tool_class is not None and facts.tool_class != "read-only"
    if kind == "read_only":
        if mutating and action in ("tool.call", "command.exec", "file.write"):
            return "deny", {}, "only read-only tools and commands are allowed"
        return None
    if kind == "tighten_approvals":
        if mutating and action in ("tool.call", "command.exec", "file.write"):
            return "approve", {}, "mutating actions need approval"
        return None
    if kind == "limit_workload":
        denied = override.params.get("denied_modes", [])
        if facts.mode is not None and facts.mode in denied:
            return "deny", {}, f"mode {facts.mode!r} is not available now"
        limits = {f"max_{name}" if name == "concurrency" else name: value
                  for name, value in override.params.items() if name in ("max_tokens", "concurrency")}
        return (None, limits, "workload limited") if limits and action == "llm.request" else None
    if kind == "scope_tasks":
        max_requests = override.params.get("max_requests")
        max_cost = override.params.get("max_cost_usd")
        if max_requests is not None and request.task_requests is not None and request.task_requests >= max_requests:
            return "deny", {}, f"the task has made its {max_requests} requests"
        if max_cost is not None and request.task_cost_usd is not None and request.task_cost_usd >= max_cost:
            return "deny", {}, f"the task has spent its ${max_cost:g}"
        limits = {f"task_{name}": value for name, value in override.params.items()}
        return None, limits, "tasks scoped smaller"
    return None
