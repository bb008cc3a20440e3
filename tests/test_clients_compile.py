"""`corral connect`'s compilers as pure functions: one policy read for two people (a developer
and a contractor) into Roo Code's settings and .roomodes, Claude Code's managed settings and
Cline's hooks, with every expected value read off the policy below by hand; Roo's .roomodes
checked against Roo's published schema (which accepts a real .roomodes from Roo's own
repository too); and drift found in files edited after they were written."""

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest
import yaml

from corral.clients import compile_client
from corral.clients.compile import Target
from corral.clients.drift import differences, read_installed
from corral.clients.roo import paths_regex
from corral.errors import InvalidRequest
from corral.identity.tokens import generate_key
from corral.policy.engine import CompiledPolicy, EffectivePolicy, Request, Subject
from corral.policy.overrides import Override
from corral.policy.schema import load_policy

SCHEMAS = Path(__file__).parent / "fixtures" / "schemas"
POLICY = """
version: 1
default: deny
defaults:
  command.exec: confirm
  file.read: allow
  file.write: confirm
  tool.call: allow
roles: [admin, approver, auditor, developer, contractor, sre]
teams:
  contractors: {roles: [contractor]}
providers:
  mock: {kind: mock}
profiles:
  fast: {targets: [mock/echo]}
  careful: {targets: [mock/echo]}
modes:
  code: {tools: [read, edit, command, mcp], profile: careful}
  architect: {tools: [read, edit], edit_paths: ["**/*.md", "docs/**"]}
  ask: {tools: [read], description: "You answer questions about the code."}
mcp_servers:
  tracker: {url: "http://127.0.0.1:9/mcp", approval_wait_s: 300}
clients:
  hook_wait_s: 40
  managed_hooks_only: true
  max_requests_per_task: 40
  max_cost_per_task_usd: 2.5
rules:
  - id: no-destruction
    effect: deny
    action: command.exec
    match: {command: ["rm -rf *", "git push --force*"]}
  - id: everyday
    effect: allow
    action: command.exec
    match: {command: ["git *", "npm test*", "ls*", "make", "sudo *", "npm run * --silent"]}
  - id: confirm-publish
    effect: confirm
    action: command.exec
    match: {command: ["npm publish*"]}
  - id: tags-need-approval
    effect: approve
    action: command.exec
    match: {command: ["git tag*"]}
  - id: readers
    effect: allow
    action: command.exec
    match: {command: ["cat *"]}
    when: {class: read-only}
  - id: contractors-no-npm
    effect: deny
    action: command.exec
    match: {command: ["npm *"]}
    when: {team: contractors}
  - id: secrets
    effect: deny
    action: file.read
    match: {path: [".env", "secrets/**"]}
  - id: profiles
    effect: allow
    action: llm.request
    match: {profile: [fast, careful]}
  - id: contractors-fast-only
    effect: deny
    action: llm.request
    match: {profile: [careful]}
    when: {team: contractors}
  - id: tracker-deletes
    effect: approve
    action: tool.call
    match: {tool: ["tracker/delete_*"]}
approvals: {required: 1, approvers: "role:admin", author_may_approve: true}
"""
EFFECTIVE = EffectivePolicy(CompiledPolicy(load_policy(POLICY), 4))
KEY = generate_key()
URL = "https://corral.example.com"
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)
ENGINE_CLIENT = {"roo": "roo-code", "claude-code": "claude-code", "cline": "cline"}


def compiled(client, teams=(), roles=("developer",), effective=EFFECTIVE, roomodes=False):
    subject = Subject("dana@example.com", tuple(teams), frozenset(roles), ENGINE_CLIENT[client])
    return compile_client(Target(client, subject, KEY, URL, effective, NOW, roomodes=roomodes))


def content(result, kind):
    return next(f.content for f in result.files if f.kind == kind)


def roo_settings(**kwargs):
    return json.loads(content(compiled("roo", **kwargs), "roo-settings"))


# ---- Roo Code -----------------------------------------------------------------------------


def test_roo_command_lists_are_never_looser_than_the_policy():
    settings = roo_settings()["globalSettings"]
    # deny rules: the text before the first *; `git *` is left out because `git tag*` needs an
    # approver; `make` is exact, `sudo` runs other commands, `npm run * --silent` is no prefix.
    assert settings["deniedCommands"] == ["rm -rf ", "git push --force"]
    assert settings["allowedCommands"] == ["npm test", "ls"]
    assert settings["alwaysAllowExecute"] is True


def test_a_contractors_lists_carry_the_rule_for_their_team():
    settings = roo_settings(teams=("contractors",))["globalSettings"]
    assert settings["deniedCommands"] == ["rm -rf ", "git push --force", "npm "]
    assert settings["allowedCommands"] == ["ls"]  # `npm test` would win over the shorter denied `npm `


def test_what_roo_cannot_say_is_reported_with_who_enforces_it():
    lines = compiled("roo").unexpressed
    assert "rule everyday (allow command `git *`): not in allowedCommands: rule tags-need-approval (approve " \
           "`git tag*`) covers some of these commands; Roo asks" in lines
    assert "rule everyday (allow command `make`, `npm run * --silent`): not in allowedCommands: Roo approves by " \
           "prefix, and this pattern is not one (`PREFIX*`); Roo asks" in lines
    assert "rule everyday (allow command `sudo *`): not in allowedCommands: `sudo` runs other commands, which the " \
           "policy decides on their own; Roo asks" in lines
    assert "rule readers (allow command `cat *` when class is read-only): not in allowedCommands: Roo cannot tell " \
           "when it applies; Roo asks" in lines
    assert "rule tags-need-approval (approve command `git tag*`): Roo cannot wait for an approver, so it asks its " \
           "user instead" in lines
    assert any(line.startswith("file.read rules on paths") for line in lines)
    assert any(line.startswith("tool.call rules") for line in lines)


def test_roo_approves_reads_writes_and_tools_only_where_the_policy_allows_them_all():
    settings = roo_settings()["globalSettings"]
    assert settings["alwaysAllowReadOnly"] is False  # .env and secrets/** are denied
    assert settings["alwaysAllowWrite"] is False  # writes default to confirm
    assert settings["alwaysAllowMcp"] is False  # tracker/delete_* needs an approver
    assert settings["autoApprovalEnabled"] is True  # `npm test` and `ls` run without asking
    assert {name: settings[name] for name in ("alwaysAllowReadOnlyOutsideWorkspace", "alwaysAllowWriteOutsideWorkspace",
                                             "alwaysAllowWriteProtected", "alwaysAllowModeSwitch",
                                             "alwaysAllowSubtasks")} == dict.fromkeys(
        ["alwaysAllowReadOnlyOutsideWorkspace", "alwaysAllowWriteOutsideWorkspace", "alwaysAllowWriteProtected",
         "alwaysAllowModeSwitch", "alwaysAllowSubtasks"], False)
    open_policy = POLICY.replace("match: {path: [\".env\", \"secrets/**\"]}", "match: {path: [\".env\"]}\n    when: "
                                 "{team: contractors}").replace("file.write: confirm", "file.write: allow")
    settings = roo_settings(effective=EffectivePolicy(CompiledPolicy(load_policy(open_policy), 5)))["globalSettings"]
    assert settings["alwaysAllowReadOnly"] is True and settings["alwaysAllowWrite"] is True


def test_per_task_limits_take_the_smaller_of_the_policy_and_a_scope_tasks_override():
    assert {k: roo_settings()["globalSettings"][k] for k in ("allowedMaxRequests", "allowedMaxCost")} == \
        {"allowedMaxRequests": 40, "allowedMaxCost": 2.5}
    override = Override(1, "scope_tasks", "user:dana@example.com", NOW + timedelta(hours=1),
                        {"max_requests": 10, "max_cost_usd": 5.0})
    effective = EffectivePolicy(EFFECTIVE.compiled, (override,))
    settings = roo_settings(effective=effective)["globalSettings"]
    assert (settings["allowedMaxRequests"], settings["allowedMaxCost"]) == (10, 2.5)


def test_an_override_that_tightens_commands_empties_the_allowed_list():
    override = Override(2, "read_only", "org", NOW + timedelta(hours=1))
    settings = roo_settings(effective=EffectivePolicy(EFFECTIVE.compiled, (override,)))["globalSettings"]
    assert settings["allowedCommands"] == [] and settings["alwaysAllowExecute"] is False
    expired = Override(3, "read_only", "org", NOW - timedelta(minutes=1))
    assert roo_settings(effective=EffectivePolicy(EFFECTIVE.compiled, (expired,)))["globalSettings"][
        "allowedCommands"] == ["npm test", "ls"]


def test_roo_gets_a_provider_profile_per_mode_pointing_at_corral():
    profiles = roo_settings()["providerProfiles"]
    assert profiles["currentApiConfigName"] == "corral-code"
    assert profiles["modeApiConfigs"] == {"code": "corral-code", "architect": "corral-architect", "ask": "corral-ask"}
    assert profiles["apiConfigs"]["corral-code"] == {
        "id": "corral-code", "apiProvider": "openai", "openAiBaseUrl": f"{URL}/v1", "openAiApiKey": KEY,
        "openAiModelId": "careful", "openAiHeaders": {"x-corral-mode": "code"}}
    # architect names no profile: the first one dana may use, the code mode's
    assert profiles["apiConfigs"]["corral-architect"]["openAiModelId"] == "careful"


def test_a_mode_whose_profile_someone_may_not_use_falls_back_and_says_so():
    result = compiled("roo", teams=("contractors",))
    profiles = json.loads(content(result, "roo-settings"))["providerProfiles"]["apiConfigs"]
    assert {name: p["openAiModelId"] for name, p in profiles.items()} == {
        "corral-code": "fast", "corral-architect": "fast", "corral-ask": "fast"}
    assert "mode code: its profile careful is not allowed for dana@example.com; the mode uses fast" in result.unexpressed


def test_roo_mcp_settings_name_corral_and_wait_as_long_as_an_approval():
    mcp = json.loads(content(compiled("roo"), "roo-mcp"))
    assert mcp == {"mcpServers": {"corral": {"type": "streamable-http", "url": f"{URL}/mcp",
                                             "headers": {"Authorization": f"Bearer {KEY}"}, "timeout": 310}}}


def test_files_holding_the_key_are_private():
    modes = {f.path: f.mode for f in compiled("roo", roomodes=True).files}
    assert modes == {"roo-settings.json": 0o600, "mcp_settings.json": 0o600, ".roomodes": 0o644}


# ---- .roomodes ------------------------------------------------------------------------------


def roomodes_validator():
    return jsonschema.Draft7Validator(json.loads((SCHEMAS / "roomodes.json").read_text()))


def test_the_schema_validator_accepts_a_real_roomodes_and_refuses_a_broken_one():
    validator = roomodes_validator()
    real = yaml.safe_load((SCHEMAS / "roo-code-repo.roomodes").read_text())
    assert list(validator.iter_errors(real)) == []
    broken = {"customModes": [{"slug": "has space", "name": "x", "roleDefinition": "y", "groups": ["read", "fly"]}]}
    assert len(list(validator.iter_errors(broken))) == 2


def test_roomodes_follow_roos_schema_and_the_policys_modes():
    modes = yaml.safe_load(content(compiled("roo", roomodes=True), "roomodes"))
    assert list(roomodes_validator().iter_errors(modes)) == []
    by_slug = {mode["slug"]: mode for mode in modes["customModes"]}
    assert by_slug["code"]["groups"] == ["read", "edit", "command", "mcp"]
    assert by_slug["ask"] == {"slug": "ask", "name": "Ask", "roleDefinition": "You answer questions about the code.",
                              "groups": ["read"]}
    read, (edit, limit) = by_slug["architect"]["groups"]
    assert (read, edit, limit["description"]) == ("read", "edit", "only **/*.md, docs/**")


@pytest.mark.parametrize("path, editable", [
    ("README.md", True), ("guide/setup.md", True), ("docs/api/index.html", True), ("docs/x", True),
    ("src/main.py", False), ("notes.mdx", False), ("docs", False), ("readme.md.bak", False), ("/etc/motd.md", False),
    ("../elsewhere.md", False), ("docs/../../etc/passwd", False),
])
def test_edit_paths_round_trip_through_the_file_regex(path, editable):
    modes = yaml.safe_load(content(compiled("roo", roomodes=True), "roomodes"))
    architect = next(mode for mode in modes["customModes"] if mode["slug"] == "architect")
    regex = architect["groups"][1][1]["fileRegex"]
    assert (re.search(regex, path) is not None) is editable  # Roo tests it unanchored: RegExp(regex).test(path)
    decision = EFFECTIVE.decide(Request("file.write", path, Subject("dana@example.com"), mode="architect"))
    assert (decision.rules != ("mode:architect",)) is editable  # the engine's mode check agrees


def test_paths_regex_escapes_what_globs_take_literally():
    assert paths_regex(["a+b/(x).md", "./c?.txt"]) == r"^(?!/|[A-Za-z]:|(.*/)?\.\.(/|$))(?:a\+b/\(x\)\.md|c[^/]\.txt)$"


# ---- Claude Code ----------------------------------------------------------------------------


def claude_settings(**kwargs):
    return json.loads(content(compiled("claude-code", **kwargs), "claude-settings"))


def test_claude_code_permissions_say_what_the_rules_say():
    assert claude_settings()["permissions"] == {
        "allow": ["Bash(git *)", "Bash(npm test*)", "Bash(ls*)", "Bash(make)", "Bash(npm run * --silent)"],
        "ask": ["Bash(npm publish*)", "Bash(git tag*)", "mcp__corral__tracker__delete_*"],
        "deny": ["Bash(rm -rf *)", "Bash(git push --force*)", "Read(/.env)", "Read(/secrets/**)"],
    }


def test_claude_code_reports_what_its_hook_decides_instead():
    lines = compiled("claude-code").unexpressed
    assert "rule everyday (allow command `sudo *`): no allow rule: `sudo` runs other commands, which the policy " \
           "decides on their own; the PreToolUse hook decides" in lines
    assert "rule readers (allow command `cat *` when class is read-only): Claude Code cannot tell when it applies; " \
           "the PreToolUse hook decides" in lines
    assert "rule tracker-deletes (approve tool `tracker/delete_*`): held by the PreToolUse hook for an approver " \
           "(the ask rule also makes the user confirm)" in lines


def test_a_rule_claude_code_cannot_see_keeps_allow_rules_it_could_reach_out():
    # a contractor's npm ban has no condition Claude Code cannot see, so it is a deny rule, and the
    # allow rules stay (deny is checked first); a `when: {class}` deny would take `npm test*` out
    permissions = claude_settings(teams=("contractors",))["permissions"]
    assert "Bash(npm *)" in permissions["deny"] and "Bash(npm test*)" in permissions["allow"]
    hidden = POLICY.replace("when: {team: contractors}\n  - id: secrets", "when: {class: mutating}\n  - id: secrets")
    permissions = claude_settings(effective=EffectivePolicy(CompiledPolicy(load_policy(hidden), 5)))["permissions"]
    assert "Bash(npm *)" not in permissions["deny"]
    assert permissions["allow"] == ["Bash(git *)", "Bash(ls*)", "Bash(make)"]


def test_claude_code_hooks_send_every_event_to_corral():
    settings = claude_settings()
    hook_url = f"{URL}/v1/hooks/claude-code"
    pre = settings["hooks"]["PreToolUse"]
    assert pre == [{"matcher": "*", "hooks": [{"type": "http", "url": hook_url,
                                               "headers": {"Authorization": "Bearer $CORRAL_KEY"},
                                               "allowedEnvVars": ["CORRAL_KEY"], "timeout": 45}]}]
    for event in ("PostToolUse", "PostToolUseFailure", "UserPromptSubmit", "Stop", "SessionEnd"):
        (entry,) = settings["hooks"][event]
        assert entry["hooks"][0]["url"] == hook_url and entry["hooks"][0]["type"] == "http"
        assert ("matcher" in entry) is (event.startswith("PostToolUse"))
    (start,) = settings["hooks"]["SessionStart"][0]["hooks"]  # SessionStart takes only command hooks
    assert start["type"] == "command" and hook_url in start["command"] and "$CORRAL_KEY" in start["command"]
    assert settings["allowedHttpHookUrls"] == [hook_url] and settings["httpHookAllowedEnvVars"] == ["CORRAL_KEY"]
    assert settings["allowManagedHooksOnly"] is True and "allowManagedPermissionRulesOnly" not in settings


def test_claude_code_talks_to_corral_and_exports_telemetry_there():
    assert claude_settings()["env"] == {
        "CORRAL_KEY": KEY, "ANTHROPIC_BASE_URL": URL, "ANTHROPIC_AUTH_TOKEN": KEY, "ANTHROPIC_MODEL": "careful",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": "careful", "CLAUDE_CODE_ENABLE_TELEMETRY": "1", "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": URL, "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer {KEY}",
        "OTEL_RESOURCE_ATTRIBUTES": "user.email=dana@example.com"}
    quiet = POLICY.replace("max_requests_per_task: 40", "max_requests_per_task: 40\n  telemetry: false")
    env = claude_settings(effective=EffectivePolicy(CompiledPolicy(load_policy(quiet), 5)))["env"]
    assert not [name for name in env if "OTEL" in name or "TELEMETRY" in name]


def test_claude_code_settings_have_the_shape_its_schema_requires():
    # From Claude Code's settings reference (SchemaStore claude-code-settings.json): permission
    # rules are `Tool(specifier)` or `mcp__...`; an http hook has exactly these fields.
    rule = re.compile(r"^((Bash|Edit|Read|Write|WebFetch)(\([^)]+\))?|mcp__.*)$")
    settings = claude_settings()
    for name, rules in settings["permissions"].items():
        assert name in ("allow", "ask", "deny") and len(rules) == len(set(rules))
        assert all(rule.match(r) for r in rules), rules
    for event, entries in settings["hooks"].items():
        for entry in entries:
            assert set(entry) <= {"matcher", "hooks"}
            for hook in entry["hooks"]:
                allowed = {"type", "url", "headers", "allowedEnvVars", "timeout"} if hook["type"] == "http" \
                    else {"type", "command", "timeout"}
                assert set(hook) <= allowed and isinstance(hook["timeout"], int)
    mcp = json.loads(content(compiled("claude-code"), "claude-mcp"))
    assert mcp == {"mcpServers": {"corral": {"type": "http", "url": f"{URL}/mcp",
                                             "headers": {"Authorization": f"Bearer {KEY}"}}}}


# ---- Cline ----------------------------------------------------------------------------------


def test_cline_gets_one_hook_script_per_hook_a_key_file_and_an_env_file():
    result = compiled("cline")
    names = {f.path: f.mode for f in result.files}
    assert names == {**{f"hooks/{hook}": 0o700 for hook in ("PreToolUse", "PostToolUse", "TaskStart", "TaskResume",
                                                            "TaskComplete", "TaskCancel", "UserPromptSubmit")},
                     "hooks/corral.key": 0o600, "cline.env": 0o600}
    scripts = {f.content for f in result.files if f.kind == "cline-hook"}
    assert len(scripts) == 1 and f'CORRAL_URL = "{URL}"' in scripts.pop()
    assert content(result, "cline-key") == KEY + "\n"
    assert result.next_steps[0] == (f'Cline CLI: cline auth -p openai-compatible -k "$(cat hooks/corral.key)" '
                                    f"-m careful -b {URL}/v1")


def test_cline_env_exports_telemetry_to_corral():
    env = content(compiled("cline"), "cline-env")
    assert f"export CLINE_OTEL_EXPORTER_OTLP_HEADERS='Authorization=Bearer {KEY}'" in env.splitlines()
    assert f"export CLINE_OTEL_EXPORTER_OTLP_ENDPOINT={URL}" in env.splitlines()
    assert "export CLINE_OTEL_TELEMETRY_ENABLED=true" in env.splitlines()


def test_what_cline_hooks_cannot_do_is_reported():
    lines = compiled("cline").unexpressed
    assert "confirm (rule confirm-publish, defaults.command.exec, defaults.file.write): Cline's hooks cannot ask " \
           "the user, so Corral refuses these with how to get them allowed" in lines
    assert any(line.startswith("clients.hook_wait_s is 40 s, but Cline gives a hook 30 s") for line in lines)


# ---- drift ----------------------------------------------------------------------------------


@pytest.mark.parametrize("client, kind", [
    ("roo", "roo-settings"), ("roo", "roo-mcp"), ("roo", "roomodes"), ("claude-code", "claude-settings"),
    ("claude-code", "claude-mcp"), ("cline", "cline-hook"), ("cline", "cline-key"), ("cline", "cline-env"),
])
def test_every_file_connect_writes_is_recognised_with_its_key_and_url(client, kind):
    file = next(f for f in compiled(client, roomodes=True).files if f.kind == kind)
    installed = read_installed(file.content, file.path)
    holds_key = kind not in ("roomodes", "cline-hook")
    says_url = kind not in ("roomodes", "cline-key")
    assert (installed.kind, installed.client) == (kind, client)
    assert installed.key == (KEY if holds_key else None)
    assert installed.url == (URL if says_url else None)
    assert differences(file.content, kind, file) == []


def test_an_edited_roo_settings_file_is_drift_naming_what_changed():
    file = next(f for f in compiled("roo").files if f.kind == "roo-settings")
    edited = json.loads(file.content)
    edited["globalSettings"]["alwaysAllowExecute"] = False
    edited["globalSettings"]["deniedCommands"].remove("rm -rf ")
    edited["globalSettings"]["terminalShellIntegrationDisabled"] = True
    assert differences(json.dumps(edited), "roo-settings", file) == [
        "globalSettings.alwaysAllowExecute: installed has false, policy gives true",
        'globalSettings.deniedCommands: installed has ["git push --force"], policy gives ["rm -rf ", '
        '"git push --force"]',
        "globalSettings.terminalShellIntegrationDisabled: installed has true, policy gives nothing",
    ]


def test_differences_never_show_a_key_whole():
    file = next(f for f in compiled("claude-code").files if f.kind == "claude-settings")
    other = generate_key()
    found = differences(file.content.replace(KEY, other), "claude-settings", file)
    assert found and all(other not in line and KEY not in line for line in found)
    assert f"env.CORRAL_KEY: installed has \"{other[:11]}…\", policy gives \"{KEY[:11]}…\"" in found


def test_an_edited_hook_script_is_drift_line_by_line():
    file = next(f for f in compiled("cline").files if f.kind == "cline-hook")
    edited = file.content.replace("FAIL_OPEN = False", "FAIL_OPEN = True")
    comment = "  # the policy's clients.fail_open when this file was written"
    assert differences(edited, "cline-hook", file) == [
        f'line 23: installed has "FAIL_OPEN = True{comment}", policy gives "FAIL_OPEN = False{comment}"']


@pytest.mark.parametrize("text, message", [
    ("{unclosed", "is not a file `corral connect` writes: it is neither JSON nor YAML"),
    ("hello", "its top level is not an object"),
    ("[1, 2]", "its top level is not an object"),
    ('{"theme": "dark"}', "no providerProfiles, customModes, mcpServers, permissions or env in it"),
    ("a: &x [1]\nb: *x\n", "uses YAML anchors or aliases"),
])
def test_a_file_connect_does_not_write_is_refused_in_words(text, message):
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        read_installed(text, "settings.json")
