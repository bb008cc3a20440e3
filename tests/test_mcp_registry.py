"""The MCP gateway in front of MCP servers as they are published: the reference servers from npm
(`@modelcontextprotocol/server-filesystem` and `server-everything`, over stdio and SSE, run with
npx) and `mcp-server-time` / `mcp-server-git` from PyPI. Their own annotations classify their
tools (the servers are marked `trust_annotations`), so a write is held for approval and a read
goes through, and what they do is checked on disk."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from mcp import MCPError

from corral.identity.tokens import generate_key
from tests.conftest import free_port, listening, own_database, start_server, stop_server
from tests.test_mcp_gateway import admin, call, names, pending_for, person, run, text

BIN = Path(sys.executable).parent
NPX = shutil.which("npx")
pytestmark = pytest.mark.skipif(NPX is None, reason="npx (Node.js) is not installed")

POLICY = """
version: 1
default: deny
defaults: {{tool.call: allow}}
teams:
  contractors: {{roles: [contractor]}}
mcp_servers:
  files:      {{command: "{npx}", args: ["-y", "@modelcontextprotocol/server-filesystem", "{root}"],
                trust_annotations: true, timeout_s: 120, approval_wait_s: 30}}
  everything: {{command: "{npx}", args: ["-y", "@modelcontextprotocol/server-everything"], trust_annotations: true,
                timeout_s: 120}}
  remote:     {{url: "http://127.0.0.1:{sse_port}/sse", transport: sse, trust_annotations: true, timeout_s: 60}}
  time:       {{command: "{bin}/mcp-server-time", args: ["--local-timezone", "UTC"], trust_annotations: true,
                probe: {{tool: get_current_time, arguments: {{timezone: UTC}}}}}}
  git:        {{command: "{bin}/mcp-server-git", args: ["--repository", "{repo}"], trust_annotations: true}}
rules:
  - id: contractors-only-read-tools
    effect: deny
    action: tool.call
    when: {{team: contractors, class: [mutating, destructive]}}
  - id: destructive-tools-need-approval
    effect: approve
    action: tool.call
    when: {{class: destructive}}
"""


@pytest.fixture(scope="module")
def sse_server():
    """server-everything over its SSE transport, as a remote server would be."""
    port = free_port()
    with listening([NPX, "-y", "@modelcontextprotocol/server-everything", "sse"], f"http://127.0.0.1:{port}/",
                   timeout=120, env={"PORT": str(port)}):  # npx may fetch the package first
        yield port


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, sse_server):
    data_dir = tmp_path_factory.mktemp("mcp-registry")
    root = data_dir / "files"
    root.mkdir()
    (root / "readme.txt").write_text("hello from disk\n")
    repo = data_dir / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "a.txt").write_text("one\n")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    policy = data_dir / "policy.yaml"
    policy.write_text(POLICY.format(npx=NPX, root=root, sse_port=sse_server, bin=BIN, repo=repo))
    admin_key = generate_key()
    with own_database("sqlite", data_dir) as database_url:
        process, url, log_path = start_server(data_dir, database_url, {"CORRAL_ADMIN_KEY": admin_key,
                                                                       "CORRAL_POLICY": str(policy)})
        try:
            yield {"url": url, "admin": admin_key, "log": log_path, "root": root, "repo": repo}
        finally:
            stop_server(process)


def test_filesystem_reads_pass_and_writes_wait_for_approval(gateway):
    email, key = person(gateway)
    _, approver_key = person(gateway, roles=("approver",))
    readme = str(gateway["root"] / "readme.txt")
    assert text(run(call(gateway, key, "files__read_text_file", {"path": readme}), timeout=180)) \
        == "hello from disk\n"
    target = gateway["root"] / "new.txt"
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(
        result=run(call(gateway, key, "files__write_file", {"path": str(target), "content": "approved\n"}))))
    thread.start()
    [pending] = pending_for(gateway, email)
    assert pending["tool"] == "write_file" and pending["tool_class"] == "destructive"  # the server's own hint
    assert not target.exists()
    approved = httpx.post(gateway["url"] + f"/api/v1/approvals/{pending['id']}/approve", json={},
                          headers={"Authorization": f"Bearer {approver_key}"}, timeout=10)
    assert approved.status_code == 200, approved.text
    thread.join(60)
    assert "Successfully wrote" in text(outcome["result"]) and target.read_text() == "approved\n"


def test_contractor_sees_only_the_filesystems_read_tools(gateway):
    _, key = person(gateway, teams=["contractors"])
    listed = run(names(gateway, key, "/mcp/files"), timeout=180)
    # server-filesystem marks these readOnlyHint: true; write_file, edit_file, move_file and
    # create_directory are not
    assert listed == sorted(["read_file", "read_text_file", "read_media_file", "read_multiple_files",
                             "list_directory", "list_directory_with_sizes", "directory_tree", "search_files",
                             "get_file_info", "list_allowed_directories"])
    with pytest.raises(MCPError) as refused:
        run(call(gateway, key, "create_directory", {"path": str(gateway["root"] / "d")}, path="/mcp/files"))
    assert "contractors-only-read-tools" in refused.value.message


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_pypi_servers_through_both_protocol_revisions(gateway, mode):
    _, key = person(gateway)
    now = run(call(gateway, key, "time__get_current_time", {"timezone": "UTC"}, mode=mode))
    assert '"timezone": "UTC"' in text(now) or '"timezone":"UTC"' in text(now)
    status = run(call(gateway, key, "git__git_status", {"repo_path": str(gateway["repo"])}, mode=mode))
    assert "nothing to commit" in text(status) or "working tree clean" in text(status)


def test_git_commit_is_mutating_and_ledgered(gateway):
    email, key = person(gateway)
    (gateway["repo"] / "b.txt").write_text("two\n")
    run(call(gateway, key, "git__git_add", {"repo_path": str(gateway["repo"]), "files": ["b.txt"]}))
    # git_commit: readOnlyHint false, destructiveHint false -> mutating: allowed, and ledgered
    run(call(gateway, key, "git__git_commit", {"repo_path": str(gateway["repo"]), "message": "second"}))
    log = subprocess.run(["git", "-C", str(gateway["repo"]), "log", "--format=%s"], capture_output=True, text=True)
    assert log.stdout.split() == ["second", "first"]
    records = httpx.get(gateway["url"] + "/api/v1/audit/records", params={"actor": email},
                        headers=admin(gateway), timeout=10).json()["records"]
    assert [(r["resource"], r["outcome"]) for r in records] == [
        ("git/git_add", "forwarded"), ("git/git_add", "ok"), ("git/git_commit", "forwarded"), ("git/git_commit", "ok")]


def test_everything_over_sse_and_resources_and_prompts_pass_through(gateway):
    _, key = person(gateway)
    assert text(run(call(gateway, key, "remote__echo", {"message": "over sse"}))) == "Echo: over sse"

    async def browse():
        from tests.test_mcp_gateway import connect

        async with connect(gateway, key, "/mcp/everything") as client:
            resources = (await client.list_resources()).resources
            read = await client.read_resource(str(resources[0].uri))
            prompts = [prompt.name for prompt in (await client.list_prompts()).prompts]
            prompt = await client.get_prompt("simple-prompt")
            return resources, read, prompts, prompt

    resources, read, prompts, prompt = run(browse(), timeout=180)
    assert resources and read.contents
    assert "simple-prompt" in prompts and prompt.messages


def test_check_calls_the_probe_tool(gateway):
    checked = httpx.post(gateway["url"] + "/api/v1/mcp/servers/time/check", headers=admin(gateway), timeout=60)
    assert checked.status_code == 200, checked.text
    steps = {step["step"]: step for step in checked.json()["steps"]}
    assert checked.json()["passed"] and steps["probe get_current_time"]["passed"]
    assert steps["tools/list"]["detail"] == "2 tools"
