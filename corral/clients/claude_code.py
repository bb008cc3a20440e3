"""Claude Code's managed settings from the policy: permission rules, HTTP hooks that send every
tool use, prompt and session end to Corral, the environment that points Claude Code's model
traffic and OpenTelemetry at Corral, and a managed MCP file naming Corral's /mcp. Pure.

Claude Code checks its rules deny first, then ask, then allow, with `*` globs like the
policy's, and asks Corral's PreToolUse hook before every tool, so the hook decides everything and
the rules say what they can say exactly. A hook that cannot reach Corral does not block (Claude
Code treats it as a non-blocking error); then these rules are what holds, so an allow rule is
written only where nothing the client cannot see could make the policy stricter.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable

from corral.clients.compile import (KEY_FILE_MODE, Compiled, File, Pattern, Target, Unexpressed, as_json,
                                    default_effect, overlaps, patterns, runs_other_commands, stricter, tightening,
                                    usable_profiles)
from corral.policy.engine import normalise_path
from corral.policy.overrides import Override

SETTINGS, MCP = "managed-settings.json", "managed-mcp.json"
HOOK_PATH = "/v1/hooks/claude-code"
KEY_VARIABLE = "CORRAL_KEY"
RECORDING_TIMEOUT_S = 10  # hooks that only report: Corral records them without waiting for anyone
TOOL_EVENTS = ("PreToolUse", "PostToolUse", "PostToolUseFailure")
OTHER_EVENTS = ("UserPromptSubmit", "Stop", "SessionEnd")  # they take no matcher
INSTALL = ("/etc/claude-code/ on Linux, /Library/Application Support/ClaudeCode/ on macOS, "
           "C:\\Program Files\\ClaudeCode\\ on Windows (readable by the developer's account only)")
Render = Callable[[str], "list[str] | str"]


def compile_claude_code(target: Target) -> Compiled:
    """managed-settings.json and managed-mcp.json for one person."""
    unexpressed = Unexpressed()
    clients = target.policy.clients
    hook_url = target.url + HOOK_PATH
    settings: dict[str, object] = {
        "permissions": permission_rules(target, unexpressed),
        "hooks": hooks(target),
        "allowedHttpHookUrls": [hook_url],
        "httpHookAllowedEnvVars": [KEY_VARIABLE],
        "env": environment(target, unexpressed),
    }
    if clients.managed_hooks_only:
        settings["allowManagedHooksOnly"] = True
    if clients.managed_permissions_only:
        settings["allowManagedPermissionRulesOnly"] = True
    _what_claude_code_lacks(target, unexpressed)
    mcp = {"mcpServers": {"corral": {"type": "http", "url": f"{target.url}/mcp",
                                     "headers": {"Authorization": f"Bearer {target.key}"}}}}
    files = [File("claude-settings", SETTINGS, as_json(settings), KEY_FILE_MODE, f"managed-settings.json in {INSTALL}"),
             File("claude-mcp", MCP, as_json(mcp), KEY_FILE_MODE,
                  "managed-mcp.json beside managed-settings.json (its servers are then the only ones Claude Code uses)")]
    return Compiled(files, unexpressed.lines())


def _what_claude_code_lacks(target: Target, unexpressed: Unexpressed) -> None:
    clients = target.policy.clients
    if target.policy.modes:
        unexpressed.note("modes: Claude Code has none, so its tools are decided without one (rules `when: {mode}` "
                         "and edit_paths do not apply to it)")
    if default_effect(target.policy, "command.exec") != "allow":
        unexpressed.note(f"defaults.command.exec is {default_effect(target.policy, 'command.exec')}: Claude Code runs "
                         "its own read-only commands (ls, cat, grep, ...) without asking; the PreToolUse hook decides")
    if default_effect(target.policy, "file.read") != "allow":
        unexpressed.note(f"defaults.file.read is {default_effect(target.policy, 'file.read')}: Claude Code reads "
                         "without asking; the PreToolUse hook decides")
    if clients.max_requests_per_task or clients.max_cost_per_task_usd:
        unexpressed.note("clients.max_requests_per_task / max_cost_per_task_usd: Claude Code has no per-task limit; "
                         "only Roo Code applies them")


# ---- permissions --------------------------------------------------------------------------


def permission_rules(target: Target, unexpressed: Unexpressed) -> dict[str, list[str]]:
    lists: dict[str, list[str]] = {"allow": [], "ask": [], "deny": []}
    for action, key, render in (("command.exec", "command", bash_rule), ("file.read", "path", _paths("Read")),
                                ("file.write", "path", _paths("Edit", "Write")), ("tool.call", "tool", mcp_rule)):
        _translate(target, action, patterns(target, action, key), render, lists, unexpressed)
    return {name: list(dict.fromkeys(rules)) for name, rules in lists.items()}


def _translate(target: Target, action: str, found: list[Pattern], render: Render, lists: dict[str, list[str]],
               unexpressed: Unexpressed) -> None:
    unseen = [p for p in found if stricter(p.effect) and p.sometimes is not None]
    held = tightening(target, action)
    for pattern in found:
        rules = render(pattern.glob)
        if isinstance(rules, str):
            unexpressed.rule(pattern, f"{rules}; the PreToolUse hook decides")
        elif pattern.sometimes is not None:
            unexpressed.rule(pattern, "Claude Code cannot tell when it applies; the PreToolUse hook decides")
        elif pattern.effect == "deny":
            lists["deny"].extend(rules)
        elif pattern.effect in ("confirm", "approve"):
            lists["ask"].extend(rules)
            if pattern.effect == "approve":
                unexpressed.rule(pattern, "held by the PreToolUse hook for an approver (the ask rule also makes "
                                 "the user confirm)")
        elif problem := _allow_problem(pattern, unseen, held):
            unexpressed.rule(pattern, f"no allow rule: {problem}; the PreToolUse hook decides")
        else:
            lists["allow"].extend(rules)


def _allow_problem(pattern: Pattern, unseen: list[Pattern], held: list[Override]) -> str | None:
    """Why an allow rule could let Claude Code do what the policy does not when the hook
    cannot answer, or None."""
    if pattern.key == "command" and pattern.everything:
        return "it allows everything, including lines Corral cannot read, which the policy never allows"
    if pattern.key == "command" and runs_other_commands(pattern.literal):
        return f"`{pattern.literal.split()[0]}` runs other commands, which the policy decides on their own"
    if held:
        return f"override {held[0].id} ({held[0].kind}) is in force"
    for other in unseen:
        if overlaps(other.literal, pattern.literal):
            return f"{other.shown()} may cover some of the same"
    return None


def bash_rule(glob: str) -> list[str] | str:
    """A command pattern as a Bash rule: Claude Code's `*` matches any text, like the policy's."""
    if "(" in glob or ")" in glob:
        return "a Bash rule cannot hold parentheses"
    return ["Bash"] if glob == "*" else [f"Bash({glob})"]


def _paths(*tools: str) -> Render:
    def render(glob: str) -> list[str] | str:
        """A path pattern in Claude Code's syntax: `//` starts an absolute path, `/` the project's root."""
        if glob == "**":
            return list(tools)
        path = normalise_path(glob)
        if path.startswith("..") or path[1:3] == ":/" or "(" in path or ")" in path:
            return "Claude Code's path rules cannot say it"
        return [f"{tool}(/{path})" for tool in tools]
    return render


def mcp_rule(glob: str) -> list[str]:
    """`server/tool` as Claude Code names the tool: Corral's /mcp is its server `corral`, whose
    tools are `server__tool`."""
    if glob == "*":
        return ["mcp__corral"]
    server, _, tool = glob.partition("/")
    return [f"mcp__corral__{server}__{tool}"]


# ---- hooks and environment ---------------------------------------------------------------


def hooks(target: Target) -> dict[str, list[dict[str, object]]]:
    """HTTP hooks for the tool and prompt events; the PreToolUse one waits as long as Corral may
    hold a call for an approver, and a little more. SessionStart takes only command hooks, so it
    posts its input with curl (and never holds the session up)."""
    url = target.url + HOOK_PATH
    decide = math.ceil(target.policy.clients.hook_wait_s + 5)

    def http(timeout: int) -> dict[str, object]:
        return {"type": "http", "url": url, "headers": {"Authorization": f"Bearer ${KEY_VARIABLE}"},
                "allowedEnvVars": [KEY_VARIABLE], "timeout": timeout}

    configured: dict[str, list[dict[str, object]]] = {}
    for event in TOOL_EVENTS:
        configured[event] = [{"matcher": "*", "hooks": [http(decide if event == "PreToolUse" else RECORDING_TIMEOUT_S)]}]
    for event in OTHER_EVENTS:
        configured[event] = [{"hooks": [http(RECORDING_TIMEOUT_S)]}]
    post = (f"curl -s -o /dev/null -m 5 -X POST -H \"Authorization: Bearer ${KEY_VARIABLE}\" "
            f"-H 'Content-Type: application/json' --data-binary @- {shlex.quote(url)} || true")
    configured["SessionStart"] = [{"hooks": [{"type": "command", "command": post, "timeout": RECORDING_TIMEOUT_S}]}]
    return configured


def environment(target: Target, unexpressed: Unexpressed) -> dict[str, str]:
    """Model traffic through Corral with the personal key (and a profile as the model, since
    the policy decides by profile), and OpenTelemetry export to Corral when the policy asks."""
    env = {KEY_VARIABLE: target.key, "ANTHROPIC_BASE_URL": target.url, "ANTHROPIC_AUTH_TOKEN": target.key}
    usable = usable_profiles(target)
    if usable:
        env["ANTHROPIC_MODEL"] = env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] = usable[0]
    else:
        unexpressed.note(f"{target.subject.email} may use no profile, so Claude Code keeps its own model names, "
                         "which the gateway decides")
    if target.policy.clients.telemetry:
        env.update({"CLAUDE_CODE_ENABLE_TELEMETRY": "1", "OTEL_LOGS_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": target.url,
                    "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer {target.key}",
                    "OTEL_RESOURCE_ATTRIBUTES": f"user.email={target.subject.email}"})
    return env
