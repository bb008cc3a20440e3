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
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from corral.gateway.llm.dialects import Dialect, arguments_of, event_data

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
    "read_files": ("file.read", ("files", "paths")),
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
        if call_id and call_id in self._judged:
            return self._judged[call_id]
        found = self._judge(name, arguments)
        if found is not None:
            self.blocked.append(found)
        if call_id:
            self._judged[call_id] = found
        return found

    def _judge(self, name: str, arguments: str | dict[str, Any]) -> Blocked | None:
        if name not in self.offered:
            return Blocked(name, name, f"{name} was not offered to the model in this mode", ("mode",))
        action = ACTIONS.get(name)
        if action is None:
            return None
        parsed = arguments_of(arguments)
        given = next((parsed[key] for key in action[1] if parsed.get(key)), None)
        resources = [_path_of(item) for item in given] if isinstance(given, list) else [given]
        if not resources or any(not isinstance(item, str) or not item for item in resources):
            return Blocked(name, name, "Corral could not read what this call would act on, so it cannot allow it",
                           ("unreadable",))
        for resource in resources:
            effect, reason, rules = self.decide(action[0], resource)
            if effect == "deny":  # any part denied blocks the whole call
                return Blocked(name, resource, reason, rules)
        return None

    # ---- whole answers -------------------------------------------------------------------------

    def rewrite(self, answer: Any) -> bool:
        """Judge the calls in a whole answer (parsed JSON), replacing the blocked ones in place;
        True when it changed."""
        if not isinstance(answer, dict):
            return False
        rewrite = {"openai": self._rewrite_openai, "anthropic": self._rewrite_anthropic,
                   "responses": self.rewrite_response}[self.dialect]
        return rewrite(answer)

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
                said = message.get("content")
                message["content"] = "\n".join([said, *notes] if isinstance(said, str) and said else notes)
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


def _path_of(item: Any) -> Any:
    """An element of a list of resources: a command or path, or `{path: ...}` (Cline's files)."""
    return item.get("path") if isinstance(item, dict) else item


class StreamGate(Protocol):
    def feed(self, event: bytes) -> list[bytes]:
        """One complete server-sent event in; the events to pass on now out."""

    def flush(self) -> list[bytes]:
        """The stream ended: what is still held, judged."""


def _openai_chunk(base: dict[str, Any], choice: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
    data = {**base, "choices": [{"index": choice, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


_OPENAI_MATTERS = re.compile(rb'"tool_calls"|"finish_reason": ?"|\[DONE\]')
_RESPONSES_MATTERS = re.compile(rb'function_call|response\.(?:completed|incomplete|failed)')


class OpenAIStreamGate:
    """Takes every tool-call fragment out of the chunks as they pass (whatever else a chunk
    carries goes on), assembles each call by (choice, index), and when its choice finishes (or
    the stream ends) sends each call whole, or the text that replaces it."""

    def __init__(self, gate: ToolGate) -> None:
        self._gate = gate
        self._calls: dict[tuple[int, int], dict[str, str]] = {}  # (choice, index) -> id, name, arguments
        self._base: dict[str, Any] = {}

    def feed(self, event: bytes) -> list[bytes]:
        if not _OPENAI_MATTERS.search(event):  # text deltas pass unparsed
            return [event]
        data = event_data(event)
        if data is None:  # [DONE], or something that is not ours to read: anything held goes first
            return [*self.flush(), event]
        choices = data.get("choices")
        if not isinstance(choices, list):
            return [event]
        self._base = {key: data[key] for key in ("id", "object", "created", "model") if key in data}
        out: list[bytes] = []
        kept_choices = []
        changed = False
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            number = choice.get("index") if isinstance(choice.get("index"), int) else 0
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            fragments = delta.pop("tool_calls", None)
            if fragments is not None:
                changed = True
                for position, fragment in enumerate(fragments if isinstance(fragments, list) else []):
                    self._take(number, position, fragment)
            finish = choice.get("finish_reason")
            if finish:
                released, kept = self._release(number)
                out += released
                if finish == "tool_calls" and not kept and released:
                    choice["finish_reason"] = "stop"
                    changed = True
            if delta or choice.get("finish_reason") or fragments is None:
                kept_choices.append(choice)
        if not changed:
            return [*out, event]
        if kept_choices or data.get("usage"):
            data["choices"] = kept_choices
            out.append(b"data: " + json.dumps(data).encode() + b"\n\n")
        return out

    def _take(self, choice: int, position: int, fragment: Any) -> None:
        if not isinstance(fragment, dict):
            return
        index = fragment.get("index") if isinstance(fragment.get("index"), int) else position
        function = fragment.get("function") if isinstance(fragment.get("function"), dict) else {}
        call = self._calls.setdefault((choice, index), {"id": "", "name": "", "arguments": ""})
        call["id"] = fragment.get("id") or call["id"]
        call["name"] = function.get("name") or call["name"]
        call["arguments"] += function.get("arguments") if isinstance(function.get("arguments"), str) else ""

    def _release(self, choice: int) -> tuple[list[bytes], int]:
        out: list[bytes] = []
        kept = 0
        for key in sorted(key for key in self._calls if key[0] == choice):
            call = self._calls.pop(key)
            found = self._gate.judge(call["name"], call["arguments"])
            if found is None:
                kept += 1
                out.append(_openai_chunk(self._base, choice, {"tool_calls": [{
                    "index": key[1], "id": call["id"], "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]}}]}))
            else:
                out.append(_openai_chunk(self._base, choice, {"content": explain(found)}))
        return out, kept

    def flush(self) -> list[bytes]:
        out: list[bytes] = []
        for choice in sorted({key[0] for key in self._calls}):
            out += self._release(choice)[0]
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
            block = data["content_block"]
            given = block.get("input")
            self._block, self._held = {**block, "index": data.get("index", 0)}, [event]
            self._arguments = json.dumps(given) if isinstance(given, dict) and given else ""
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

    def flush(self) -> list[bytes]:
        """A tool_use block the stream never closed is judged on what arrived."""
        if self._block is None:
            return []
        return self._release(b"")

    def _release(self, stop: bytes) -> list[bytes]:
        block, held = self._block, self._held
        self._block, self._held = None, []
        assert block is not None
        found = self._gate.judge(str(block.get("name")), self._arguments or "{}")
        if found is None:
            self._kept += 1
            return [*held, stop] if stop else held
        self._blocked += 1
        index = block["index"]
        start = {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
        delta = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": explain(found)}}
        return [_sse("content_block_start", start), _sse("content_block_delta", delta), *([stop] if stop else [])]


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
        if self._held is None and not _RESPONSES_MATTERS.search(event):
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
        if kind in ("response.completed", "response.incomplete", "response.failed") \
                and isinstance(data.get("response"), dict):
            if self._gate.rewrite_response(data["response"]):
                return [_sse(kind, data)]
        return [event]

    def flush(self) -> list[bytes]:
        """A function call item the stream never finished: judged on its events so far."""
        held, self._held = self._held or [], None
        if not held:
            return []
        item = (event_data(held[0]) or {}).get("item") or {}
        arguments = "".join(str((event_data(e) or {}).get("delta", "")) for e in held[1:])
        found = self._gate.judge(str(item.get("name")), arguments)
        return held if found is None else [_sse("response.output_item.done", {
            "type": "response.output_item.done", "item": _message_item(item.get("id"), explain(found))})]


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
