"""What a Roo Code or Cline task did, read from its messages: `ui_messages.json` (with
`history_item.json` and `api_conversation_history.json` when they are at hand) becomes the events
of docs/events.md, each with a key that stays the same in every later snapshot of the task. Pure:
parsed JSON in, events out; finding and reading the files is `corral.ingest.taskfolders`.

It never emits an event whose facts may still change (a stored key is never updated), and never
puts a prompt, a file's content or a command's output into one."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from corral.ingest.schema import EPOCH_MS_FROM
from corral.policy.schema import SECRET_VALUE

CLIENTS = {"roo": "roo-code", "cline": "cline"}
SOURCES = {"roo": "roo-code-import", "cline": "cline-import"}
COMMAND_CHARS = 500  # a command line is kept to its first 500 characters (docs/events.md)
REASON_CHARS = 200  # error messages quoted as a reason
KEY_CHARS = 200  # the ingest schema's limit on keys and task ids
LATEST_MS = 253_402_300_799_999  # 9999-12-31: later is not a time

# Message kinds that carry nothing to count: read, and left out on purpose.
QUIET_SAY = frozenset({
    "text", "reasoning", "image", "api_req_finished", "api_req_rate_limit_wait", "command_output", "error",
    "shell_integration_warning", "mcp_server_request_started", "subtask_result", "rooignore_error",
    "clineignore_error", "diff_error", "condense_context_error", "sliding_window_truncation",
    "codebase_search_result", "user_edit_todos", "too_many_tools_warning", "task_progress",
    "load_mcp_documentation", "browser_action", "browser_action_launch", "browser_action_result", "info",
    "mcp_notification", "hook", "hook_output", "generate_explanation"})
QUIET_ASK = frozenset({
    "followup", "command_output", "completion_result", "resume_task", "resume_completed_task",
    "auto_approval_max_req_reached", "plan_mode_respond", "act_mode_respond", "browser_action_launch", "new_task",
    "condense", "summarize_task", "report_bug"})
EVENTFUL_SAY = frozenset({
    "api_req_started", "api_req_retried", "api_req_retry_delayed", "error_retry", "api_req_deleted",
    "deleted_api_reqs", "completion_result", "user_feedback", "user_feedback_diff", "command",
    "mcp_server_response", "checkpoint_saved", "checkpoint_created", "condense_context", "tool"})
EVENTFUL_ASK = frozenset({"command", "tool", "use_mcp_server", "api_req_failed", "mistake_limit_reached"})
RESUMES = frozenset({"ask:resume_task", "ask:resume_completed_task"})
# After a completion, a failure or a cancel, these show the task being worked on again.
REOPENERS = frozenset({"say:user_feedback", "say:user_feedback_diff", "say:api_req_started", "say:api_req_retried",
                       "say:api_req_retry_delayed", "say:error_retry"})
FAILURES = frozenset({"ask:api_req_failed", "ask:mistake_limit_reached"})
TOOL_ERRORS = frozenset({"say:error", "say:diff_error", "say:rooignore_error", "say:clineignore_error"})
# Tool messages that are not tool calls of their own: delegation, mode switches, a subtask's end.
CONTROL_TOOLS = frozenset({"newTask", "switchMode", "finishTask"})
REQUEST_FACTS = ("tokensIn", "tokensOut", "cost", "cancelReason", "streamingFailedMessage")
CLINE_MODES = {"PLAN MODE": "plan", "ACT MODE": "act"}

# `.{0,4000}?`: a command line may hold brackets and newlines; the bound keeps a long text linear.
_RESULT = re.compile(r"(?:^|\n)\[(?P<tool>[a-z_]+)(?P<rest>.{0,4000}?)\] Result:", re.S)
_FOR = re.compile(r"^ for '(?P<arg>.*)'$", re.S)
_EXIT = re.compile(r"Exit code: (-?\d+)")
_TIMEOUT = re.compile(r"terminated after exceeding|time(?:d)?[ _-]?out", re.I)
_ROO_MODE = re.compile(r"# Current Mode\s*\n\s*<slug>([^<\n]{1,64})</slug>(?:\s*<name>[^<\n]*</name>)?"
                       r"(?:\s*<model>([^<\n]{1,200})</model>)?")
_CLINE_MODE = re.compile(r"# Current Mode\s*\n\s*(PLAN MODE|ACT MODE)")
_TASK_ID = re.compile(r"^\d{10,}(?:_[A-Za-z0-9]+)?$|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


class NotMessages(ValueError):
    """The file's JSON is not a list of messages; the reason is said in words."""


# ---- messages -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One readable entry of ui_messages.json."""

    position: int  # index in the file's list
    ts: int | float  # as written: keys are built from it, so they match in every snapshot
    ms: int  # epoch milliseconds
    seq: int  # how many earlier entries have the same ts (one key each)
    type: str
    name: str  # the `say` or `ask` value
    text: str
    partial: bool
    entry: dict[str, Any]

    @property
    def tag(self) -> str:
        return f"{self.type}:{self.name}"

    @cached_property
    def payload(self) -> dict[str, Any] | None:
        """The text read as a JSON object, or None."""
        return json_object(self.text)


@dataclass
class Reading:
    """The readable messages of one file, and what was left out of it and why."""

    messages: list[Message]
    entries: int
    skipped: Counter[str] = field(default_factory=Counter)
    seconds: bool = False  # some ts values were epoch seconds


def json_object(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str) or not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_messages(raw: Any) -> Reading:
    """The messages of a parsed ui_messages.json. A bad entry is skipped (its reason counted);
    a file that is not a list of entries raises NotMessages."""
    if not isinstance(raw, list):
        kind = {dict: "an object", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
            type(raw), "null" if raw is None else type(raw).__name__)
        raise NotMessages(f"holds {kind}, not a list of messages")
    reading = Reading([], len(raw))
    seen: Counter[int | float] = Counter()
    for position, entry in enumerate(raw):
        problem, ms = _entry_problem(entry)
        if problem:
            reading.skipped[problem] += 1
            continue
        ts = entry["ts"]
        reading.seconds = reading.seconds or ts < EPOCH_MS_FROM
        kind = entry["type"]
        name = entry.get(kind) if kind in ("say", "ask") else entry.get("say") or entry.get("ask") or ""
        text = entry.get("text") if isinstance(entry.get("text"), str) else ""
        reading.messages.append(Message(position, ts, ms, seen[ts], kind, str(name), text, entry.get("partial") is True,
                                        entry))
        seen[ts] += 1
    return reading


def _entry_problem(entry: Any) -> tuple[str | None, int]:
    """Why an entry cannot be read (None if it can), and its time in epoch milliseconds."""
    if not isinstance(entry, dict):
        return "an entry is not a JSON object", 0
    ts = entry.get("ts")
    if ts is None:
        return "an entry has no ts", 0
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts <= 0:
        return "an entry's ts is not a positive number", 0
    ms = int(ts * 1000 if ts < EPOCH_MS_FROM else ts)  # epoch seconds, as docs/events.md reads them
    if ms > LATEST_MS:
        return "an entry's ts is beyond the year 9999", 0
    kind = entry.get("type")
    if not isinstance(kind, str) or not kind:
        return "an entry has no type", 0
    if kind in ("say", "ask") and (not isinstance(entry.get(kind), str) or not entry[kind]):
        return f"a {kind} entry has no {kind} value", 0
    return None, ms


# ---- what the files say beside the messages ------------------------------------------------


@dataclass(frozen=True)
class TaskInfo:
    """Who and what the task is: its id, its client, and the side files' contents (None when absent)."""

    task_id: str
    client: str  # "roo" or "cline"
    history_item: dict[str, Any] | None = None
    conversation: list[Any] | None = None


def looks_like_task_id(name: str) -> bool:
    """A Roo task id (a UUID, also inside `<mode>-<uuid>`) or a Cline one (epoch milliseconds)."""
    return bool(_TASK_ID.search(name))


def task_id_for(folder_name: str | None, history_item: dict[str, Any] | None, reading: Reading) -> str | None:
    """The history item's id, else a task-like folder name, else the first message's ts (so two
    snapshots of one task, wherever they lie, name the same task)."""
    if history_item and isinstance(history_item.get("id"), str) and history_item["id"].strip():
        return history_item["id"].strip()[:KEY_CHARS]
    if folder_name and looks_like_task_id(folder_name):
        return folder_name[:KEY_CHARS]
    return str(reading.messages[0].ts) if reading.messages else None


@dataclass(frozen=True)
class Result:
    """A tool's result as the next model request carried it."""

    tool: str  # execute_command, use_mcp_tool, write_to_file, ...
    command: str | None
    text: str


@dataclass
class Request:
    """One model request (`say: api_req_started`) and what it tells."""

    position: int
    facts: dict[str, Any]
    final: bool = False
    mode: str | None = None
    model: str | None = None
    provider: str | None = None
    results: list[Result] = field(default_factory=list)
    claimed: set[int] = field(default_factory=set)

    def claim(self, family: str, command: str | None = None) -> Result | None:
        """The first unclaimed result of a family (commands also by their line)."""
        for index, result in enumerate(self.results):
            if index in self.claimed or _family(result.tool) != family:
                continue
            if family == "command" and command is not None and result.command is not None \
                    and result.command.strip() != command.strip():
                continue
            self.claimed.add(index)
            return result
        return None


def _family(tool: str) -> str:
    if tool == "execute_command":
        return "command"
    if tool in ("use_mcp_tool", "access_mcp_resource"):
        return "mcp"
    return "tool"


def results_in(text: str) -> list[Result]:
    """The `[tool for 'arg'] Result:` sections of a request's text, up to its environment details."""
    text = text.split("<environment_details>", 1)[0]
    found = list(_RESULT.finditer(text))
    results = []
    for index, match in enumerate(found):
        end = found[index + 1].start() if index + 1 < len(found) else len(text)
        argument = _FOR.match(match.group("rest"))
        command = argument.group("arg") if argument and match.group("tool") == "execute_command" else None
        results.append(Result(match.group("tool"), command, text[match.end():end].strip()))
    return results


def environment(text: str, client: str) -> tuple[str | None, str | None]:
    """(mode, model) from the last `<environment_details>` block of a text (earlier ones may be
    quoted inside a tool's output)."""
    start = text.rfind("<environment_details>")
    if start < 0:
        return None, None
    block = text[start:]
    if client == "cline":
        found = _CLINE_MODE.search(block)
        return (CLINE_MODES[found.group(1)], None) if found else (None, None)
    found = _ROO_MODE.search(block)
    if not found:
        return None, None
    return found.group(1).strip(), (found.group(2) or "").strip() or None


@dataclass(frozen=True)
class Turn:
    """A user turn of api_conversation_history.json: its time, its texts and its tool results."""

    ms: int
    text: str
    results: list[Result]


def conversation_turns(conversation: list[Any] | None) -> list[Turn]:
    """The user turns that have a time, with tool results named after their tool_use."""
    if not conversation:
        return []
    uses: dict[str, tuple[str, dict[str, Any]]] = {}
    turns = []
    for item in conversation:
        if not isinstance(item, dict) or not isinstance(item.get("content"), (list, str)):
            continue
        blocks = item["content"] if isinstance(item["content"], list) else [{"type": "text", "text": item["content"]}]
        blocks = [block for block in blocks if isinstance(block, dict)]
        if item.get("role") == "assistant":
            for block in blocks:
                if block.get("type") == "tool_use" and isinstance(block.get("id"), str):
                    arguments = block.get("input") if isinstance(block.get("input"), dict) else {}
                    uses[block["id"]] = (str(block.get("name") or ""), arguments)
            continue
        ts = item.get("ts")
        if item.get("role") != "user" or isinstance(ts, bool) or not isinstance(ts, (int, float)) or ts <= 0:
            continue
        texts, results = [], []
        for block in blocks:
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif block.get("type") == "tool_result":
                name, arguments = uses.get(str(block.get("tool_use_id")), ("", {}))
                command = arguments.get("command") if isinstance(arguments.get("command"), str) else None
                results.append(Result(name or "tool", command if name == "execute_command" else None,
                                      _result_text(block.get("content"))))
        text = "\n\n".join(texts)
        ms = int(ts * 1000 if ts < EPOCH_MS_FROM else ts)
        turns.append(Turn(ms, text, results + results_in(text)))
    return turns


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


# ---- the derivation -----------------------------------------------------------------------


@dataclass
class Derivation:
    """A task's events (final ones only) and what was left for later or out, and why."""

    task_id: str
    client: str
    events: list[dict[str, Any]] = field(default_factory=list)
    waiting: Counter[str] = field(default_factory=Counter)  # events not final yet, by reason
    skipped: Counter[str] = field(default_factory=Counter)  # entries left out, by reason
    unknown: Counter[str] = field(default_factory=Counter)  # kinds kept as agent.message


@dataclass
class Timeline:
    """The messages with what later ones tell about each: `answered` when a later request has
    ended (the model was told what happened here: a command's exit code, a tool's result),
    `settled` when also a restart of the client ended whatever was in flight."""

    messages: list[Message]
    requests: dict[int, Request]
    answered: dict[int, bool]
    settled: dict[int, bool]
    index: dict[int, int] = field(default_factory=dict)  # position -> place in `messages`

    def __post_init__(self) -> None:
        self.index = {message.position: place for place, message in enumerate(self.messages)}

    # Walking from a message rather than slicing keeps a task of thousands of messages linear:
    # the walks stop at the next or previous request.
    def after(self, message: Message) -> Iterator[Message]:
        for place in range(self.index[message.position] + 1, len(self.messages)):
            yield self.messages[place]

    def before(self, message: Message) -> Iterator[Message]:
        """The messages before this one, nearest first."""
        for place in range(self.index[message.position] - 1, -1, -1):
            yield self.messages[place]

    def next_request(self, message: Message) -> Request | None:
        return next((self.requests[later.position] for later in self.after(message) if later.position in self.requests),
                    None)

    def previous_request(self, message: Message) -> Request | None:
        return next((self.requests[earlier.position] for earlier in self.before(message)
                     if earlier.position in self.requests), None)

    def until_next_request(self, message: Message) -> list[Message]:
        """The messages after this one, up to the next model request."""
        following = []
        for later in self.after(message):
            if later.position in self.requests:
                break
            following.append(later)
        return following


def derive(reading: Reading, info: TaskInfo) -> Derivation:
    """Every final event of the task, in the order of the messages."""
    done = Derivation(info.task_id, CLIENTS[info.client], skipped=Counter(reading.skipped))
    if not reading.messages:
        return done
    timeline = _timeline(reading.messages, _requests(reading.messages, info))
    for message in timeline.messages:
        _events_of(message, timeline, info, done)
    _task_start(timeline, info, done)
    _modes(done, timeline, info)
    done.events.sort(key=lambda event: (event["time"], event["_position"]))
    for event in done.events:
        del event["_position"]
    return done


def _requests(messages: list[Message], info: TaskInfo) -> dict[int, Request]:
    """Every model request by position, with its finality, mode, model and the results it carried."""
    turns = conversation_turns(info.conversation)
    requests: dict[int, Request] = {}
    for message in messages:
        if message.tag == "say:api_req_started":
            requests[message.position] = Request(message.position, message.payload or {})
    # A request is final once it has its facts, or once a later request or a restart shows it ended.
    later = False
    for message in reversed(messages):
        if message.tag == "say:api_req_started":
            request = requests[message.position]
            request.final = later or any(name in request.facts for name in REQUEST_FACTS)
            later = True
        elif message.tag in RESUMES:
            later = True
    starts = [message for message in messages if message.position in requests]
    previous: Request | None = None
    for index, message in enumerate(starts):
        request, ms = requests[message.position], message.ms
        until = starts[index + 1].ms if index + 1 < len(starts) else LATEST_MS + 1
        text = request.facts.get("request")
        if isinstance(text, str):
            request.mode, request.model = environment(text, info.client)
            request.results = results_in(text)
        else:  # Roo Code 3.5x: the request's text is in the conversation, saved just after it started
            window = [turn for turn in turns if ms <= turn.ms < until]
            for turn in window:
                request.results.extend(turn.results)
            for turn in reversed(window):
                mode, model = environment(turn.text, info.client)
                if mode:
                    request.mode, request.model = mode, model
                    break
        model_info = message.entry.get("modelInfo")
        if isinstance(model_info, dict):  # Cline 3.2x+ tags requests with the model and mode
            request.mode = _short(model_info.get("mode"), 64) or request.mode
            request.model = _short(model_info.get("modelId"), 200) or request.model
            request.provider = _short(model_info.get("providerId"), 100)
        protocol = request.facts.get("apiProtocol") or message.entry.get("apiProtocol")
        request.provider = request.provider or _short(protocol, 100)
        if previous is not None and request.model is None and request.mode in (None, previous.mode):
            request.model = previous.model  # not written again, and no mode switch that could change it
        previous = request
    return requests


def _timeline(messages: list[Message], requests: dict[int, Request]) -> Timeline:
    answered: dict[int, bool] = {}
    settled: dict[int, bool] = {}
    seen_answer = seen_restart = False
    for message in reversed(messages):
        answered[message.position] = seen_answer
        settled[message.position] = seen_answer or seen_restart
        if message.position in requests and requests[message.position].final:
            seen_answer = True
        elif message.tag in RESUMES:
            seen_restart = True
    return Timeline(messages, requests, answered, settled)


def _short(value: Any, limit: int) -> str | None:
    return value.strip()[:limit] or None if isinstance(value, str) else None


def _clean(text: str, limit: int) -> str:
    """Free text as stored: credentials blanked, cut to `limit` characters."""
    return SECRET_VALUE.sub("[redacted]", text)[:limit]


def _first_line(text: str) -> str:
    """The first telling line of an error text (a bare "Error:" heading tells nothing)."""
    for line in text.splitlines():
        if line.strip() and line.strip().lower() not in ("error:", "error"):
            return _clean(line.strip(), REASON_CHARS)
    return ""


def event_key(client: str, task_id: str, message: Message, kind: str) -> str:
    """The event's idempotency key: the same message gives the same key in every snapshot."""
    key = f"{client}:{task_id}:{message.ts}:{message.seq}:{kind}"
    if len(key) > KEY_CHARS:  # an odd, long task id: its digest keeps the key unique and short
        digest = hashlib.sha256(task_id.encode()).hexdigest()[:32]
        key = f"{client}:{digest}:{message.ts}:{message.seq}:{kind}"
    return key


def _emit(done: Derivation, message: Message, kind: str, **fields: Any) -> None:
    event = {"kind": kind, "time": message.ms, "key": event_key(done.client, done.task_id, message, kind),
             "client": done.client, "task_id": done.task_id, "_position": message.position}
    attributes = {name: value for name, value in (fields.pop("attributes", None) or {}).items() if value is not None}
    event.update({name: value for name, value in fields.items() if value is not None})
    if attributes:
        event["attributes"] = attributes
    done.events.append(event)


def _known(message: Message) -> bool:
    if message.type == "say":
        return message.name in QUIET_SAY or message.name in EVENTFUL_SAY
    return message.type == "ask" and (message.name in QUIET_ASK or message.name in EVENTFUL_ASK)


def _events_of(message: Message, timeline: Timeline, info: TaskInfo, done: Derivation) -> None:
    """The events one message gives, when they are final; otherwise why they wait."""
    tag = message.tag
    if not _known(message):
        if message.partial:
            done.waiting["a message still being written"] += 1
            return
        done.unknown[tag] += 1
        label = message.type if message.type in ("say", "ask") else "name"
        _emit(done, message, "agent.message", attributes={"type": message.type[:50], label: message.name[:100]})
        return
    if message.partial and tag != "say:api_req_started":
        if tag in EVENTFUL_SAY_TAGS or tag in EVENTFUL_ASK_TAGS:
            done.waiting["a message still being written"] += 1
        return
    if message.position == timeline.messages[0].position and tag == "say:text":
        _emit(done, message, "user.prompt", attributes={"chars": len(message.text), "first": True})
    if tag == "say:api_req_started":
        _request_events(message, timeline.requests[message.position], done)
    elif tag in ("say:user_feedback", "say:user_feedback_diff"):
        _emit(done, message, "user.prompt", attributes={"chars": len(message.text)})
    elif tag in ("ask:command", "say:command"):
        _command_event(message, timeline, done)
    elif tag == "ask:use_mcp_server":
        _mcp_event(message, timeline, done)
    elif tag in ("ask:tool", "say:tool"):
        _tool_event(message, timeline, info, done)
    elif tag in ("say:checkpoint_saved", "say:checkpoint_created"):
        _checkpoint_event(message, timeline, done)
    elif tag in ("say:api_req_deleted", "say:deleted_api_reqs"):
        removed = message.payload or {}
        _emit(done, message, "task.rolled_back", attributes={
            "removed_cost_usd": _number(removed.get("cost")), "removed_tokens_in": _count(removed.get("tokensIn")),
            "removed_tokens_out": _count(removed.get("tokensOut"))})
    elif tag == "say:condense_context":
        _condense_events(message, timeline.previous_request(message), done)
    elif tag in ("say:api_req_retried", "say:api_req_retry_delayed", "say:error_retry"):
        _emit(done, message, "llm.retried", attributes={"reason": _retry_reason(message, timeline) or None})
    elif tag == "say:completion_result":
        _emit(done, message, "task.completed", outcome="ok")
    elif tag in FAILURES:
        _failure_event(message, timeline, done)
    if tag in REOPENERS:
        _resumed_event(message, timeline, done)


EVENTFUL_SAY_TAGS = frozenset(f"say:{name}" for name in EVENTFUL_SAY)
EVENTFUL_ASK_TAGS = frozenset(f"ask:{name}" for name in EVENTFUL_ASK)


def _request_events(message: Message, request: Request, done: Derivation) -> None:
    if not request.final:
        done.waiting["a model request still streaming"] += 1
        return
    facts = request.facts
    cancel = facts.get("cancelReason")
    failed_stream = facts.get("streamingFailedMessage")
    has_facts = any(name in facts for name in ("tokensIn", "tokensOut", "cost"))
    if cancel == "user_cancelled":
        outcome = "cancelled"
    elif cancel or failed_stream or not has_facts:
        outcome = "error"  # the stream failed, or the request ended without ever reporting
    else:
        outcome = "ok"
    reason = None
    if outcome == "error":
        reason = _first_line(str(failed_stream or "")) or (str(cancel)[:100] if cancel else "no result recorded")
    _emit(done, message, "llm.request", resource=request.model, outcome=outcome,
          tokens_in=_count(facts.get("tokensIn")), tokens_out=_count(facts.get("tokensOut")),
          cost_usd=_number(facts.get("cost")),
          attributes={"model": request.model, "provider": request.provider,
                      "api_protocol": _short(facts.get("apiProtocol") or message.entry.get("apiProtocol"), 50),
                      "cache_reads": _count(facts.get("cacheReads")), "cache_writes": _count(facts.get("cacheWrites")),
                      "reason": reason})
    if cancel == "user_cancelled":
        # Cancelling stops the task in both clients (the user may resume it, which opens it again).
        _emit(done, message, "task.abandoned", outcome="abandoned", attributes={"reason": "user_cancelled"})


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return int(min(value, 2**62))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _command_line(message: Message) -> str:
    text = message.text.strip()
    payload = message.payload
    if payload and isinstance(payload.get("command"), str):  # newer clients send the command as JSON
        text = payload["command"].strip()
    return text.removesuffix("REQ_APP").strip()  # Cline marks commands that need approval


def _command_event(message: Message, timeline: Timeline, done: Derivation) -> None:
    """A command's event, once the next request (which tells the model its result) has ended.
    A restart alone does not settle it: the resumed task reports the result in its next request."""
    if not timeline.answered[message.position]:
        done.waiting["a command still running"] += 1
        return
    line = _command_line(message)
    request = timeline.next_request(message)
    result = request.claim("command", line) if request else None
    outcome, exit_code, state = command_outcome(result.text if result else "")
    if any(later.tag == "say:error" and _TIMEOUT.search(later.text) for later in timeline.until_next_request(message)):
        outcome, state = "timeout", "timed out"  # Roo Code: "Command execution timed out after N seconds"
    if outcome == "denied":
        _emit(done, message, "tool.decision", resource=_clean(line, COMMAND_CHARS),
              attributes={"decision": "denied", "tool": "execute_command"})
        return
    _emit(done, message, "command.exec", resource=_clean(line, COMMAND_CHARS), outcome=outcome,
          attributes={"tool": "execute_command", "exit_code": exit_code, "status": state})


def command_outcome(text: str) -> tuple[str | None, int | None, str | None]:
    """(outcome, exit code, status) from the result text a command left for the model. A command
    whose exit status the client did not record has no outcome: we do not know that it worked."""
    if not text:
        return None, None, None
    head = text[:300]  # the client's own words come first; the command's output follows them
    if "denied this operation" in head:
        return "denied", None, None
    if "terminated after exceeding" in head:  # Roo Code: "... a user-configured 30s timeout"
        return "timeout", None, "timed out"
    found = _EXIT.search(head)
    if found:
        code = int(found.group(1))
        return ("ok" if code == 0 else "error"), code, "exited"
    if "still running" in head:
        return None, None, "still running"
    return None, None, "finished"


def _mcp_event(message: Message, timeline: Timeline, done: Derivation) -> None:
    """An MCP call's result: its response (or an error said right after it), else what the next
    request told the model."""
    call = message.payload
    if call is None:
        done.skipped["a use_mcp_server message whose text is not JSON"] += 1
        return
    server = _short(call.get("serverName"), 100) or "?"
    resource = _short(call.get("uri"), 100) if call.get("type") == "access_mcp_resource" else None
    tool = _short(call.get("toolName"), 100) or resource or "?"
    following = timeline.until_next_request(message)
    response = next((later for later in following if later.tag in ("say:mcp_server_response", "say:error")
                     and not later.partial), None)
    if response is None and not timeline.answered[message.position]:
        done.waiting["an MCP call waiting for its response"] += 1
        return
    duration = None
    if response is not None:
        outcome = "ok" if response.tag == "say:mcp_server_response" and not _is_error(response.text) else "error"
        started = next((later for later in following if later.tag == "say:mcp_server_request_started"), None)
        duration = float(max(response.ms - started.ms, 0)) if started else None
        text = response.text
    else:
        request = timeline.next_request(message)
        result = request.claim("mcp") if request else None
        text = result.text if result else ""
        if "denied this operation" in text:
            _emit(done, message, "tool.decision", resource=f"{server}/{tool}",
                  attributes={"decision": "denied", "server": server, "tool": tool})
            return
        outcome = "error" if _is_error(text) else ("ok" if result else None)
    if outcome == "error" and _TIMEOUT.search(text[:500]):
        outcome = "timeout"
    _emit(done, message, "tool.result", resource=f"{server}/{tool}", outcome=outcome, duration_ms=duration,
          attributes={"server": server, "tool": tool, "type": _short(call.get("type"), 50),
                      "error": _first_line(text) if outcome in ("error", "timeout") else None})


def _is_error(text: str) -> bool:
    start = text.lstrip()[:200]
    return start.startswith(("Error", "<error>", "The tool execution failed")) \
        or "failed with the following error" in start


def _tool_event(message: Message, timeline: Timeline, info: TaskInfo, done: Derivation) -> None:
    call = message.payload
    if call is None:
        done.skipped[f"a {message.name} message whose text is not JSON"] += 1
        return
    tool = _short(call.get("tool"), 100) or "?"
    if tool == "newTask":
        _subtask_event(message, call, timeline, info, done)
        return
    if tool in CONTROL_TOOLS:
        return
    if not timeline.answered[message.position]:
        done.waiting["a tool call waiting for its result"] += 1
        return
    path = _short(call.get("path"), 300)
    request = timeline.next_request(message)
    result = request.claim("tool") if request else None
    text = result.text if result else ""
    if "denied this operation" in text[:300]:
        _emit(done, message, "tool.decision", resource=f"{tool} {path}" if path else tool,
              attributes={"decision": "denied", "tool": tool, "path": path})
        return
    inline = any(later.tag in TOOL_ERRORS for later in timeline.until_next_request(message))
    outcome = "error" if inline or _is_error(text) else "ok"
    batch = call.get("batchFiles")
    _emit(done, message, "tool.result", resource=f"{tool} {path}" if path else tool, outcome=outcome,
          attributes={"tool": tool, "path": path, "files": len(batch) if isinstance(batch, list) else None})


def _subtask_event(message: Message, call: dict[str, Any], timeline: Timeline, info: TaskInfo,
                   done: Derivation) -> None:
    """A delegated subtask, once the delegation went through (its child id is then recorded)."""
    returned = any(later.tag == "say:subtask_result" for later in timeline.after(message))
    if not (returned or timeline.settled[message.position]):
        done.waiting["a subtask being delegated"] += 1
        return
    order = sum(1 for earlier in timeline.before(message)
                if earlier.tag == "ask:tool" and (earlier.payload or {}).get("tool") == "newTask")
    children = (info.history_item or {}).get("childIds")
    child = children[order] if isinstance(children, list) and order < len(children) else None
    _emit(done, message, "task.subtask",
          attributes={"child_task_id": _short(child, KEY_CHARS), "child_mode": _short(call.get("mode"), 64)})


def _checkpoint_event(message: Message, timeline: Timeline, done: Derivation) -> None:
    # Roo Code writes the commit as the text; Cline adds `lastCheckpointHash` once the commit is made.
    commit = _short(message.entry.get("lastCheckpointHash"), 100) or _short(message.text, 100)
    if commit is None and not timeline.settled[message.position]:
        done.waiting["a checkpoint still being saved"] += 1
        return
    checkpoint = message.entry.get("checkpoint")
    origin = _short(checkpoint.get("from"), 100) if isinstance(checkpoint, dict) else None
    _emit(done, message, "checkpoint.saved", resource=commit, attributes={"from": origin})


def _condense_events(message: Message, before: Request | None, done: Derivation) -> None:
    """Condensing is a model request of its own (its cost is in the message; the task's model made
    it) and a task event."""
    condense = message.entry.get("contextCondense")
    condense = condense if isinstance(condense, dict) else {}
    model, provider = (before.model, before.provider) if before else (None, None)
    _emit(done, message, "llm.request", resource=model, outcome="ok", cost_usd=_number(condense.get("cost")),
          attributes={"purpose": "condense", "model": model, "provider": provider})
    _emit(done, message, "task.condensed", attributes={
        "prev_context_tokens": _count(condense.get("prevContextTokens")),
        "new_context_tokens": _count(condense.get("newContextTokens"))})


def _retry_reason(message: Message, timeline: Timeline) -> str:
    if message.name == "error_retry":
        payload = message.payload or {}
        return _first_line(str(payload.get("errorMessage") or ""))
    if message.name == "api_req_retry_delayed":
        return _first_line(message.text)
    for earlier in timeline.before(message):
        if earlier.tag == "ask:api_req_failed":
            return _first_line(earlier.text)
        if earlier.tag == "say:api_req_started":
            break
    return ""


def _failure_event(message: Message, timeline: Timeline, done: Derivation) -> None:
    """A task fails when it ends on a failed request or the mistake limit: nothing comes after
    but the client offering to resume it."""
    if all(later.tag in RESUMES for later in timeline.after(message)):
        _emit(done, message, "task.failed", outcome="error",
              attributes={"reason": message.name, "error": _first_line(message.text) or None})


def _resumed_event(message: Message, timeline: Timeline, done: Derivation) -> None:
    """`task.resumed` on the first sign of work after a completion, a failure or a cancel."""
    for earlier in timeline.before(message):
        if earlier.tag in REOPENERS:
            request = timeline.requests.get(earlier.position)
            if request is not None and request.facts.get("cancelReason") == "user_cancelled":
                break  # the cancelled request ended the task: this is work after it
            return
        if (earlier.tag == "say:completion_result" and not earlier.partial) or earlier.tag in FAILURES:
            break
    else:
        return
    _emit(done, message, "task.resumed")


def _task_start(timeline: Timeline, info: TaskInfo, done: Derivation) -> None:
    """`task.started` at the first message, with the first request's model and provider."""
    first = timeline.messages[0]
    request = next((timeline.requests[message.position] for message in timeline.messages
                    if message.position in timeline.requests), None)
    item = info.history_item or {}
    _emit(done, first, "task.started", attributes={
        "model": request.model if request else None, "provider": request.provider if request else None,
        "parent_task_id": _short(item.get("parentTaskId"), KEY_CHARS), "workspace": _short(item.get("workspace"), 300),
        "profile": _short(item.get("apiConfigName"), 100)})


def _modes(done: Derivation, timeline: Timeline, info: TaskInfo) -> None:
    """Each event's mode: the mode of the request it belongs to (the last one started before it;
    the first one for what comes before any). A request whose mode is not written takes the one
    before it, or the one a `switch_mode` set. An event waits until its request's mode is sure:
    the request has ended, or later messages show its text (and the conversation) was saved."""
    current: str | None = None
    governing: dict[int, Request | None] = {}
    mode_at: dict[int, str | None] = {}
    last: Request | None = None
    for message in timeline.messages:
        if message.position in timeline.requests:
            last = timeline.requests[message.position]
            current = last.mode = last.mode or current
        elif message.tag == "ask:tool" and not message.partial:
            call = message.payload or {}
            if call.get("tool") == "switchMode" and isinstance(call.get("mode"), str):
                current = call["mode"][:64]
        governing[message.position] = last
        mode_at[message.position] = current
    first = next((timeline.requests[message.position] for message in timeline.messages
                  if message.position in timeline.requests), None)
    before_any = (first.mode if first else None) or _short((info.history_item or {}).get("mode"), 64)
    last_position = timeline.messages[-1].position
    kept = []
    for event in done.events:
        request = governing[event["_position"]] or first
        if request is None or not (request.final or request.position != last_position):
            done.waiting["an event whose model request has just started (its mode is not known yet)"] += 1
            continue
        mode = mode_at[event["_position"]] or before_any
        if mode:
            event["mode"] = mode
        kept.append(event)
    done.events = kept
