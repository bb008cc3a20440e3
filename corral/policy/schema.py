"""The policy file: its models, and loading it from YAML with every problem reported as
`FILE:LINE:COL: where: what`. This module owns the contract of the file (docs/policy.md is its
reference); it never holds a secret: credentials are `env:NAME` references, and a value that
looks like a real key is refused wherever it appears.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from corral.identity.access import BUILTIN_ROLES

Effect = Literal["allow", "confirm", "approve", "deny"]
Action = Literal["llm.request", "mode.use", "tool.call", "command.exec", "file.read", "file.write"]
ToolClass = Literal["read-only", "mutating", "destructive"]
ToolGroup = Literal["read", "edit", "browser", "command", "mcp", "modes"]  # Roo Code's tool groups
ACTIONS: tuple[str, ...] = Action.__args__  # type: ignore[attr-defined]
EFFECTS: tuple[str, ...] = Effect.__args__  # type: ignore[attr-defined]

_NAME = r"^[a-z0-9][a-z0-9._-]{0,99}$"
_SECRET_REF = re.compile(r"^env:[A-Za-z_][A-Za-z0-9_]*$")
# Values that are real credentials, whichever field they are put in.
_LOOKS_SECRET = re.compile(
    r"(sk-[A-Za-z0-9_-]{16,}|sk-ant-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|ck_[A-Za-z0-9]{49}|-----BEGIN [A-Z ]*PRIVATE KEY)")
_SECRET_NAME = re.compile(r"(key|token|secret|password|passwd|auth|credential|cookie)", re.IGNORECASE)


SECRET_VALUE = _LOOKS_SECRET  # for redacting such values out of text


def looks_secret(text: str) -> bool:
    """Whether a text holds what looks like a real credential."""
    return _LOOKS_SECRET.search(text) is not None


def secret_name(name: str) -> bool:
    """Whether a name (an env variable, a header, an argument) is one secrets are kept under."""
    return _SECRET_NAME.search(name) is not None


def _many(value: Any) -> Any:
    """A `when`/`match` value may be one item or a list of them (any of)."""
    return [value] if isinstance(value, str) else value


Names = Annotated[tuple[Annotated[str, Field(min_length=1, max_length=500)], ...],
                  BeforeValidator(_many), Field(min_length=1, max_length=500)]
SecretRef = Annotated[str, Field(pattern=_SECRET_REF.pattern,
                                 description="`env:NAME`: the secret is read from that environment variable")]
_SELECTOR = r"^(role|team|user):\S+$"
Selector = Annotated[str, Field(pattern=_SELECTOR)]
Selectors = Annotated[tuple[Selector, ...], BeforeValidator(_many), Field(min_length=1)]
_SCOPE = r"^(org|(team|user|key|profile):\S+)$"
Scope = Annotated[str, Field(pattern=_SCOPE)]
_TARGET = r"^[^/\s]+/\S+$"
_URL = r"^https?://\S+$"
_PATTERN_HINTS = {
    _NAME: "use 1-100 lowercase letters, digits, '.', '_' or '-'",
    _SECRET_REF.pattern: "write env:NAME (the environment variable that holds the secret), never the value",
    _SELECTOR: "an approver is role:NAME, team:NAME or user:EMAIL",
    _SCOPE: "a scope is org, team:NAME, user:EMAIL, key:ID, profile:NAME, or team:*, user:*, key:*, profile:*",
    _TARGET: "a target is provider/model, e.g. openai/gpt-5-mini",
    _URL: "an http:// or https:// URL",
}


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Price(Model):
    """USD per million tokens, for models genai-prices does not know (private deployments)."""
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(None, ge=0)
    cache_write: float | None = Field(None, ge=0)


class Health(Model):
    """When a target is taken out of rotation: over the last `window_s`, at least `min_requests`
    and an error (429, 5xx, timeout, refused) rate of `error_rate` or more; it rests `cooldown_s`,
    then one probe request decides whether it is back."""
    window_s: float = Field(60.0, gt=0, le=3600)
    min_requests: int = Field(5, ge=1)
    error_rate: float = Field(0.5, gt=0, le=1)
    cooldown_s: float = Field(30.0, gt=0, le=3600)


class MockBehaviour(Model):
    """The built-in mock's faults, for the demo, tests and runbook drills."""
    latency_ms: int = Field(0, ge=0, le=600_000)
    fail_status: int | None = Field(None, ge=400, le=599)  # answer this status instead...
    fail_rate: float = Field(1.0, ge=0, le=1)  # ...for this share of requests (deterministic)


class Provider(Model):
    kind: Literal["openai", "anthropic", "mock"]
    base_url: Annotated[str, Field(pattern=_URL)] | None = None
    api_key: SecretRef | None = None
    timeout_s: float = Field(60.0, gt=0, le=600)
    connect_timeout_s: float = Field(5.0, gt=0, le=60)
    health: Health = Health()
    prices: dict[str, Price] = {}  # model -> price, over genai-prices
    mock: MockBehaviour | None = None

    @model_validator(mode="after")
    def _reachable(self) -> "Provider":
        if self.kind != "mock" and self.base_url is None:
            raise ValueError(f"a provider of kind {self.kind} needs a base_url")
        if self.kind != "mock" and self.mock is not None:
            raise ValueError("`mock` settings are for providers of kind mock")
        return self


class Profile(Model):
    targets: tuple[Annotated[str, Field(pattern=_TARGET)], ...] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    description: str = ""


class Mode(Model):
    tools: tuple[ToolGroup, ...]
    edit_paths: tuple[str, ...] | None = None
    profile: str | None = None  # the profile this mode's requests use in compiled client settings
    description: str = ""


class Probe(Model):
    """A read-only tool `corral mcp check` calls to see that the server really works."""
    tool: str = Field(min_length=1, max_length=200)
    arguments: dict[str, Any] = {}


class McpServer(Model):
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = {}
    cwd: str | None = None
    url: Annotated[str, Field(pattern=_URL)] | None = None
    transport: Literal["streamable-http", "sse"] = "streamable-http"  # for `url` servers
    headers: dict[str, str] = {}
    trust_annotations: bool = False
    timeout_s: float = Field(30.0, gt=0, le=600)  # per call
    connect_timeout_s: float = Field(30.0, gt=0, le=600)  # starting the server and the MCP handshake
    retries: int = Field(1, ge=0, le=5)  # only for read-only or idempotent tools
    pinning: Literal["learn", "manual"] = "learn"  # learn: a tool is pinned when first seen
    approval_wait_s: float = Field(120.0, gt=0, le=3600)  # how long an `approve` call is held
    store_payloads: bool = False  # keep arguments and results, not only their hashes
    health: Health = Health()  # when the server is taken out of service for a cool-down
    probe: Probe | None = None

    @model_validator(mode="after")
    def _one_transport(self) -> "McpServer":
        if (self.command is None) == (self.url is None):
            raise ValueError("give either `command` (stdio) or `url` (HTTP), not both or neither")
        for name, value in [*self.env.items(), *self.headers.items()]:
            if _SECRET_NAME.search(name) and not _SECRET_REF.match(value):
                raise ValueError(f"{name} looks like a secret: write it as env:NAME, never the value")
        return self


class ToolClassification(Model):
    match: str = Field(pattern=_TARGET, description="`server/tool` glob")
    class_: ToolClass = Field(alias="class")


class Match(Model):
    command: Names | None = None
    path: Names | None = None
    tool: Names | None = None
    profile: Names | None = None
    model: Names | None = None
    provider: Names | None = None


class When(Model):
    user: Names | None = None
    team: Names | None = None
    role: Names | None = None
    mode: Names | None = None
    client: Names | None = None
    class_: Annotated[tuple[ToolClass, ...], BeforeValidator(_many)] | None = Field(None, alias="class")


class Obligations(Model):
    max_tokens: int | None = Field(None, ge=1)
    profile: str | None = None


class Rule(Model):
    id: str = Field(pattern=_NAME)
    effect: Effect
    action: Action
    match: Match | None = None
    when: When | None = None
    obligations: Obligations | None = None
    description: str = ""


class Budget(Model):
    scope: Scope
    period: Literal["day", "week", "month"]
    limit_usd: float = Field(gt=0)
    soft_at: float | None = Field(None, gt=0, lt=1)


class Limit(Model):
    scope: Scope
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _something(self) -> "Limit":
        if self.rpm is None and self.tpm is None and self.concurrency is None:
            raise ValueError("a limit needs rpm, tpm or concurrency")
        return self


class SectionApprovals(Model):
    required: int = Field(1, ge=1, le=10)
    approvers: Selectors = ("role:approver",)


class Approvals(Model):
    required: int = Field(1, ge=1, le=10)
    approvers: Selectors = ("role:approver",)
    author_may_approve: bool = False
    sections: dict[str, SectionApprovals] = {}


class Clients(Model):
    """How the agents' own configuration and hooks carry the policy (docs/clients.md)."""
    fail_open: bool = False  # a hook lets the tool run when Corral cannot be reached or read the input
    hook_wait_s: float = Field(25.0, gt=0, le=600)  # how long a hook's answer waits for an approver
    approval_wait_s: float = Field(600.0, gt=0, le=86400)  # how long a held call stays open for a retry
    managed_hooks_only: bool = False  # Claude Code: allowManagedHooksOnly
    managed_permissions_only: bool = False  # Claude Code: allowManagedPermissionRulesOnly
    max_requests_per_task: int | None = Field(None, ge=1)  # Roo Code: allowedMaxRequests
    max_cost_per_task_usd: float | None = Field(None, gt=0)  # Roo Code: allowedMaxCost
    telemetry: bool = True  # agents export OpenTelemetry to Corral


class TeamPolicy(Model):
    roles: tuple[str, ...] = ()


class Policy(Model):
    version: Literal[1]
    default: Effect = "deny"
    defaults: dict[Action, Effect] = {}
    roles: tuple[Annotated[str, Field(pattern=_NAME)], ...] = BUILTIN_ROLES
    teams: dict[Annotated[str, Field(pattern=_NAME)], TeamPolicy] = {}
    providers: dict[Annotated[str, Field(pattern=_NAME)], Provider] = {}
    profiles: dict[Annotated[str, Field(pattern=_NAME)], Profile] = {}
    modes: dict[Annotated[str, Field(pattern=_NAME)], Mode] = {}
    mcp_servers: dict[Annotated[str, Field(pattern=_NAME)], McpServer] = {}
    tools: tuple[ToolClassification, ...] = ()
    rules: tuple[Rule, ...] = ()
    budgets: tuple[Budget, ...] = ()
    limits: tuple[Limit, ...] = ()
    approvals: Approvals = Approvals()
    clients: Clients = Clients()
    # server -> its read-only twin, which serves callers under a `read_only` override
    read_only_alternatives: dict[str, str] = {}

    @field_validator("roles")
    @classmethod
    def _builtin_roles_stay(cls, roles: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*BUILTIN_ROLES, *roles]))  # the built-in roles always exist


SECTIONS: tuple[str, ...] = tuple(name for name in Policy.model_fields if name != "version")
# Which `match` keys mean something for which action.
MATCH_KEYS = {"command": ("command.exec",), "path": ("file.read", "file.write"), "tool": ("tool.call",),
              "profile": ("llm.request",), "model": ("llm.request",), "provider": ("llm.request",)}


# ---- loading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    line: int
    column: int
    message: str


class PolicyError(Exception):
    """A policy file that cannot be used, with every problem found and where it is."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = sorted(problems, key=lambda p: (p.line, p.column))
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.source}:{p.line}:{p.column}: {p.message}" for p in self.problems]


Path_ = tuple[str | int, ...]
MAX_NESTING = 20


def load_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate a policy document; raise PolicyError listing every problem."""
    marks: dict[Path_, tuple[int, int]] = {(): (1, 1)}
    problems: list[Problem] = []
    try:
        _check_structure(text, source)
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise PolicyError(source, [Problem(line, column, f"not valid YAML: {error.problem or error}")]) from None
    except (yaml.YAMLError, RecursionError) as error:
        raise PolicyError(source, [Problem(1, 1, f"not valid YAML: {error}")]) from None
    if not isinstance(data, dict):
        raise PolicyError(source, [Problem(1, 1, "a policy is a mapping that starts with `version: 1`")])
    _positions(node, (), marks, problems)
    problems.extend(_secrets(data, (), marks))
    try:
        policy = Policy.model_validate(data)
    except ValidationError as error:
        for item in error.errors():
            path = _known_path(tuple(item["loc"]), marks)
            where = _dotted(tuple(item["loc"])) or "policy"
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "string_pattern_mismatch":
                message = _PATTERN_HINTS.get(item["ctx"]["pattern"], message)
            if item["type"] == "extra_forbidden":
                message = f"unknown key {str(item['loc'][-1])!r}"
                path = (*path[:-1], f"{path[-1]}:key") if (*path[:-1], f"{path[-1]}:key") in marks else path
            problems.append(Problem(*marks[path], f"{where}: {message}"))
        raise PolicyError(source, problems) from None
    for path, message in _references(policy):
        problems.append(Problem(*marks[_known_path(path, marks)], f"{_dotted(path)}: {message}"))
    if problems:
        raise PolicyError(source, problems)
    return policy


def _check_structure(text: str, source: str) -> None:
    """Refuse anchors and aliases (an alias bomb takes minutes to expand; a policy needs none)
    and nesting deeper than any policy has, before anything is built."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        mark = event.start_mark
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise PolicyError(source, [Problem(mark.line + 1, mark.column + 1, "anchors and aliases (&name, *name) "
                                               "are not allowed in a policy: write the values out")])
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_NESTING:
                raise PolicyError(source, [Problem(mark.line + 1, mark.column + 1,
                                                   f"nested deeper than {MAX_NESTING} levels")])
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _positions(node: yaml.Node, path: Path_, marks: dict[Path_, tuple[int, int]], problems: list[Problem]) -> None:
    """Where each value (and each mapping key, as `name:key`) starts; duplicate keys are errors."""
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                problems.append(Problem(key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                        f"{_dotted((*path, key))}: {key!r} is given twice"))
            seen.add(key)
            marks[(*path, f"{key}:key")] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _positions(value_node, (*path, key), marks, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _positions(item, (*path, index), marks, problems)


def _secrets(value: Any, path: Path_, marks: dict[Path_, tuple[int, int]]) -> list[Problem]:
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _secrets(item, (*path, str(key)), marks)]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in _secrets(item, (*path, index), marks)]
    if isinstance(value, str) and _LOOKS_SECRET.search(value):
        return [Problem(*marks[_known_path(path, marks)],
                        f"{_dotted(path)}: this looks like a secret; secrets never go in the policy: "
                        "write env:NAME and set NAME in Corral's environment")]
    return []


def _known_path(path: Path_, marks: dict[Path_, tuple[int, int]]) -> Path_:
    """The longest prefix of a validation error's location that is a place in the file."""
    for end in range(len(path), -1, -1):
        if path[:end] in marks:
            return path[:end]
    return ()


def _dotted(path: Path_) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("str", "list[str]", "tuple[str, ...]") or part.startswith(("function-", "literal[")):
            continue  # pydantic's names for the branches of a union
        else:
            part = part.removesuffix(":key")
            text += f".{part}" if text else part
    return text


def _references(policy: Policy) -> list[tuple[Path_, str]]:
    """What pydantic cannot see: names that must refer to something declared elsewhere."""
    found: list[tuple[Path_, str]] = []
    roles = set(policy.roles)
    for team, settings in policy.teams.items():
        for index, role in enumerate(settings.roles):
            if role not in roles:
                found.append((("teams", team, "roles", index), f"unknown role {role!r}; declare it in `roles`"))
    for name, profile in policy.profiles.items():
        for index, target in enumerate(profile.targets):
            provider = target.split("/", 1)[0]
            if provider not in policy.providers:
                found.append((("profiles", name, "targets", index), f"no provider named {provider!r}"))
    for name, mode in policy.modes.items():
        if mode.profile is not None and mode.profile not in policy.profiles:
            found.append((("modes", name, "profile"), f"no profile named {mode.profile!r}"))
    for index, entry in enumerate(policy.tools):
        server = entry.match.split("/", 1)[0]
        if "*" not in server and server not in policy.mcp_servers:
            found.append((("tools", index, "match"), f"no MCP server named {server!r} in `mcp_servers`"))
    for name in policy.mcp_servers:
        if "__" in name:
            found.append((("mcp_servers", f"{name}:key"), f"{name!r}: a server name may not contain '__', which "
                          "separates the server from the tool in /mcp's tool names (server__tool)"))
    for server, twin in policy.read_only_alternatives.items():
        for name, where in ((server, f"{server}:key"), (twin, server)):
            if name not in policy.mcp_servers:
                found.append((("read_only_alternatives", where), f"no MCP server named {name!r} in `mcp_servers`"))
    seen_ids: set[str] = set()
    for index, rule in enumerate(policy.rules):
        if rule.id in seen_ids:
            found.append((("rules", index, "id"), f"the rule id {rule.id!r} is used twice"))
        seen_ids.add(rule.id)
        for key in (rule.match.model_fields_set if rule.match else ()):
            if rule.action not in MATCH_KEYS[key]:
                found.append((("rules", index, "match", key),
                              f"`{key}` never matches a {rule.action} action (it is for {', '.join(MATCH_KEYS[key])})"))
        for name in (rule.match.profile or ()) if rule.match else ():
            if "*" not in name and name not in policy.profiles:
                found.append((("rules", index, "match", "profile"), f"no profile named {name!r}"))
        for name in (rule.when.role or ()) if rule.when else ():
            if name not in roles:
                found.append((("rules", index, "when", "role"), f"unknown role {name!r}; declare it in `roles`"))
        for name in (rule.when.mode or ()) if rule.when else ():
            if "*" not in name and name not in policy.modes:
                found.append((("rules", index, "when", "mode"), f"no mode named {name!r} in `modes`"))
        if rule.obligations and rule.obligations.profile and rule.obligations.profile not in policy.profiles:
            found.append((("rules", index, "obligations", "profile"), f"no profile named {rule.obligations.profile!r}"))
    approvals = policy.approvals
    for index, selector in enumerate(approvals.approvers):
        found.extend(_selector_problem(("approvals", "approvers", index), selector, roles))
    for section, rule in approvals.sections.items():
        if section not in SECTIONS:
            found.append((("approvals", "sections", f"{section}:key"), f"{section!r} is not a section of the policy; "
                          f"sections are {', '.join(SECTIONS)}"))
        for index, selector in enumerate(rule.approvers):
            found.extend(_selector_problem(("approvals", "sections", section, "approvers", index), selector, roles))
    return found


def _selector_problem(path: Path_, selector: str, roles: set[str]) -> list[tuple[Path_, str]]:
    kind, _, name = selector.partition(":")
    if kind == "role" and name not in roles:
        return [(path, f"unknown role {name!r}; declare it in `roles`")]
    return []
