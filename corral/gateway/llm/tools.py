"""Which tools a model is offered and which of its calls get through.

Before a request goes out, its `tools` are cut to the tool groups of the caller's mode (Roo
Code's groups: read, edit, command, mcp, browser, modes; the tools every mode has stay), so a
model is never offered a tool it may not use. When the answer comes back, every call the model
makes is decided like the action it stands for (`execute_command`/`Bash` is `command.exec` on its
command line, `write_to_file`/`Edit` is `file.write` on its path, `use_mcp_tool` is `tool.call`
on server/tool); a call to a tool that was not offered, or one the policy denies, is replaced by
text telling the model it was blocked and why. Confirmations and approvals are left to the client
and the MCP gateway, which can wait for a person; a model answer cannot.

Streams are rewritten event by event: a tool call's events are held until the call is complete,
then passed on as they came or replaced by the explanation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from corral.gateway.llm.dialects import Dialect, event_data

ALWAYS = "always"  # tools every mode has
GROUPS: dict[str, str] = {
    # Roo Code and Cline
    **dict.fromkeys(["read_file", "search_files", "list_files", "codebase_search", "list_code_definition_names"],
                    "read"),
    **dict.fromkeys(["apply_diff", "write_to_file", "generate_image", "edit", "search_replace", "edit_file",
                     "apply_patch", "insert_content", "replace_in_file"], "edit"),
    **dict.fromkeys(["execute_command", "read_command_output"], "command"),
    **dict.fromkeys(["use_mcp_tool", "access_mcp_resource"], "mcp"),
    "browser_action": "browser",
    **dict.fromkeys(["ask_followup_question", "attempt_completion", "switch_mode", "new_task", "update_todo_list",
                     "run_slash_command", "skill", "plan_mode_respond"], ALWAYS),
    # Cline CLI
    **dict.fromkeys(["read_files", "search_codebase"], "read"),
    "editor": "edit",
    "run_commands": "command",
    "fetch_web_content": "browser",
    "ask_question": ALWAYS,
    # Claude Code
    **dict.fromkeys(["Read", "Glob", "Grep", "LS"], "read"),
    **dict.fromkeys(["Edit", "Write", "MultiEdit", "NotebookEdit"], "edit"),
    **dict.fromkeys(["Bash", "BashOutput", "KillShell"], "command"),
    **dict.fromkeys(["WebFetch", "WebSearch", "web_search", "web_fetch"], "browser"),
}
# What each call stands for: the policy action, and where in its arguments the resource is.
ACTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    **dict.fromkeys(["execute_command", "Bash", "run_commands"], ("command.exec", ("command", "commands"))),
    **dict.fromkeys(["write_to_file", "apply_diff", "edit", "search_replace", "edit_file", "insert_content",
                     "replace_in_file", "Edit", "Write", "MultiEdit", "NotebookEdit", "editor"],
                    ("file.write", ("path", "file_path", "notebook_path"))),
    **dict.fromkeys(["read_file", "Read"], ("file.read", ("path", "file_path"))),
    "read_files": ("file.read", ("paths",)),
}


def group_of(name: str) -> str | None:
    """A tool's group; None for tools Corral does not know (the client's own), which stay."""
    if name.startswith("mcp__"):
        return "mcp"
    return GROUPS.get(name)


def offered_names(dialect: Dialect, body: dict[str, Any]) -> list[str]:
    return [_tool_name(dialect, tool) for tool in body.get("tools") or () if isinstance(tool, dict)]


def _tool_name(dialect: Dialect, tool: dict[str, Any]) -> str:
    if dialect == "openai":
        function = tool.get("function")
        return str(function.get("name")) if isinstance(function, dict) else str(tool.get("name", ""))
    return str(tool.get("name", ""))


def cut_tools(dialect: Dialect, body: dict[str, Any], groups: tuple[str, ...] | None) -> list[str]:
    """Remove from the request the tools whose group the mode lacks; return their names."""
    tools = body.get("tools")
    if groups is None or not isinstance(tools, list):
        return []
    kept, removed = [], []
    for tool in tools:
        group = group_of(_tool_name(dialect, tool)) if isinstance(tool, dict) else None
        if group is None or group == ALWAYS or group in groups:
            kept.append(tool)
        else:
            removed.append(_tool_name(dialect, tool))
    if removed:
        body["tools"] = kept
        if not kept:  # a request cannot name tools it does not offer
            body.pop("tools")
            body.pop("tool_choice", None)
            body.pop("parallel_tool_calls", None)
    return removed


@dataclass
class Blocked:
    name: str
    resource: str
    reason: str
    rules: tuple[str, ...] = ()


Decide = Callable[[str, str], tuple[str, str, tuple[str, ...]]]  # (action, resource) -> (effect, reason, rules)


@dataclass
class ToolGate:
    """Judges the model's tool calls for one request."""

    dialect: str  # openai | anthropic | responses (OpenAI's Responses API)
    offered: set[str]
    decide: Decide
    blocked: list[Blocked] = field(default_factory=list)
    _judged: dict[str, Blocked | None] = field(default_factory=dict)

    def judge(self, name: str, arguments: str | dict[str, Any], call_id: str | None = None) -> Blocked | None:
        """None when the call may go through; else why not (recorded once per call)."""
        if call_id is not None and call_id in self._judged:
            return self._judged[call_id]
        found = self._judge(name, arguments)
        if found is not None:
            self.blocked.append(found)
        if call_id is not None:
            self._judged[call_id] = found
        return found

    def _judge(self, name: str, arguments: str | dict[str, Any]) -> Blocked | None:
        if name not in self.offered:
            return Blocked(name, name, f"{name} was not offered to the model in this mode", ("mode",))
        action = ACTIONS.get(name)
        if action is None:
            return None
        parsed = _parse(arguments)
        given = next((parsed[key] for key in action[1] if parsed.get(key)), None)
        for resource in given if isinstance(given, list) else [given] if given is not None else []:
            effect, reason, rules = self.decide(action[0], str(resource))
            if effect == "deny":  # any part denied blocks the whole call
                return Blocked(name, str(resource), reason, rules)
        return None

    # ---- whole answers -------------------------------------------------------------------------

    def rewrite(self, body: bytes) -> bytes:
        try:
            answer = json.loads(body)
        except ValueError:
            return body
        if not isinstance(answer, dict):
            return body
        rewrite = {"openai": self._rewrite_openai, "anthropic": self._rewrite_anthropic,
                   "responses": self.rewrite_response}[self.dialect]
        return json.dumps(answer).encode() if rewrite(answer) else body

    def _rewrite_openai(self, answer: dict[str, Any]) -> bool:
        changed = False
        for choice in answer.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict) or not message.get("tool_calls"):
                continue
            kept, notes = [], []
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                found = self.judge(str(function.get("name")), function.get("arguments") or "")
                if found:
                    notes.append(explain(found))
                else:
                    kept.append(call)
            if notes:
                changed = True
                message["content"] = "\n".join(filter(None, [message.get("content"), *notes]))
                if kept:
                    message["tool_calls"] = kept
                else:
                    message.pop("tool_calls")
                    choice["finish_reason"] = "stop"
        return changed

    def _rewrite_anthropic(self, answer: dict[str, Any]) -> bool:
        content = answer.get("content")
        if not isinstance(content, list):
            return False
        changed = False
        for index, block in enumerate(content):
            if isinstance(block, dict) and block.get("type") == "tool_use":
                found = self.judge(str(block.get("name")), block.get("input") or {})
                if found:
                    content[index] = {"type": "text", "text": explain(found)}
                    changed = True
        if changed and not any(isinstance(b, dict) and b.get("type") == "tool_use" for b in content):
            answer["stop_reason"] = "end_turn"
        return changed

    def rewrite_response(self, answer: dict[str, Any]) -> bool:
        """A Responses API response: blocked function calls become message items."""
        output = answer.get("output")
        if not isinstance(output, list):
            return False
        changed = False
        for index, item in enumerate(output):
            if isinstance(item, dict) and item.get("type") == "function_call":
                found = self.judge(str(item.get("name")), item.get("arguments") or "", str(item.get("call_id")))
                if found:
                    output[index] = _message_item(item.get("id"), explain(found))
                    changed = True
        return changed

    # ---- streams ---------------------------------------------------------------------------------

    def stream(self) -> "StreamGate":
        return {"openai": OpenAIStreamGate, "anthropic": AnthropicStreamGate,
                "responses": ResponsesStreamGate}[self.dialect](self)


def explain(blocked: Blocked) -> str:
    return (f"[Corral blocked this call to {blocked.name} ({blocked.resource[:200]}): {blocked.reason}. "
            "Do not retry it; choose another way or ask the user.]")


def _parse(arguments: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


class StreamGate(Protocol):
    def feed(self, event: bytes) -> list[bytes]:
        """One complete server-sent event in; the events to pass on now out."""


class OpenAIStreamGate:
    """Holds the chunks of each tool call (by index) until the choice finishes."""

    def __init__(self, gate: ToolGate) -> None:
        self._gate = gate
        self._held: dict[int, list[bytes]] = {}
        self._calls: dict[int, list[str]] = {}  # index -> [name, arguments]
        self._base: dict[str, Any] = {}
        self._kept = 0

    def feed(self, event: bytes) -> list[bytes]:
        if b'"tool_calls"' not in event and b'"finish_reason"' not in event:
            return [event]
        data = event_data(event)
        choices = data.get("choices") if data else None
        if not choices or not isinstance(choices[0], dict):
            return [event]
        choice = choices[0]
        delta = choice.get("delta") or {}
        out: list[bytes] = []
        if delta.get("tool_calls") and not delta.get("content"):
            for call in delta["tool_calls"]:
                index = int(call.get("index", 0))
                function = call.get("function") or {}
                name_args = self._calls.setdefault(index, ["", ""])
                name_args[0] = function.get("name") or name_args[0]
                name_args[1] += function.get("arguments") or ""
            self._held.setdefault(int(delta["tool_calls"][0].get("index", 0)), []).append(event)
            self._base = {key: data[key] for key in ("id", "object", "created", "model") if key in data}
            return out
        if choice.get("finish_reason") and self._held:
            out += self._release()
            if choice["finish_reason"] == "tool_calls" and self._gate.blocked and not self._kept:
                choice["finish_reason"] = "stop"
                return [*out, b"data: " + json.dumps(data).encode() + b"\n\n"]
        return [*out, event]

    def _release(self) -> list[bytes]:
        out: list[bytes] = []
        self._kept = 0
        for index in sorted(self._held):
            name, arguments = self._calls.get(index, ["", ""])
            found = self._gate.judge(name, arguments)
            if found is None:
                out += self._held[index]
                self._kept += 1
            else:
                chunk = {**self._base, "choices": [{"index": 0, "delta": {"content": explain(found)},
                                                    "finish_reason": None}]}
                out.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        self._held.clear()
        return out


class AnthropicStreamGate:
    """Holds a tool_use block's events until its content_block_stop."""

    def __init__(self, gate: ToolGate) -> None:
        self._gate = gate
        self._held: list[bytes] = []
        self._block: dict[str, Any] | None = None
        self._arguments = ""
        self._kept = 0
        self._blocked = 0

    def feed(self, event: bytes) -> list[bytes]:
        if self._block is None and b"tool_use" not in event and b"message_delta" not in event:
            return [event]
        data = event_data(event)
        kind = data.get("type") if data else None
        if kind == "content_block_start" and (data.get("content_block") or {}).get("type") == "tool_use":
            self._block, self._arguments, self._held = {**data["content_block"], "index": data.get("index", 0)}, "", [event]
            return []
        if self._block is not None:
            if kind == "content_block_delta":
                self._arguments += (data.get("delta") or {}).get("partial_json") or ""
                self._held.append(event)
                return []
            if kind == "content_block_stop":
                return self._release(event)
        if kind == "message_delta" and self._blocked and not self._kept:
            delta = data.get("delta") or {}
            if delta.get("stop_reason") == "tool_use":
                delta["stop_reason"] = "end_turn"
                return [_sse("message_delta", data)]
        return [event]

    def _release(self, stop: bytes) -> list[bytes]:
        block, held = self._block, self._held
        self._block, self._held = None, []
        assert block is not None
        found = self._gate.judge(str(block.get("name")), self._arguments or "{}")
        if found is None:
            self._kept += 1
            return [*held, stop]
        self._blocked += 1
        index = block["index"]
        start = {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
        delta = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": explain(found)}}
        return [_sse("content_block_start", start), _sse("content_block_delta", delta), stop]


def _message_item(item_id: Any, text: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


class ResponsesStreamGate:
    """Holds a function call item's events from `output_item.added` to `output_item.done`; the
    closing `response.completed` (which repeats the whole output) is rewritten the same way."""

    def __init__(self, gate: ToolGate) -> None:
        self._gate = gate
        self._held: list[bytes] | None = None

    def feed(self, event: bytes) -> list[bytes]:
        if self._held is None and b"function_call" not in event and b"response.completed" not in event:
            return [event]
        data = event_data(event)
        kind = data.get("type") if data else None
        item = (data or {}).get("item") or {}
        if kind == "response.output_item.added" and item.get("type") == "function_call":
            self._held = [event]
            return []
        if kind == "response.output_item.done" and item.get("type") == "function_call":
            held, self._held = self._held or [], None
            found = self._gate.judge(str(item.get("name")), item.get("arguments") or "", str(item.get("call_id")))
            if found is None:
                return [*held, event]
            replaced = _message_item(item.get("id"), explain(found))
            index = data.get("output_index", 0)
            return [_sse("response.output_item.added", {"type": "response.output_item.added", "output_index": index,
                                                         "item": {**replaced, "status": "in_progress"}}),
                    _sse("response.output_item.done", {"type": "response.output_item.done", "output_index": index,
                                                        "item": replaced})]
        if self._held is not None:
            self._held.append(event)
            return []
        if kind == "response.completed" and isinstance(data.get("response"), dict):
            if self._gate.rewrite_response(data["response"]):
                return [_sse("response.completed", data)]
        return [event]


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
