"""`corral import roo|cline PATH` and `corral ship --watch PATH`: Roo Code and Cline task folders,
read into events by `corral.ingest.taskfolders`, sent to `POST /api/v1/ingest/events` in batches.

Import sends what a folder holds once and says what it read, sent and left out. Ship watches a
folder from a developer's machine: it sends only what Corral has not acknowledged yet, remembers
what it has in a state file written after every acknowledged batch, and retries a batch Corral did
not take (unreachable, 5xx) with backoff. Keys make a repeat harmless, so neither a restart nor an
outage loses or doubles an event."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Any, Optional

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from corral.cli.client import TIMEOUT_S, ApiClient, CliError
from corral.cli.common import JsonFlag, err, out, print_json
from corral.ingest.schema import MAX_BATCH
from corral.ingest.taskfolders import Problem, TaskFiles, TaskRead, discover, read_task
from corral.ingest.taskmessages import SOURCES
from corral.settings import ClientSettings, load_client_settings

import_app = typer.Typer(help="Import agents' task folders (Roo Code, Cline).", no_args_is_help=True)

BATCH_EVENTS = min(1000, MAX_BATCH)
BATCH_BYTES = 1024 * 1024  # halved whenever a server says a batch is too large for it
FIRST_DELAY_S, LONGEST_DELAY_S = 0.5, 30.0
STATE_DIR = Path.home() / ".corral-ship"
STATE_VERSION = 1


class Client(str, Enum):
    roo = "roo"
    cline = "cline"


# ---- sending ------------------------------------------------------------------------------


class Delivery(Enum):
    TAKEN = "taken"  # Corral answered: accepted, duplicates, and per-event rejections
    RETRY = "retry"  # unreachable, or a 5xx/429: the same batch may be sent again
    TOO_LARGE = "too large"  # 413: split it
    REFUSED = "refused"  # 401/403: no point sending anything else
    REJECTED = "rejected"  # any other 4xx: this batch will never be taken


@dataclass
class Answer:
    delivery: Delivery
    message: str = ""
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)


class IngestClient(ApiClient):
    """The API client, answering with how a batch fared rather than raising, since a shipper
    retries what a one-off command would give up on."""

    def post_batch(self, source: str, events: list[dict[str, Any]]) -> Answer:
        try:
            response = httpx.post(f"{self.url}/api/v1/ingest/events", json={"source": source, "events": events},
                                  headers=self._headers(), timeout=TIMEOUT_S)
        except httpx.TransportError as error:
            return Answer(Delivery.RETRY, self._unreachable(error))
        if response.is_success:
            try:
                body = response.json()
                return Answer(Delivery.TAKEN, "", int(body.get("accepted", 0)), int(body.get("duplicates", 0)),
                              list(body.get("rejected") or []))
            except (ValueError, TypeError, AttributeError):
                return Answer(Delivery.REJECTED, f"{self.url} answered with something other than Corral's answer; "
                                                 "is the URL right?")
        status = response.status_code
        delivery = Delivery.RETRY if status >= 500 or status == 429 else Delivery.TOO_LARGE if status == 413 \
            else Delivery.REFUSED if status in (401, 403) else Delivery.REJECTED
        return Answer(delivery, f"{self._message(response)} (HTTP {status})")


def event_bytes(event: dict[str, Any]) -> int:
    return len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()) + 1


def batches(events: list[dict[str, Any]], max_bytes: int) -> list[list[dict[str, Any]]]:
    """Consecutive batches of at most BATCH_EVENTS events and about `max_bytes` of JSON."""
    chunks: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for event in events:
        grows = event_bytes(event)
        if current and (len(current) >= BATCH_EVENTS or size + grows > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(event)
        size += grows
    if current:
        chunks.append(current)
    return chunks


class BatchSender:
    """Sends events in batches of at most BATCH_EVENTS, splitting a batch the server finds too
    large. A patient sender (the shipper) retries a batch Corral did not take, with backoff, until
    it does; an impatient one (an import) stops with Corral's words. A refusal (401, 403) always
    stops. `acknowledged` hears of every batch Corral has answered for."""

    def __init__(self, client: IngestClient, source: str, tally: Tally, patient: bool,
                 acknowledged: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.client, self.source, self.tally, self.patient = client, source, tally, patient
        self.acknowledged = acknowledged
        self.max_bytes = BATCH_BYTES

    def send(self, events: list[dict[str, Any]]) -> None:
        pending = batches(events, self.max_bytes)
        while pending:
            batch = pending.pop(0)
            answer = self._post(batch)
            if answer.delivery is Delivery.TOO_LARGE and len(batch) > 1:
                self.max_bytes = max(sum(event_bytes(event) for event in batch) // 2, 1024)
                pending[:0] = batches(batch, self.max_bytes)
                continue
            if answer.delivery is Delivery.REFUSED or answer.delivery is Delivery.RETRY:
                raise CliError(answer.message)
            if self.patient:  # a shipper's log says what it skipped; an import's summary groups it
                if answer.delivery is not Delivery.TAKEN:
                    err.print(f"Corral will not take {_plural(len(batch), 'event')}: {answer.message}; skipped")
                for item in answer.rejected:
                    index = item.get("index")
                    if isinstance(index, int) and 0 <= index < len(batch):
                        err.print(f"Corral rejected {batch[index]['key']}: {item.get('error')}; skipped")
            self.tally.add_answer(answer, batch)
            if self.acknowledged:
                self.acknowledged(batch)

    def _post(self, batch: list[dict[str, Any]]) -> Answer:
        delay = FIRST_DELAY_S
        while True:
            answer = self.client.post_batch(self.source, batch)
            if answer.delivery is not Delivery.RETRY or not self.patient:
                return answer
            err.print(f"{answer.message}; retrying in {delay:g}s")
            time.sleep(delay)
            delay = min(delay * 2, LONGEST_DELAY_S)


# ---- what was read and sent ---------------------------------------------------------------


@dataclass
class Tally:
    """Everything an import (or a ship pass) read, sent and left out, for its summary."""

    tasks: int = 0
    files_read: int = 0
    file_problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    entries: int = 0
    skipped_entries: Counter[str] = field(default_factory=Counter)
    waiting: Counter[str] = field(default_factory=Counter)
    unknown: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def add_read(self, read: TaskRead) -> list[dict[str, Any]]:
        """Count a task's reading; return its events."""
        self.file_problems.extend(read.problems)
        self.warnings.extend(read.warnings)
        if read.derivation is None:
            return []
        derivation = read.derivation
        self.tasks += 1
        self.files_read += 1
        self.entries += read.entries
        self.skipped_entries.update(derivation.skipped)
        self.waiting.update(derivation.waiting)
        self.unknown.update(derivation.unknown)
        self.kinds.update(event["kind"] for event in derivation.events)
        self.events += len(derivation.events)
        return derivation.events

    def add_answer(self, answer: Answer, batch: list[dict[str, Any]]) -> None:
        if answer.delivery is Delivery.TAKEN:
            self.accepted += answer.accepted
            self.duplicates += answer.duplicates
            self.rejected.update(str(item.get("error", "rejected")) for item in answer.rejected)
        else:
            self.rejected[answer.message] += len(batch)

    def as_json(self, client: str, path: Path, dry_run: bool) -> dict[str, Any]:
        return {
            "client": client, "path": str(path), "dry_run": dry_run, "tasks": self.tasks,
            "files": {"read": self.files_read, "with_problems": len({problem.path for problem in self.file_problems})},
            "entries": {"read": self.entries, "skipped": sum(self.skipped_entries.values())},
            "events": {"parsed": self.events, "accepted": self.accepted, "duplicates": self.duplicates,
                       "rejected": sum(self.rejected.values()), "waiting": sum(self.waiting.values())},
            "kinds": dict(sorted(self.kinds.items())),
            "problems": [{"path": problem.path, "reason": problem.reason} for problem in self.file_problems],
            "warnings": [{"path": warning.path, "reason": warning.reason} for warning in self.warnings],
            "skipped_entries": dict(self.skipped_entries.most_common()),
            "waiting": dict(self.waiting.most_common()),
            "unknown_kinds": dict(self.unknown.most_common()),
            "rejected": dict(self.rejected.most_common()),
        }

    def print(self, client: str, path: Path, dry_run: bool) -> None:
        out.print(f"{'Read' if dry_run else 'Imported'} {client} tasks from {path}: {_plural(self.tasks, 'task')}, "
                  f"{_plural(self.files_read, 'messages file')}, {_plural(self.entries, 'message')}")
        if dry_run:
            out.print(f"  events: {self.events} parsed; nothing sent (--dry-run)")
        else:
            out.print(f"  events: {self.events} parsed, {self.accepted} accepted, {self.duplicates} duplicates "
                      f"(already in Corral), {sum(self.rejected.values())} rejected")
        if self.kinds:
            out.print("  by kind: " + ", ".join(f"{kind} {count}" for kind, count in sorted(self.kinds.items())))
        _reasons("rejected", self.rejected)
        _reasons("waiting (not final yet; a later import or ship picks them up)", self.waiting)
        if self.file_problems:
            out.print(f"  files with problems: {len(self.file_problems)}")
            for problem in self.file_problems:
                out.print(f"    {problem}")
        _reasons("skipped messages", self.skipped_entries)
        _reasons("unknown message kinds, kept as agent.message", self.unknown)
        for warning in self.warnings:
            out.print(f"  warning: {warning}")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _reasons(title: str, reasons: Counter[str]) -> None:
    if reasons:
        out.print(f"  {title}: {sum(reasons.values())}")
        for reason, count in reasons.most_common():
            out.print(f"    {count} × {reason}")


def owned(events: list[dict[str, Any]], user: str | None) -> list[dict[str, Any]]:
    return [{**event, "user": user} for event in events] if user else events


# ---- corral import ------------------------------------------------------------------------


PathArgument = Annotated[Path, typer.Argument(help="The extension's globalStorage folder, its tasks/ folder, one task "
                                                   "folder, or one ui_messages.json file.", show_default=False)]
UserOption = Annotated[Optional[str], typer.Option(help="Whose tasks these are (default: you; others need the admin "
                                                        "role).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Read and summarise; send nothing.")]


@import_app.command("roo")
def import_roo(path: PathArgument, user: UserOption = None, dry_run: DryRun = False,
               as_json: JsonFlag = False) -> None:
    """Import Roo Code tasks (…/globalStorage/rooveterinaryinc.roo-cline)."""
    run_import("roo", path, user, dry_run, as_json)


@import_app.command("cline")
def import_cline(path: PathArgument, user: UserOption = None, dry_run: DryRun = False,
                 as_json: JsonFlag = False) -> None:
    """Import Cline tasks (…/globalStorage/saoudrizwan.claude-dev)."""
    run_import("cline", path, user, dry_run, as_json)


def run_import(client: str, path: Path, user: str | None, dry_run: bool, as_json: bool) -> None:
    found = discover(path)
    tally = Tally(file_problems=list(found.problems))
    sender = None if dry_run else BatchSender(IngestClient(load_client_settings()), SOURCES[client], tally,
                                              patient=False)
    queued: list[dict[str, Any]] = []
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, transient=True, disable=not err.is_terminal)
    with progress:
        bar = progress.add_task(f"importing {client} tasks", total=len(found.tasks))
        for files in found.tasks:
            queued.extend(owned(tally.add_read(read_task(files, client)), user))
            if sender and len(queued) >= BATCH_EVENTS:
                sender.send(queued)
                queued = []
            progress.advance(bar)
        if sender and queued:
            sender.send(queued)
    if as_json:
        print_json(tally.as_json(client, path, dry_run))
    else:
        tally.print(client, path, dry_run)
    if tally.tasks == 0:
        reason = tally.file_problems[0] if tally.file_problems else f"{path}: no tasks"
        raise CliError(f"nothing could be imported ({reason})")
    if sender and tally.events and not (tally.accepted or tally.duplicates):
        raise CliError("Corral took none of the events (see 'rejected' above)")


# ---- corral ship --------------------------------------------------------------------------


class ShipState:
    """What Corral has acknowledged, per task, and each messages file's (mtime, size) when it was
    last read in full. Kept as a journal of JSON lines: a line is appended and synced after every
    acknowledged batch, so writing it costs the batch, not the whole state. A crash can only tear
    the line being written; that line is ignored on loading, and its batch is sent again (Corral
    counts it a duplicate). Loading rewrites the journal compactly, atomically (a new file renamed
    over the old)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, list[list[int]]] = {}
        self.acknowledged: dict[str, set[str]] = {}

    @classmethod
    def load(cls, path: Path) -> ShipState:
        state = cls(path)
        try:
            lines = path.read_text().splitlines() if path.exists() else []
        except (OSError, UnicodeDecodeError) as error:
            raise CliError(f"the state file {path} cannot be read ({error}); move it away to start afresh "
                           "(events already in Corral are then sent again, and counted as duplicates)") from None
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash: its batch will be sent again
            if isinstance(entry, dict) and isinstance(entry.get("keys"), list):
                state.acknowledged.setdefault(str(entry.get("task")), set()).update(map(str, entry["keys"]))
            elif isinstance(entry, dict) and isinstance(entry.get("files"), dict):
                state.files.update(entry["files"])
        state.compact()
        return state

    def compact(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lines = [{"version": STATE_VERSION}, {"files": self.files},
                 *({"task": task, "keys": sorted(keys)} for task, keys in sorted(self.acknowledged.items()))]
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as file:
                file.writelines(json.dumps(line) + "\n" for line in lines)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def acknowledge(self, events: list[dict[str, Any]]) -> None:
        by_task: dict[str, list[str]] = {}
        for event in events:
            by_task.setdefault(task_of(event), []).append(event["key"])
        for task, keys in by_task.items():
            self.acknowledged.setdefault(task, set()).update(keys)
        self._append([{"task": task, "keys": keys} for task, keys in by_task.items()])

    def read_in_full(self, shapes: dict[str, list[list[int]]]) -> None:
        if shapes:
            self.files.update(shapes)
            self._append([{"files": shapes}])

    def _append(self, lines: list[dict[str, Any]]) -> None:
        with open(self.path, "a") as file:
            file.writelines(json.dumps(line) + "\n" for line in lines)
            file.flush()
            os.fsync(file.fileno())


def task_of(event: dict[str, Any]) -> str:
    return f"{event['client']}:{event['task_id']}"


def signature(files: TaskFiles) -> list[list[int]]:
    """The watched files' (mtime, size): a change means the task must be read again."""
    shapes = []
    for path in files.watched():
        try:
            stat = path.stat()
            shapes.append([stat.st_mtime_ns, stat.st_size])
        except OSError:
            shapes.append([0, -1])
    return shapes


def default_state(watch: Path, client: str, url: str) -> Path:
    digest = hashlib.sha256(f"{watch.resolve()}\n{client}\n{url}".encode()).hexdigest()[:16]
    return STATE_DIR / f"{client}-{digest}.jsonl"


def infer_client(watch: Path) -> str:
    text = str(watch.resolve()).lower()
    if "rooveterinaryinc.roo-cline" in text:
        return "roo"
    if "saoudrizwan.claude-dev" in text:
        return "cline"
    raise CliError(f"cannot tell whether {watch} holds Roo Code or Cline tasks; say --client roo or --client cline")


class Shipper:
    """One watched folder: each pass reads the tasks whose files changed and sends what Corral has
    not acknowledged, in batches across tasks, retrying a batch until Corral takes it."""

    def __init__(self, watch: Path, client: str, state: ShipState, api: IngestClient, user: str | None) -> None:
        self.watch, self.client, self.state, self.user = watch, client, state, user
        self.sender = BatchSender(api, SOURCES[client], Tally(), patient=True, acknowledged=state.acknowledge)
        self.reported: set[str] = set()

    def run_pass(self) -> Tally:
        tally = self.sender.tally = Tally()
        sender = self.sender
        found = discover(self.watch)
        self._report(found.problems)
        queued: list[dict[str, Any]] = []
        shapes: dict[str, list[list[int]]] = {}
        for files in found.tasks:
            # The signature is taken before reading: a change made while reading is read next pass.
            name, shape = os.path.abspath(files.ui), signature(files)
            if self.state.files.get(name) == shape:
                continue
            read = read_task(files, self.client)
            events = tally.add_read(read)
            self._report(read.problems + read.warnings)
            if read.derivation is None:
                continue  # read again next pass: it may be being written
            queued += owned([event for event in events
                             if event["key"] not in self.state.acknowledged.get(task_of(event), ())], self.user)
            shapes[name] = shape
            if len(queued) >= BATCH_EVENTS:
                sender.send(queued)
                self.state.read_in_full(shapes)
                queued, shapes = [], {}
        sender.send(queued)
        self.state.read_in_full(shapes)
        return tally

    def _report(self, problems: list[Problem]) -> None:
        """Each problem once, not once per pass."""
        for problem in problems:
            if str(problem) not in self.reported:
                self.reported.add(str(problem))
                err.print(f"{problem}")


def ship(
    watch: Annotated[Path, typer.Option(help="The globalStorage folder, tasks/ folder or task folder to watch.",
                                        show_default=False)],
    url: Annotated[Optional[str], typer.Option(help="Corral's URL [CORRAL_URL].")] = None,
    key: Annotated[Optional[str], typer.Option(help="Your Corral key [CORRAL_KEY].")] = None,
    client: Annotated[Optional[Client], typer.Option(help="roo or cline (default: told by the path).")] = None,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between looks at the folder.")] = 2.0,
    state: Annotated[Optional[Path], typer.Option(help="State file [~/.corral-ship/<client>-<hash>.jsonl].")] = None,
    user: UserOption = None,
    once: Annotated[bool, typer.Option("--once", help="One pass (retrying until Corral takes it), then exit.")] = False,
) -> None:
    """Ship new task-folder events to Corral continuously: only what is new, surviving restarts
    and Corral being down."""
    settings = load_client_settings()
    try:
        settings = ClientSettings(url=url or settings.url, key=key or settings.key)
    except ValueError:
        raise CliError(f"--url {url!r} is not an http(s) URL") from None
    if not watch.exists():
        raise CliError(f"{watch} does not exist; point --watch at the extension's folder, its tasks/ folder or a task")
    name = client.value if client else infer_client(watch)
    state_file = state or default_state(watch, name, settings.url)
    shipper = Shipper(watch, name, ShipState.load(state_file), IngestClient(settings), user)
    err.print(f"shipping {name} tasks from {watch} to {settings.url} (state: {state_file})")
    try:
        while True:
            tally = shipper.run_pass()
            if tally.events or tally.rejected:
                out.print(f"shipped {_plural(tally.accepted, 'new event')} from {_plural(tally.tasks, 'task')} "
                          f"({tally.duplicates} already in Corral, {sum(tally.rejected.values())} rejected, "
                          f"{sum(tally.waiting.values())} waiting)")
            if once:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        err.print("stopped; what Corral acknowledged is in the state file")
