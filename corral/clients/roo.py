"""Roo Code's configuration from the policy: the settings file Roo imports at start
(`roo-cline.autoImportSettingsPath`, Roo's own export format), its MCP settings naming Corral's
/mcp, and optionally a `.roomodes` with the policy's modes. Pure.

Roo approves commands by case-insensitive prefix (`allowedCommands` / `deniedCommands`; the
longest matching prefix wins, a tie denies, and every part of a chain must be approved), so a
list entry is written only where Roo's reading can never approve what the policy does not.
Everything else is left to Roo asking its user and to the gateway, which decides every call the
model makes before Roo sees it.
"""

from __future__ import annotations

import math
import re

import yaml

from corral.clients.compile import (KEY_FILE_MODE, PLAIN_MODE, Compiled, File, Pattern, Target, Unexpressed,
                                    always_allowed, as_json, default_effect, disabling, overlaps, patterns,
                                    runs_other_commands, stricter, task_limits, tightening, usable_profiles)
from corral.policy.engine import path_glob

SETTINGS, MCP, ROOMODES = "roo-settings.json", "mcp_settings.json", ".roomodes"
MCP_TIMEOUT_MAX_S = 3600  # the most Roo accepts
_INSIDE = r"(?!/|[A-Za-z]:|(.*/)?\.\.(/|$))"  # not absolute, not a drive, no `..` step
_SLUG = re.compile(r"^[a-zA-Z0-9-]+$")  # Roo's schema for a mode's slug
_DEFAULT_OUTCOME = {"deny": "and the gateway refuses the ones no rule allows",
                    "allow": "although the policy allows them (Roo's prefixes cannot say \"everything but\")",
                    "approve": "and cannot wait for an approver, so its user confirms them instead"}
_GROUP_NAMES = {"read": "read files", "edit": "edit files", "browser": "use the browser", "command": "run commands",
                "mcp": "use MCP tools", "modes": "switch modes"}


def compile_roo(target: Target) -> Compiled:
    """Roo's settings file and MCP settings (and .roomodes when asked) for one person."""
    unexpressed = Unexpressed()
    allowed, denied = command_lists(target, unexpressed)
    settings = {"providerProfiles": provider_profiles(target, unexpressed),
                "globalSettings": global_settings(target, allowed, denied, unexpressed)}
    files = [File("roo-settings", SETTINGS, as_json(settings), KEY_FILE_MODE,
                  "set the VS Code setting `roo-cline.autoImportSettingsPath` to this file's path "
                  "(Roo imports it at start; a relative path is read from the home directory)"),
             File("roo-mcp", MCP, as_json(mcp_settings(target)), KEY_FILE_MODE,
                  "Roo's global MCP settings: MCP Servers > Edit Global MCP, or VS Code's globalStorage/"
                  "rooveterinaryinc.roo-cline/settings/mcp_settings.json")]
    if target.roomodes:
        files.append(File("roomodes", ROOMODES, roomodes(target, unexpressed), PLAIN_MODE,
                          "the root of each repository (Roo reads project modes from .roomodes)"))
    elif any(mode.edit_paths for mode in target.policy.modes.values()):
        unexpressed.note("modes' edit_paths: Roo enforces them only from a .roomodes (`corral connect roo "
                         "--roomodes`); the gateway refuses writes outside them in any case")
    return Compiled(files, unexpressed.lines())


# ---- commands -----------------------------------------------------------------------------


def command_lists(target: Target, unexpressed: Unexpressed) -> tuple[list[str], list[str]]:
    """(allowedCommands, deniedCommands): denied prefixes for the deny rules that always apply
    (a pattern's text before its first `*`: stricter than the rule, which is fine), allowed
    prefixes only for `PREFIX*` allow patterns that no stricter rule can reach into."""
    found = patterns(target, "command.exec", "command")
    harder = [p for p in found if stricter(p.effect)]
    denied = list(dict.fromkeys(p.literal or "*" for p in harder if p.effect == "deny" and p.sometimes is None))
    for pattern in harder:
        if pattern.sometimes is not None:
            unexpressed.rule(pattern, "Roo cannot tell when it applies; " + (
                "the gateway refuses these commands then" if pattern.effect == "deny" else "Roo asks for them"))
        elif pattern.effect == "approve":
            unexpressed.rule(pattern, "Roo cannot wait for an approver, so it asks its user instead")
    held = tightening(target, "command.exec")
    allowed: list[str] = []
    for pattern in (p for p in found if p.effect == "allow"):
        problem = _prefix_problem(pattern, harder) or (
            f"override {held[0].id} ({held[0].kind}) is in force" if held else None)
        if problem:
            unexpressed.rule(pattern, f"not in allowedCommands: {problem}; Roo asks")
        else:
            allowed.append(pattern.glob[:-1])
    default = default_effect(target.policy, "command.exec")
    if default != "confirm":
        unexpressed.note(f"defaults.command.exec is {default}: Roo asks before any command its lists do not name, "
                         + _DEFAULT_OUTCOME[default])
    return list(dict.fromkeys(allowed)), denied


def _prefix_problem(pattern: Pattern, harder: list[Pattern]) -> str | None:
    """Why an allow pattern cannot be an allowedCommands prefix, or None if it can: Roo would
    approve every command starting with it unless a longer denied prefix matches."""
    if pattern.sometimes is not None:
        return "Roo cannot tell when it applies"
    glob = pattern.glob
    if glob.count("*") != 1 or not glob.endswith("*"):
        return "Roo approves by prefix, and this pattern is not one (`PREFIX*`)"
    prefix = glob[:-1]
    if not prefix.strip():
        return "it allows everything, including lines Corral cannot read, which the policy never allows"
    if runs_other_commands(prefix):
        return f"`{prefix.split()[0]}` runs other commands, which the policy decides on their own"
    for other in harder:
        if other.effect == "deny" and other.sometimes is None and len(other.literal) > len(prefix) \
                and other.literal.lower().startswith(prefix.lower()):
            continue  # Roo's longer denied prefix wins over this one
        if overlaps(other.literal, prefix):
            return f"{other.shown()} covers some of these commands"
    return None


# ---- provider profiles and approvals ----------------------------------------------------


def provider_profiles(target: Target, unexpressed: Unexpressed) -> dict[str, object]:
    """One OpenAI-compatible profile per mode, all pointing at Corral with the mode in a header
    (Roo sends no mode of its own), and `modeApiConfigs` mapping each mode to its profile's id."""
    configs: dict[str, dict[str, object]] = {}
    by_mode: dict[str, str] = {}
    modes = [slug for slug in target.policy.modes if _SLUG.match(slug)] or [None]
    for slug in target.policy.modes:
        if not _SLUG.match(slug):
            unexpressed.note(f"mode {slug}: not a Roo mode slug (letters, digits and '-'), so it gets no profile")
    for slug in modes:
        usable = usable_profiles(target, slug)
        if not usable:
            unexpressed.note(f"mode {slug or '(none)'}: {target.subject.email} may use no profile in it, so it "
                             "gets no provider profile")
            continue
        wanted = target.policy.modes[slug].profile if slug else None
        if wanted and usable[0] != wanted:
            unexpressed.note(f"mode {slug}: its profile {wanted} is not allowed for {target.subject.email}; "
                             f"the mode uses {usable[0]}")
        name = f"corral-{slug}" if slug else "corral"
        configs[name] = {"id": name, "apiProvider": "openai", "openAiBaseUrl": f"{target.url}/v1",
                         "openAiApiKey": target.key, "openAiModelId": usable[0],
                         "openAiHeaders": {"x-corral-mode": slug} if slug else {}}
        if slug:
            by_mode[slug] = name
    current = f"corral-{modes[0]}" if modes[0] else "corral"
    return {"currentApiConfigName": current if current in configs else next(iter(configs), ""),
            "apiConfigs": configs, "modeApiConfigs": by_mode}


def global_settings(target: Target, allowed: list[str], denied: list[str], unexpressed: Unexpressed) -> dict[str, object]:
    """Auto-approval as the policy has it: reads, writes and MCP tools are approved without
    asking only when the policy allows every one of them for this person."""
    reads = always_allowed(target, "file.read", "path")
    writes = always_allowed(target, "file.write", "path")
    tools = always_allowed(target, "tool.call", "tool") and not disabling(target)
    for action, approved in (("file.read", reads), ("file.write", writes)):
        if not approved and any(not p.everything for p in patterns(target, action, "path")):
            unexpressed.note(f"{action} rules on paths: Roo approves {action.split('.')[1]}s all or none, so it "
                             "asks for each; the gateway refuses the denied ones")
    if not tools and patterns(target, "tool.call", "tool"):
        unexpressed.note("tool.call rules: Roo approves MCP tools all or none, so it asks for each; Corral's MCP "
                         "gateway decides every call")
    settings: dict[str, object] = {
        "autoApprovalEnabled": bool(reads or writes or tools or allowed),
        "alwaysAllowReadOnly": reads, "alwaysAllowReadOnlyOutsideWorkspace": False,
        "alwaysAllowWrite": writes, "alwaysAllowWriteOutsideWorkspace": False, "alwaysAllowWriteProtected": False,
        "alwaysAllowExecute": bool(allowed), "allowedCommands": allowed, "deniedCommands": denied,
        "alwaysAllowMcp": tools, "alwaysAllowModeSwitch": False, "alwaysAllowSubtasks": False,
    }
    requests, cost = task_limits(target)
    if requests is not None:
        settings["allowedMaxRequests"] = requests
    if cost is not None:
        settings["allowedMaxCost"] = cost
    return settings


def mcp_settings(target: Target) -> dict[str, object]:
    """Corral's /mcp as Roo's one MCP server (Streamable HTTP with the key). Roo gives up on a
    tool call after `timeout` seconds (60 unless told); Corral may hold a call as long as a
    server's timeout or approval wait, so Roo is told to wait that long and a little more."""
    waits = [max(server.timeout_s, server.approval_wait_s) for server in target.policy.mcp_servers.values()]
    timeout = min(MCP_TIMEOUT_MAX_S, max(60, math.ceil(max(waits, default=0)) + 10))
    return {"mcpServers": {"corral": {"type": "streamable-http", "url": f"{target.url}/mcp",
                                      "headers": {"Authorization": f"Bearer {target.key}"}, "timeout": timeout}}}


# ---- .roomodes ----------------------------------------------------------------------------


def roomodes(target: Target, unexpressed: Unexpressed) -> str:
    """The policy's modes as Roo custom modes: their tool groups, and `edit` limited to the
    mode's edit_paths by one anchored regex."""
    modes = []
    for slug, mode in target.policy.modes.items():
        if not _SLUG.match(slug):
            continue  # reported with the provider profiles
        groups: list[object] = []
        for group in mode.tools:
            if group == "edit" and mode.edit_paths:
                paths = ", ".join(mode.edit_paths)
                groups.append(["edit", {"fileRegex": paths_regex(mode.edit_paths), "description": f"only {paths}"}])
            else:
                groups.append(group)
        can = ", ".join(_GROUP_NAMES[group] for group in mode.tools) or "nothing but talk"
        role = mode.description or f"You are Roo, working in the {slug} mode, in which you may {can}."
        modes.append({"slug": slug, "name": slug.replace("-", " ").title(), "roleDefinition": role,
                      "groups": groups})
    if not modes:
        unexpressed.note("the policy has no modes Roo can use, so .roomodes lists none")
    return yaml.safe_dump({"customModes": modes}, sort_keys=False, allow_unicode=True, width=1000)


def paths_regex(globs: tuple[str, ...] | list[str]) -> str:
    """Path globs as one regular expression for Roo's `fileRegex`, which Roo tests as
    JavaScript's `new RegExp(regex).test(path)` on the path the model gives: the engine's own
    glob translation (its escapes read the same in JavaScript), anchored with `$` rather than
    Python's `\\Z`, and never a path outside the workspace (absolute, or climbing out with
    `..`), which the policy never lets a mode edit."""
    body = path_glob(globs).pattern.removesuffix("\\Z")
    return f"^{_INSIDE}{body}$"
