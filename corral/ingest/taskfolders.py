"""Finding and reading task folders: a Roo Code or Cline globalStorage folder, its `tasks/` folder,
one task folder or one `*ui_messages.json` file becomes the tasks to read, and each task's files
(`ui_messages.json`, `history_item.json` or `tasks/_index.json`, `api_conversation_history.json`)
are read into events by `corral.ingest.taskmessages`. It only reads files, never writes or sends.

A problem with a file is reported beside its path, in words, and the other files are still read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.ingest.taskmessages import (Derivation, NotMessages, Reading, TaskInfo, derive, looks_like_task_id,
                                        read_messages, task_id_for)

UI_FILE = "ui_messages.json"
HISTORY_ITEM = "history_item.json"
CONVERSATION = "api_conversation_history.json"
INDEX = "_index.json"  # Roo Code's cache of history items, in tasks/


@dataclass(frozen=True)
class Problem:
    """What is wrong with a path, in words."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class TaskFiles:
    """One task's files. `folder` is None for a lone messages file (then the task's id is its first
    message's ts); `indexed` is its history item from tasks/_index.json, if any."""

    ui: Path
    folder: Path | None = None
    indexed: dict[str, Any] | None = None

    @property
    def history_item(self) -> Path | None:
        return self.folder / HISTORY_ITEM if self.folder else None

    @property
    def conversation(self) -> Path | None:
        return self.folder / CONVERSATION if self.folder else None

    def watched(self) -> list[Path]:
        """The files whose change can change the task's events."""
        return [path for path in (self.ui, self.history_item, self.conversation) if path is not None]


@dataclass
class Discovery:
    tasks: list[TaskFiles] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def discover(path: Path) -> Discovery:
    """The tasks under PATH: an extension's globalStorage folder (holding tasks/), a tasks folder,
    one task folder, or one file whose name ends in ui_messages.json."""
    found = Discovery()
    if not path.exists():
        found.problems.append(Problem(str(path), "does not exist"))
    elif path.is_file():
        if path.name.endswith(UI_FILE):
            found.tasks.append(_file_task(path))
        else:
            found.problems.append(Problem(str(path), f"is not a task's messages file (a name ending in {UI_FILE})"))
    elif (path / UI_FILE).is_file():
        found.tasks.append(_folder_task(path, None))
    else:
        tasks = path / "tasks" if (path / "tasks").is_dir() else path
        index = _index(tasks, found)
        for folder in _subfolders(tasks, found):
            if (folder / UI_FILE).is_file():
                found.tasks.append(_folder_task(folder, index.get(folder.name)))
            elif (folder / HISTORY_ITEM).is_file() or (folder / CONVERSATION).is_file():
                found.problems.append(Problem(str(folder), f"is a task folder without {UI_FILE}; nothing to read"))
        if not found.tasks and not found.problems:
            found.problems.append(Problem(str(path), f"holds no task folders (no {UI_FILE} in it or in its "
                                                     "subfolders)"))
    return found


def _file_task(path: Path) -> TaskFiles:
    # A ui_messages.json inside a real task folder is that task; any other file stands alone.
    folder = path.parent
    if path.name == UI_FILE and (looks_like_task_id(folder.name) or (folder / HISTORY_ITEM).is_file()):
        return _folder_task(folder, None)
    return TaskFiles(path)


def _folder_task(folder: Path, indexed: dict[str, Any] | None) -> TaskFiles:
    return TaskFiles(folder / UI_FILE, folder, indexed)


def _subfolders(path: Path, found: Discovery) -> Iterator[Path]:
    try:
        entries = sorted(path.iterdir())
    except OSError as error:
        found.problems.append(Problem(str(path), f"cannot be listed: {error.strerror or error}"))
        return
    yield from (entry for entry in entries if entry.is_dir())


def _index(tasks: Path, found: Discovery) -> dict[str, dict[str, Any]]:
    """History items by task id from tasks/_index.json (a list of items, or an object holding one)."""
    path = tasks / INDEX
    if not path.is_file():
        return {}
    value, problem = read_json(path)
    if problem:
        found.problems.append(Problem(problem.path, f"{problem.reason}; history items taken from the task folders only"))
        return {}
    if isinstance(value, dict):  # {"version": .., "entries": [...]}, or items by id
        value = next((item for item in value.values() if isinstance(item, list)), list(value.values()))
    items = value if isinstance(value, list) else []
    return {item["id"]: item for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)}


def read_json(path: Path) -> tuple[Any, Problem | None]:
    """A file's JSON, or what is wrong with it in words."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, Problem(str(path), "does not exist (it went away while being read)")
    except OSError as error:
        return None, Problem(str(path), f"cannot be read: {error.strerror or error}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        return None, Problem(str(path), f"is not UTF-8 text (byte {error.start})")
    if not text.strip():
        return None, Problem(str(path), "is empty")
    try:
        return json.loads(text), None
    except json.JSONDecodeError as error:
        # Only the end of the text can leave a string open; any other error there means it stops short.
        if error.pos >= len(text.rstrip()) or error.msg.startswith("Unterminated string"):
            return None, Problem(str(path), "ends in the middle of its JSON: it is truncated, or still being written")
        return None, Problem(str(path), f"is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}")


@dataclass
class TaskRead:
    """What reading one task gave: its derivation (None when its messages could not be read),
    the problems with its files, and warnings."""

    files: TaskFiles
    derivation: Derivation | None = None
    entries: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def read_task(files: TaskFiles, client: str) -> TaskRead:
    """Read one task's files and derive its events. The side files are optional: a problem with
    one is reported, and the task is read without it."""
    read = TaskRead(files)
    raw, problem = read_json(files.ui)
    if problem:
        read.problems.append(problem)
        return read
    try:
        reading = read_messages(raw)
    except NotMessages as error:
        read.problems.append(Problem(str(files.ui), str(error)))
        return read
    read.entries = reading.entries
    if reading.seconds:
        read.warnings.append(Problem(str(files.ui), "some ts values look like epoch seconds; read as seconds"))
    history_item = files.indexed
    if files.history_item is not None and files.history_item.is_file():
        value, problem = read_json(files.history_item)
        if problem or not isinstance(value, dict):
            read.problems.append(problem or Problem(str(files.history_item), "is not a JSON object; ignored"))
        else:
            history_item = value
    conversation = _conversation(files, read)
    task_id = task_id_for(files.folder.name if files.folder else None, history_item, reading)
    if task_id is None:
        read.problems.append(Problem(str(files.ui), _empty(reading)))
        return read
    read.derivation = derive(reading, TaskInfo(task_id, client, history_item, conversation))
    return read


def _conversation(files: TaskFiles, read: TaskRead) -> list[Any] | None:
    if files.conversation is None or not files.conversation.is_file():
        return None
    value, problem = read_json(files.conversation)
    if problem or not isinstance(value, list):
        read.problems.append(Problem(str(files.conversation), (problem.reason if problem else "is not a list")
                                     + "; modes and command results are read from the messages alone"))
        return None
    return value


def _empty(reading: Reading) -> str:
    if reading.entries == 0:
        return "holds no messages"
    return f"holds no readable messages ({reading.entries} entries, all skipped)"
