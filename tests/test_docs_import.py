"""docs/import.md's examples run in order against a real server, and each prints what the page
says it prints (the ```text block after it), so the page stays true. tests/test_docs.py runs them
too; here the example's task gets a fresh id and Erin a fresh address, so the counts shown (what
a first import accepts, what a second finds already there) hold on a shared server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "docs/import.md"
TASK_ID = "0e9c2a51-4b6a-4c1e-9a51-2f0c1b7e6d44"
_BLOCK = re.compile(r"^```(sh|text)\n(.*?)^```", re.S | re.M)


def examples() -> list[tuple[str, str | None]]:
    """Each sh block with the text block that shows its output (None if the page shows none)."""
    pairs: list[tuple[str, str | None]] = []
    for language, body in _BLOCK.findall(DOCUMENT.read_text()):
        if language == "sh":
            pairs.append((body, None))
        elif pairs and pairs[-1][1] is None:
            pairs[-1] = (pairs[-1][0], body)
    return pairs


def test_the_import_page_shows_what_its_examples_print(server, tmp_path):
    pairs = examples()
    assert len(pairs) == 3 and all(shown for _, shown in pairs)
    task_id, erin = str(uuid.uuid4()), f"erin-{uuid.uuid4().hex[:6]}@"
    env = {**os.environ, "CORRAL_URL": server.url, "CORRAL_KEY": server.admin_key,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    for script, shown in pairs:
        result = subprocess.run(["bash", "-eu", "-c", script.replace(TASK_ID, task_id).replace("erin@", erin)],
                                env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
        assert result.stdout == shown, f"{script}\nprinted:\n{result.stdout}\nthe page shows:\n{shown}"
