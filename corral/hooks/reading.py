"""What an agent's hook is telling Corral: Claude Code's hook input and Cline's, read into one
`HookCall` (which stage of the task, which tool with what input, which task), and what a tool
use stands for in the policy's terms (`command.exec` on a command line, `file.write` on a path
inside the workspace, `tool.call` on `server/tool`). Pure: JSON in, values out.

A tool Corral knows to act on nothing the policy governs (a todo list, a question to the user)
has no actions; a tool it does not know at all is `unknown`, and the policy's default decides."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any, Literal

from corral.gateway.llm.tools import ALWAYS, GROUPS

Stage = Literal["pre_tool", "post_tool", "tool_failed", "prompt", "task_started", "task_resumed", "task_completed",
                "task_cancelled", "session_ended", "other"]
MAX_TEXT = 500  # what an event keeps of a command line or an error


class UnreadableHook(ValueError):
    """The input is not a hook input Corral can read; the message says why."""


@dataclass(frozen=True)
class HookCall:
    client: str  # claude-code | cline
    hook: str  # the client's own name for the hook (PreToolUse, TaskStart, ...)
    stage: Stage
    task_id: str | None = None
    tool: str | None = None
    tool_input: dict[str, Any] = field(default_factory=dict)
    tool_use_id: str | None = None
    cwd: str | None = None
    duration_ms: float | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # what else the event keeps (never content)


@dataclass(frozen=True)
class Act:
    """One thing a tool use does, as the policy sees it."""

    action: str  # command.exec | file.read | file.write | tool.call
    resource: str


# ---- Claude Code ---------------------------------------------------------------------------

_CLAUDE_STAGES: dict[str, Stage] = {
    "PreToolUse": "pre_tool", "PostToolUse": "post_tool", "PostToolUseFailure": "tool_failed",
    "UserPromptSubmit": "prompt", "SessionStart": "task_started", "SessionEnd": "session_ended",
    "Stop": "task_completed",
}


def read_claude_code(payload: Any) -> HookCall:
    """Claude Code's hook input (the JSON a command hook reads on stdin, an HTTP hook's body)."""
    if not isinstance(payload, dict):
        raise UnreadableHook(f"a Claude Code hook input is a JSON object, not {_type(payload)}")
    hook = _text(payload.get("hook_event_name"))
    if hook is None:
        raise UnreadableHook("the input has no hook_event_name; is this a Claude Code hook?")
    stage = _CLAUDE_STAGES.get(hook, "other")
    if hook == "SessionStart" and payload.get("source") in ("resume", "compact"):
        stage = "task_resumed"
    details: dict[str, Any] = {}
    for name in ("permission_mode", "source", "reason", "notification_type", "agent_type", "trigger"):
        if isinstance(payload.get(name), str):
            details[name] = payload[name][:100]
    if isinstance(payload.get("prompt"), str):
        details["prompt_length"] = len(payload["prompt"])  # never the prompt itself
    if payload.get("is_interrupt") is True:
        details["interrupted"] = True
    tool_input = payload.get("tool_input")
    return HookCall(client="claude-code", hook=hook, stage=stage, task_id=_text(payload.get("session_id")),
                    tool=_text(payload.get("tool_name")), tool_input=tool_input if isinstance(tool_input, dict) else {},
                    tool_use_id=_text(payload.get("tool_use_id")), cwd=_text(payload.get("cwd"), 4096),
                    duration_ms=_number(payload.get("duration_ms")), error=_text(payload.get("error"), MAX_TEXT),
                    details=details)


# ---- Cline -------------------------------------------------------------------------------

# The VS Code extension names a hook in `hookName` as its file is named; the SDK-based CLI says
# tool_call, agent_start, ... there, so the script also names its own file (`?hook=`).
_CLINE_STAGES: dict[str, Stage] = {
    "PreToolUse": "pre_tool", "tool_call": "pre_tool", "PostToolUse": "post_tool", "tool_result": "post_tool",
    "UserPromptSubmit": "prompt", "TaskStart": "task_started", "agent_start": "task_started",
    "TaskResume": "task_resumed", "TaskComplete": "task_completed", "agent_end": "task_completed",
    "TaskCancel": "task_cancelled", "agent_abort": "task_cancelled",
}


def read_cline(payload: Any, hook: str | None = None) -> HookCall:
    """Cline's hook input; `hook` is the name of the hook file that sent it, when known."""
    if not isinstance(payload, dict):
        raise UnreadableHook(f"a Cline hook input is a JSON object, not {_type(payload)}")
    name = hook or _text(payload.get("hookName"))
    if name is None:
        raise UnreadableHook("the input has no hookName and the hook script did not say which hook it is")
    stage = _CLINE_STAGES.get(name) or _CLINE_STAGES.get(_text(payload.get("hookName")) or "", "other")
    tool, tool_input, tool_use_id = None, {}, None
    call = payload.get("tool_call")
    pre, post = payload.get("preToolUse"), payload.get("postToolUse")
    if isinstance(call, dict):  # the CLI: the call as the model made it, with real types
        tool, tool_use_id = _text(call.get("name")), _text(call.get("id"))
        tool_input = call.get("input") if isinstance(call.get("input"), dict) else {}
    details: dict[str, Any] = {}
    for section in (pre, post):
        if isinstance(section, dict):
            tool = tool or _text(section.get("toolName"))
            if not tool_input and isinstance(section.get("parameters"), dict):
                tool_input = {key: _unflattened(value) for key, value in section["parameters"].items()}
    success, duration, error = None, None, None
    if isinstance(post, dict):
        success = post.get("success") if isinstance(post.get("success"), bool) else None
        duration = _number(post.get("executionTimeMs"))
        if success is False:
            error = _text(post.get("result"), MAX_TEXT)
        if stage == "post_tool" and success is False:
            stage = "tool_failed"
    prompt = payload.get("userPromptSubmit")
    if isinstance(prompt, dict) and isinstance(prompt.get("prompt"), str):
        details["prompt_length"] = len(prompt["prompt"])
    model = payload.get("model")
    if isinstance(model, dict):
        details.update({key: model[key][:200] for key in ("provider", "slug") if isinstance(model.get(key), str)})
    return HookCall(client="cline", hook=name[:64], stage=stage, task_id=_text(payload.get("taskId")), tool=tool,
                    tool_input=tool_input, tool_use_id=tool_use_id, cwd=_workspace(payload), duration_ms=duration,
                    error=error, details=details)


def _workspace(payload: dict[str, Any]) -> str | None:
    roots = payload.get("workspaceRoots")
    if isinstance(roots, list) and roots and isinstance(roots[0], str):
        return roots[0][:4096]
    info = payload.get("workspaceInfo")
    return _text(info.get("rootPath"), 4096) if isinstance(info, dict) else None


def _unflattened(value: Any) -> Any:
    """Cline's extension passes every parameter as text; a list (`commands`) arrives as its JSON."""
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return parsed if isinstance(parsed, list) else value
    return value


# ---- what a tool use does ---------------------------------------------------------------------

# Claude Code's and Cline's own tools that act on nothing the policy governs: planning, tasks,
# questions, sub-agents (whose own tool uses come through the hooks again).
_INERT = frozenset({
    "Agent", "Task", "TaskCreate", "TaskGet", "TaskList", "TaskOutput", "TaskStop", "TaskUpdate", "TodoWrite",
    "TodoRead", "ExitPlanMode", "EnterPlanMode", "AskUserQuestion", "Skill", "SlashCommand", "SendMessage",
    "ScheduleWakeup", "ReportFindings", "Workflow", "CronCreate", "CronDelete", "CronList", "ToolSearch",
    "ListMcpResourcesTool", "ReadMcpResourceTool", "EnterWorktree", "ExitWorktree", "KillShell", "BashOutput",
    "WebFetch", "WebSearch", "web_fetch", "web_search", "load_mcp_documentation", "condense", "summarize_task",
    "focus_chain", "submit_and_exit", "spawn_agent", "fetch_web_content", "browser_action",
})
_COMMANDS = ("command", "commands")
_PATHS = ("file_path", "notebook_path", "path", "absolutePath")


def acts_of(call: HookCall) -> list[Act] | None:
    """What the tool use does; [] for a tool that acts on nothing governed; None for a tool
    Corral does not know, or one whose input does not say what it acts on."""
    tool, given = call.tool or "", call.tool_input
    if tool.startswith("mcp__"):
        server, _, name = tool[len("mcp__"):].partition("__")
        if server == "corral" and "__" in name:  # Corral's own /mcp: its tools are server__tool
            server, _, name = name.partition("__")
        return [Act("tool.call", f"{server}/{name}")] if server and name else None
    if tool in ("use_mcp_tool", "access_mcp_resource"):
        server = given.get("server_name")
        name = given.get("tool_name") if tool == "use_mcp_tool" else given.get("uri")
        return [Act("tool.call", f"{server}/{name}")] if isinstance(server, str) and isinstance(name, str) else None
    if tool in ("Bash", "execute_command", "run_commands"):
        return _each(given, _COMMANDS, "command.exec", None)
    if tool in ("Write", "Edit", "MultiEdit", "NotebookEdit", "write_to_file", "replace_in_file", "apply_diff",
                "insert_content", "search_and_replace", "editor", "apply_patch", "new_rule"):
        return _each(given, _PATHS, "file.write", call.cwd)
    if tool in ("Read", "NotebookRead", "read_file"):
        return _each(given, _PATHS, "file.read", call.cwd)
    if tool == "read_files":  # Cline CLI: files: [{path, ...}]
        files = given.get("files") or given.get("paths")
        paths = [item.get("path") if isinstance(item, dict) else item for item in files or ()] \
            if isinstance(files, list) else []
        if not paths or not all(isinstance(path, str) and path for path in paths):
            return None
        return [Act("file.read", workspace_path(path, call.cwd)) for path in paths]
    if tool in ("Glob", "Grep", "LS", "list_files", "search_files", "list_code_definition_names", "search_codebase"):
        path = given.get("path")  # where it looks; the workspace when not said
        return [Act("file.read", workspace_path(path if isinstance(path, str) and path else ".", call.cwd))]
    if tool in _INERT or GROUPS.get(tool) == ALWAYS:
        return []
    return None


def _each(given: dict[str, Any], keys: tuple[str, ...], action: str, cwd: str | None) -> list[Act] | None:
    value = next((given[key] for key in keys if given.get(key)), None)
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(item, str) and item.strip() for item in values):
        return None
    if action == "command.exec":
        return [Act(action, item) for item in values]
    return [Act(action, workspace_path(item, cwd)) for item in values]


def workspace_path(path: str, cwd: str | None) -> str:
    """A path as the policy's globs read it: relative to the workspace when inside it, absolute
    (and so outside the workspace) when not."""
    path = path.replace("\\", "/")
    if cwd is None:
        return path
    root = posixpath.normpath(cwd.replace("\\", "/"))
    full = posixpath.normpath(path if posixpath.isabs(path) or path[1:3] == ":/" else posixpath.join(root, path))
    if full == root:
        return "."
    if full.startswith(root.rstrip("/") + "/"):
        return full[len(root.rstrip("/")) + 1:]
    return full


def _text(value: Any, limit: int = 200) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _type(value: Any) -> str:
    return {list: "a list", str: "a string", type(None): "null"}.get(type(value), type(value).__name__)
