"""The Cline hook script as Cline runs it: an executable named after its hook, given the hook's
JSON on stdin, printing its answer. With nothing listening it fails closed for the hooks that let
work go ahead (or open, when the policy said so as it was written) and lets the others go on;
with a server it sends exactly what it read, with the key from the file beside it, and prints
that server's decision whatever the HTTP status."""

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from corral.clients.cline import hook_script
from corral.identity.tokens import generate_key
from tests.conftest import free_port

KEY = generate_key()
PAYLOAD = {"clineVersion": "3.36.0", "hookName": "PreToolUse", "taskId": "task-1", "workspaceRoots": ["/w"],
           "preToolUse": {"toolName": "execute_command", "parameters": {"command": "rm -rf build"}}}


def install(directory, url, fail_open=False, names=("PreToolUse", "PostToolUse", "TaskComplete", "TaskStart.py")):
    script = hook_script(url, fail_open)
    for name in names:
        path = directory / name
        path.write_text(script)
        path.chmod(0o700)
    (directory / "corral.key").write_text(KEY + "\n")
    return directory


def run(path, payload=PAYLOAD):
    env = {name: value for name, value in os.environ.items() if name != "CORRAL_KEY"}
    result = subprocess.run([str(path)], input=json.dumps(payload), capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def closed_port():
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_with_corral_unreachable_the_gates_fail_closed_and_the_rest_go_on(tmp_path, closed_port):
    hooks = install(tmp_path, closed_port)
    answer = run(hooks / "PreToolUse")
    assert answer["cancel"] is True
    assert answer["errorMessage"].startswith(f"Corral at {closed_port} could not be reached (")
    assert answer["errorMessage"].endswith("); the policy blocks tools while Corral cannot decide")
    assert run(hooks / "TaskStart.py")["cancel"] is True  # named with .py, as the Cline CLI runs hooks
    assert run(hooks / "PostToolUse") == {"cancel": False}
    assert run(hooks / "TaskComplete") == {"cancel": False}


def test_a_policy_that_fails_open_lets_the_tool_run_when_corral_is_unreachable(tmp_path, closed_port):
    hooks = install(tmp_path, closed_port, fail_open=True)
    assert run(hooks / "PreToolUse") == {"cancel": False}


class Recorder:
    """A stand-in for Corral that answers every POST with a canned status and body."""

    def __init__(self, status, body, content_type="application/json"):
        self.status, self.body, self.content_type = status, body, content_type
        self.requests = []

    def __enter__(self):
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("content-length", 0))
                recorder.requests.append((self.path, dict(self.headers), self.rfile.read(length)))
                self.send_response(recorder.status)
                self.send_header("content-type", recorder.content_type)
                self.send_header("content-length", str(len(recorder.body)))
                self.end_headers()
                self.wfile.write(recorder.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_corrals_answer_is_printed_and_its_request_is_the_hook_input_verbatim(tmp_path):
    with Recorder(200, b'{"cancel": true, "errorMessage": "x"}') as corral:
        hooks = install(tmp_path, corral.url)
        assert run(hooks / "PreToolUse") == {"cancel": True, "errorMessage": "x"}
    ((path, headers, body),) = corral.requests
    assert path == "/v1/hooks/cline?hook=PreToolUse"
    assert headers["Authorization"] == f"Bearer {KEY}" and headers["Content-Type"] == "application/json"
    assert json.loads(body) == PAYLOAD


def test_a_refusal_with_a_decision_is_printed_whatever_its_status(tmp_path):
    answer = b'{"cancel": true, "errorMessage": "API key ck_x was revoked", "error": {"code": "unauthenticated"}}'
    with Recorder(401, answer) as corral:
        hooks = install(tmp_path, corral.url, fail_open=True)
        assert run(hooks / "PreToolUse") == {"cancel": True, "errorMessage": "API key ck_x was revoked"}


def test_an_answer_that_is_not_a_decision_counts_as_no_answer(tmp_path):
    with Recorder(502, b"<html>Bad Gateway</html>", "text/html") as corral:
        hooks = install(tmp_path, corral.url)
        answer = run(hooks / "PreToolUse")
    assert answer["cancel"] is True and "could not be reached (its answer is not JSON)" in answer["errorMessage"]


def test_the_key_in_the_environment_wins_over_the_key_file(tmp_path):
    other = generate_key()
    with Recorder(200, b'{"cancel": false}') as corral:
        hooks = install(tmp_path, corral.url)
        env = {**os.environ, "CORRAL_KEY": other}
        result = subprocess.run([str(hooks / "PostToolUse")], input="{}", capture_output=True, text=True, timeout=60,
                                env=env)
    assert json.loads(result.stdout) == {"cancel": False}
    assert corral.requests[0][1]["Authorization"] == f"Bearer {other}"
