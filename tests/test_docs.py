"""Every ```sh block in the README and docs/ runs, in order, against a real server and must
succeed, so the documentation stays true. On SQLite only: what the examples do on each database
is what the modules' own tests check on both, and the examples take minutes."""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def _blocks(path: Path) -> list[str]:
    return _BLOCK.findall(path.read_text())


def test_the_docs_have_runnable_examples():
    assert all(_blocks(path) for path in DOCUMENTS if path.name in {"README.md", "identity.md", "api.md"})


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_documented_examples_run(server, document, tmp_path):
    blocks = _blocks(document)
    if not blocks:
        pytest.skip(f"{document.name} has no sh examples")
    env = {**os.environ, "CORRAL_URL": server.url, "CORRAL_KEY": server.admin_key,
           "CORRAL_DATABASE_URL": server.database_url,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for block in blocks:
        # Names in examples are fixed; the session's server is shared, so make them unique per run.
        suffix = uuid.uuid4().hex[:6]
        script = block.replace("mobile", f"mobile-{suffix}").replace("erin@", f"erin-{suffix}@").replace(
            '"data"', f'"data-{suffix}"')
        result = subprocess.run(["bash", "-eu", "-c", script], env=env, capture_output=True,
                                text=True, timeout=120, cwd=tmp_path)
        assert result.returncode == 0, f"{document.name} example failed:\n{script}\n{result.stdout}\n{result.stderr}"
