"""Cline's configuration from the policy: the hook scripts that ask Corral before a tool runs
and report the task's life (one script, corral/clients/cline_hook.py, under each hook's name),
the key they use, and an environment file for OpenTelemetry export to Corral. Pure.

Cline has no permission lists Corral could write, so its hooks carry the whole policy: Corral
decides each tool use when the PreToolUse hook asks.
"""

from __future__ import annotations

import json
import re
import shlex
from importlib.resources import files

from corral.clients.compile import (KEY_FILE_MODE, SCRIPT_MODE, Compiled, File, Target, default_effect, patterns,
                                    usable_profiles)

HOOKS = ("PreToolUse", "PostToolUse", "TaskStart", "TaskResume", "TaskComplete", "TaskCancel", "UserPromptSubmit")
KEY_FILE, ENV_FILE = "hooks/corral.key", "cline.env"
HOOK_LIMIT_S = 28  # the script's own timeout (Cline gives a hook 30 s)
_URL_LINE = re.compile(r"^CORRAL_URL = .*$", re.M)
_FAIL_OPEN_LINE = re.compile(r"^FAIL_OPEN = .*$", re.M)
_INSTALL_HOOKS = ("~/Documents/Cline/Hooks/ (all workspaces; executable; turn on Settings > Features > Enable Hooks), "
                  "a repository's .clinerules/hooks/, or the Cline CLI's <config>/hooks/")


def compile_cline(target: Target) -> Compiled:
    """The hook scripts, their key file and cline.env for one person."""
    unexpressed = _unexpressed(target)
    profile = next(iter(usable_profiles(target)), None)
    if profile is None:
        unexpressed.append(f"{target.subject.email} may use no profile, so Cline's model must be set by hand")
    script = hook_script(target.url, target.policy.clients.fail_open)
    compiled = [File("cline-hook", f"hooks/{name}", script, SCRIPT_MODE, _INSTALL_HOOKS) for name in HOOKS]
    compiled.append(File("cline-key", KEY_FILE, target.key + "\n", KEY_FILE_MODE,
                         "beside the hooks: they read it when CORRAL_KEY is not set"))
    compiled.append(File("cline-env", ENV_FILE, env_file(target, profile), KEY_FILE_MODE,
                         "source it in the shell that starts VS Code or the Cline CLI (OpenTelemetry export to Corral)"))
    model = profile or "PROFILE"
    steps = [f"Cline CLI: cline auth -p openai-compatible -k \"$(cat {KEY_FILE})\" -m {model} -b {target.url}/v1",
             f"VS Code: Cline settings > API Provider \"OpenAI Compatible\", Base URL {target.url}/v1, the key in "
             f"{KEY_FILE}, Model ID {model}"]
    return Compiled(compiled, unexpressed, steps)


def hook_script(url: str, fail_open: bool) -> str:
    """The hook template with Corral's URL and the policy's fail_open written in."""
    template = files("corral.clients").joinpath("cline_hook.py").read_text(encoding="utf-8")
    script = _URL_LINE.sub(lambda _: f"CORRAL_URL = {json.dumps(url)}  # Corral, as `corral connect cline` was told",
                           template, count=1)
    return _FAIL_OPEN_LINE.sub(lambda _: f"FAIL_OPEN = {fail_open}  # the policy's clients.fail_open when this file "
                               "was written", script, count=1)


def url_of_script(script: str) -> str | None:
    found = _URL_LINE.search(script)
    if found is None:
        return None
    try:
        url = json.loads(found.group(0).split("=", 1)[1].split("  #", 1)[0].strip())
    except ValueError:
        return None
    return url if isinstance(url, str) else None


def env_file(target: Target, profile: str | None) -> str:
    """`export NAME=value` lines (quoted for the shell) for Corral's URL and, when the policy
    asks for telemetry, Cline's OpenTelemetry export to Corral."""
    variables = {"CORRAL_URL": target.url}
    if target.policy.clients.telemetry:
        variables.update({"CLINE_OTEL_TELEMETRY_ENABLED": "true", "CLINE_OTEL_METRICS_EXPORTER": "otlp",
                          "CLINE_OTEL_LOGS_EXPORTER": "otlp", "CLINE_OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                          "CLINE_OTEL_EXPORTER_OTLP_ENDPOINT": target.url,
                          "CLINE_OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer {target.key}"})
    lines = ["# Corral for Cline: source this file in the shell that starts VS Code or the Cline CLI.",
             f"# Model provider: OpenAI Compatible, base URL {target.url}/v1, model {profile or '(none allowed)'}, "
             f"API key in {KEY_FILE}.",
             *(f"export {name}={shlex.quote(value)}" for name, value in variables.items())]
    return "\n".join(lines) + "\n"


def read_env_file(text: str) -> dict[str, str]:
    """The variables an env file sets (comments and other lines ignored)."""
    found = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export "):]
        name, equals, value = line.partition("=")
        if equals and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            try:
                found[name] = " ".join(shlex.split(value))
            except ValueError:
                found[name] = value
    return found


def _unexpressed(target: Target) -> list[str]:
    policy = target.policy
    asks = [f"rule {p.rule}" for action, key in (("command.exec", "command"), ("file.read", "path"),
                                                   ("file.write", "path"), ("tool.call", "tool"))
            for p in patterns(target, action, key) if p.effect == "confirm"]
    asks += [f"defaults.{action}" for action in ("command.exec", "file.read", "file.write", "tool.call")
             if default_effect(policy, action) == "confirm"]
    notes = []
    if asks:
        notes.append(f"confirm ({', '.join(dict.fromkeys(asks))}): Cline's hooks cannot ask the user, so Corral refuses "
                     "these with how to get them allowed")
    if policy.clients.hook_wait_s > HOOK_LIMIT_S - 1:
        notes.append(f"clients.hook_wait_s is {policy.clients.hook_wait_s:g} s, but Cline gives a hook 30 s: an "
                     f"approval is waited for at most {HOOK_LIMIT_S} s here (then the tool is refused; retry it "
                     "once approved)")
    if policy.modes:
        notes.append("modes: Cline has none of the policy's, so its tools are decided without one")
    if policy.clients.max_requests_per_task or policy.clients.max_cost_per_task_usd:
        notes.append("clients.max_requests_per_task / max_cost_per_task_usd: Cline has no per-task limit; only Roo "
                     "Code applies them")
    return notes
