"""What the agent is doing, from its model traffic alone: which task a request belongs to, the
mode it is in, the tool calls the model makes, the results the client sends back (command exit
codes and timeouts), the end of a task, and rollbacks. Pure bookkeeping: it returns what
happened, the gateway records it as events.

- **Task**: `x-corral-task`, Roo's `session_id` (openai-native), Claude Code's
  `X-Claude-Code-Session-Id` or the session in `metadata.user_id`; else a fingerprint of the
  conversation's opening (system prompt and first message), which every request of a task repeats.
- **Rollback**: a request of a known task that is an earlier point of a history already seen (plus
  at most one new message): a checkpoint restore or an edit-and-resend. A history rewritten from
  the middle (a context condense) is not one.
- **Mode**: `x-corral-mode`, else the `# Current Mode` slug of Roo's latest `<environment_details>`.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from corral.gateway.llm.dialects import Dialect, Observed, arguments_of

COMMAND_TOOLS = {"execute_command": "command", "Bash": "command", "bash": "command", "run_terminal_cmd": "command",
                 "run_commands": "command"}  # the last: Cline CLI's, a list of commands
COMPLETION_TOOLS = {"attempt_completion"}
_MODE = re.compile(r"# Current Mode\s*<slug>([^<\s]{1,64})</slug>")
_EXIT = re.compile(r"Exit code:? (-?\d+)")
_TIMEOUT = re.compile(r"terminated after exceeding|timed out|Command timed out", re.I)
_FAILED = re.compile(r"^\s*(Error|The tool execution failed)|<error>", re.I)
MAX_TEXT = 500  # what an event keeps of a command line


@dataclass
class Happening:
    """One thing to record: an event kind, on what, with what outcome."""

    kind: str
    resource: str | None = None
    outcome: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Task:
    chain: list[bytes]  # cumulative hashes of the longest history seen
    seen_results: set[str] = field(default_factory=set)
    requests: int = 0
    cost: float = 0.0
    last_seen: float = field(default_factory=time.monotonic)
    completed: bool = False
    owner: Any = None  # who works on it, for the events recorded when nobody is asking


@dataclass
class Conversation:
    """A request's history, the same whatever the dialect."""

    opening: bytes
    messages: list[Any]
    tool_uses: dict[str, tuple[str, dict[str, Any]]]  # id -> (name, arguments)
    results: list[tuple[int, str, str, bool]]  # (message index, tool id, text, marked as error)


def task_of(headers: dict[str, str], body: dict[str, Any], conversation: Conversation) -> str:
    for name in ("x-corral-task", "session_id", "x-claude-code-session-id"):
        if headers.get(name):
            return headers[name][:200]
    user = (body.get("metadata") or {}).get("user_id") if isinstance(body.get("metadata"), dict) else None
    if isinstance(user, str) and '"session_id"' in user:
        try:
            session = json.loads(user).get("session_id")
        except (ValueError, AttributeError):
            session = None
        if isinstance(session, str) and session:
            return session[:200]
    return "fp-" + sha256(conversation.opening).hexdigest()[:24]


def mode_of(headers: dict[str, str], conversation: Conversation) -> str | None:
    if headers.get("x-corral-mode"):
        return headers["x-corral-mode"][:64]
    for message in reversed(conversation.messages):
        found = _MODE.search(_text_of(message))
        if found:
            return found.group(1)
    return None


def conversation_of(dialect: Dialect, body: dict[str, Any]) -> Conversation:
    if "messages" not in body and "input" in body:
        return _responses_conversation(body)
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    tool_uses: dict[str, tuple[str, dict[str, Any]]] = {}
    results: list[tuple[int, str, str, bool]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        for call in message.get("tool_calls") or ():  # OpenAI assistant message
            if isinstance(call, dict):
                function = call.get("function") if isinstance(call.get("function"), dict) else {}
                tool_uses[str(call.get("id"))] = (str(function.get("name")), arguments_of(function.get("arguments")))
        if message.get("role") == "tool":
            results.append((index, str(message.get("tool_call_id")), _text_of(message), False))
        content = message.get("content")
        for block in content if isinstance(content, list) else ():  # Anthropic blocks
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                tool_uses[str(block.get("id"))] = (str(block.get("name")), arguments_of(block.get("input")))
            elif block.get("type") == "tool_result":
                results.append((index, str(block.get("tool_use_id")), _text_of(block), bool(block.get("is_error"))))
    system = body.get("system") if dialect == "anthropic" else None
    opening = json.dumps([system, messages[:2] if dialect == "openai" else messages[:1]], sort_keys=True,
                         default=str).encode()
    return Conversation(opening, messages, tool_uses, results)


def _responses_conversation(body: dict[str, Any]) -> Conversation:
    """OpenAI's Responses API: `input` is a string or a list of items (messages, function calls
    and their outputs)."""
    given = body["input"]
    items = given if isinstance(given, list) else [{"role": "user", "content": str(given)}]
    tool_uses: dict[str, tuple[str, dict[str, Any]]] = {}
    results: list[tuple[int, str, str, bool]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call":
            tool_uses[str(item.get("call_id"))] = (str(item.get("name")), arguments_of(item.get("arguments")))
        elif item.get("type") == "function_call_output":
            results.append((index, str(item.get("call_id")), str(item.get("output", "")), False))
    opening = json.dumps([body.get("instructions"), items[:1]], sort_keys=True, default=str).encode()
    return Conversation(opening, items, tool_uses, results)


def _text_of(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return ""


def _chain(messages: list[Any]) -> list[bytes]:
    chain, previous = [], b""
    for message in messages:
        previous = sha256(previous + json.dumps(message, sort_keys=True, default=str).encode()).digest()
        chain.append(previous)
    return chain


class TaskTracker:
    """Tasks seen by this process, forgotten when idle past `idle_s` (reported as abandoned)."""

    def __init__(self, idle_s: float = 1800.0, max_tasks: int = 10_000) -> None:
        self._tasks: dict[str, _Task] = {}
        self._idle_s = idle_s
        self._max_tasks = max_tasks

    def before(self, task_id: str, conversation: Conversation, owner: Any = None) -> list[Happening]:
        """A request of `task_id` is about to go out: its start, a rollback, the tool results
        it carries back."""
        happened: list[Happening] = []
        chain = _chain(conversation.messages)
        task = self._tasks.get(task_id)
        if task is None:
            if len(self._tasks) >= self._max_tasks:
                self._tasks.pop(next(iter(self._tasks)))  # the longest idle one
            task = self._tasks[task_id] = _Task(chain=[], owner=owner)
            answers = [i for i, m in enumerate(conversation.messages)
                       if isinstance(m, dict) and (m.get("role") == "assistant" or m.get("type") == "function_call")]
            happened.append(Happening("task.started", attributes={"resumed": bool(answers)}))
            known = answers[-1] + 1 if answers else 0  # first seen mid-task (a restart): only what follows is new
        else:
            self._tasks[task_id] = self._tasks.pop(task_id)  # most recently seen last
            known = _common_prefix(task.chain, chain)
            if known < len(task.chain) and known >= min(2, len(chain)) and len(chain) - known <= 1:
                happened.append(Happening("task.rolled_back", attributes={
                    "from_messages": len(task.chain), "to_messages": known}))
                task.completed = False
        for index, tool_id, text, marked in conversation.results:
            if index < known or tool_id in task.seen_results:
                continue
            task.seen_results.add(tool_id)
            name, arguments = conversation.tool_uses.get(tool_id, ("unknown", {}))
            happened += _results(name, arguments, text, marked)
        task.chain = chain
        task.requests += 1
        task.last_seen = time.monotonic()
        return happened

    def after(self, task_id: str, client: str, seen: Observed, cost: float | None) -> list[Happening]:
        """The model answered: the tool calls it made, and whether the task is done."""
        task = self._tasks.get(task_id)
        happened: list[Happening] = []
        for call in seen.tool_calls:
            name = str(call.get("name"))
            arguments = arguments_of(call.get("arguments"))
            happened.append(Happening("tool.call", _resource(name, arguments), "requested",
                                      {"tool": name, "tool_call_id": call.get("id"),
                                       "group": COMMAND_TOOLS.get(name)}))
        finished = any(str(call.get("name")) in COMPLETION_TOOLS for call in seen.tool_calls) or (
            client not in ("roo-code", "cline") and not seen.tool_calls and seen.stop_reason in ("end_turn", "stop"))
        if task is not None:
            task.cost += cost or 0.0
            if finished and not task.completed:
                task.completed = True
                happened.append(Happening("task.completed", outcome="ok",
                                          attributes={"requests": task.requests, "cost_usd": round(task.cost, 6)}))
        return happened

    def usage(self, task_id: str) -> tuple[int, float]:
        task = self._tasks.get(task_id)
        return (task.requests, task.cost) if task else (0, 0.0)

    def sweep(self) -> list[tuple[str, Any, Happening]]:
        """Tasks idle past the limit: abandoned unless they completed; forgotten either way."""
        cutoff = time.monotonic() - self._idle_s
        gone = [(task_id, task) for task_id, task in self._tasks.items() if task.last_seen < cutoff]
        for task_id, _ in gone:
            del self._tasks[task_id]
        return [(task_id, task.owner, Happening("task.abandoned", outcome="abandoned",
                                                attributes={"requests": task.requests, "cost_usd": round(task.cost, 6)}))
                for task_id, task in gone if not task.completed]


def _common_prefix(old: list[bytes], new: list[bytes]) -> int:
    """How many leading messages two histories share (the chains are cumulative: one search)."""
    low, high = 0, min(len(old), len(new))
    while low < high:
        middle = (low + high + 1) // 2
        if old[middle - 1] == new[middle - 1]:
            low = middle
        else:
            high = middle - 1
    return low


def commands_in(arguments: dict[str, Any]) -> list[str]:
    """The command lines a command tool's call runs (`command`, or Cline CLI's `commands`)."""
    if isinstance(arguments.get("commands"), list):
        return [str(command) for command in arguments["commands"]]
    return [str(arguments.get("command", ""))]


def _resource(name: str, arguments: dict[str, Any]) -> str:
    if COMMAND_TOOLS.get(name) == "command":
        return "; ".join(commands_in(arguments))[:MAX_TEXT]
    path = arguments.get("path") or arguments.get("file_path")
    return f"{name} {path}"[:MAX_TEXT] if path else name


def _results(name: str, arguments: dict[str, Any], text: str, marked: bool) -> list[Happening]:
    """What a tool result says happened. Cline CLI's `run_commands` answers a JSON list with one
    `{query, result, success}` per command."""
    if name == "run_commands":
        try:
            items = json.loads(text)
        except ValueError:
            items = None
        if isinstance(items, list) and all(isinstance(item, dict) for item in items):
            return [Happening("command.exec", str(item.get("query", ""))[:MAX_TEXT],
                              "ok" if item.get("success") is True else "error", {"tool": name}) for item in items]
    return [_result(name, arguments, text, marked)]


def _result(name: str, arguments: dict[str, Any], text: str, marked: bool) -> Happening:
    if COMMAND_TOOLS.get(name) == "command":
        exit_code = _EXIT.search(text)
        attributes: dict[str, Any] = {"tool": name}
        if _TIMEOUT.search(text):
            outcome = "timeout"
        elif exit_code is not None:
            attributes["exit_code"] = int(exit_code.group(1))
            outcome = "ok" if attributes["exit_code"] == 0 and not marked else "error"
        else:
            outcome = "error" if marked or _FAILED.search(text) else "ok"
        return Happening("command.exec", _resource(name, arguments), outcome, attributes)
    outcome = "error" if marked or _FAILED.search(text) else "ok"
    return Happening("tool.result", _resource(name, arguments), outcome, {"tool": name})
