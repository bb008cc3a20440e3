"""`corral connect` against a real server on each database, with the policy of
tests/test_clients_compile.py: files written with the right modes and a personal key that works,
who may connect whom, an existing key reused, and drift: a file just written is current; a local
edit, a revoked key and a policy change each make `corral connect --check` exit 1 naming what
differs."""

import json
import os
import stat
import subprocess

import httpx
import pytest

from corral.cli.connect import write_files
from corral.identity.tokens import generate_key
from tests.conftest import BACKENDS, CORRAL, own_database, start_server, stop_server, unique
from tests.test_clients_compile import POLICY


class Corral:
    def __init__(self, url, admin_key):
        self.url, self.admin_key = url, admin_key

    def call(self, method, path, key=None, **kwargs):
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=30, **kwargs)

    def cli(self, *args, key=None, cwd=None):
        env = {**os.environ, "CORRAL_URL": self.url, "CORRAL_KEY": key or self.admin_key, "COLUMNS": "200"}
        return subprocess.run([CORRAL, *args], env=env, capture_output=True, text=True, timeout=60, cwd=cwd)

    def person(self, teams=(), scopes=("gateway", "ingest", "read")):
        """A new developer and a key of theirs: (email, key)."""
        email = f"{unique('dev')}@example.com"
        created = self.call("POST", "/users", json={"email": email, "teams": list(teams)})
        assert created.status_code == 201, created.text
        key = self.call("POST", "/keys", json={"user": email, "scopes": list(scopes)})
        assert key.status_code == 201, key.text
        return email, key.json()["key"]

    def activate(self, document, message):
        proposed = self.call("POST", "/policy/versions", json={"document": document, "message": message})
        assert proposed.status_code == 201, proposed.text
        version = proposed.json()["version"]
        assert self.call("POST", f"/policy/versions/{version}/approve").status_code == 200
        activated = self.call("POST", f"/policy/versions/{version}/activate")
        assert activated.status_code == 200, activated.text
        return version


@pytest.fixture(scope="module", params=BACKENDS)
def corral(request, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp(f"connect-{request.param}")
    policy = data_dir / "policy.yaml"
    policy.write_text(POLICY)
    admin_key = generate_key()
    with own_database(request.param, data_dir) as database_url:
        process, url, _ = start_server(data_dir, database_url, {"CORRAL_ADMIN_KEY": admin_key,
                                                                "CORRAL_POLICY": str(policy)})
        try:
            server = Corral(url, admin_key)
            assert server.call("POST", "/teams", json={"name": "contractors"}).status_code == 201
            yield server
        finally:
            stop_server(process)


def mode_of(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_connect_roo_writes_private_files_with_a_new_key_that_works(corral, tmp_path):
    email, _ = corral.person()
    result = corral.cli("connect", "roo", "--user", email, "--out", str(tmp_path / "roo"), "--roomodes")
    assert result.returncode == 0, result.stderr
    assert f"Roo Code for {email} from policy version 1, with a new key ck_" in result.stdout
    assert f'"roo-cline.autoImportSettingsPath": "{tmp_path / "roo" / "roo-settings.json"}"' in result.stdout
    assert "rule everyday (allow command `sudo *`): not in allowedCommands" in result.stdout
    folder = tmp_path / "roo"
    assert {path.name: mode_of(path) for path in folder.iterdir()} == {
        "roo-settings.json": 0o600, "mcp_settings.json": 0o600, ".roomodes": 0o644}
    settings = json.loads((folder / "roo-settings.json").read_text())
    assert settings["globalSettings"]["allowedCommands"] == ["npm test", "ls"]
    assert settings["globalSettings"]["deniedCommands"] == ["rm -rf ", "git push --force"]
    profile = settings["providerProfiles"]["apiConfigs"]["corral-code"]
    assert profile["openAiBaseUrl"] == f"{corral.url}/v1"
    whoami = corral.call("GET", "/whoami", key=profile["openAiApiKey"]).json()
    assert (whoami["email"], whoami["scopes"]) == (email, ["gateway", "ingest"])


def test_connect_refuses_to_replace_a_different_file_and_takes_its_new_key_back(corral, tmp_path):
    email, _ = corral.person()
    assert corral.cli("connect", "claude-code", "--user", email, "--out", str(tmp_path)).returncode == 0
    again = corral.cli("connect", "claude-code", "--user", email, "--out", str(tmp_path))
    assert again.returncode == 1
    assert again.stderr.startswith(f"corral: {tmp_path / 'managed-settings.json'} exists and differs from what "
                                   "connect writes; move it away or use --force")
    assert "was revoked again" in again.stdout
    statuses = sorted(k["status"] for k in corral.call("GET", "/keys", params={"user": email,
                                                                                "include_inactive": True}).json()["keys"]
                      if k["name"] == "connect-claude-code")
    assert statuses == ["active", "revoked"]
    forced = corral.cli("connect", "claude-code", "--user", email, "--out", str(tmp_path), "--force")
    assert forced.returncode == 0 and "managed-settings.json (replaced, mode 0600)" in forced.stdout


def test_people_connect_themselves_with_a_key_they_have(corral):
    email, key = corral.person()
    answer = corral.call("POST", "/connect", key=key, json={"client": "cline", "key": key,
                                                            "url": "https://corral.example.com/"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["user"], body["key"]["created"]) == (email, False)
    files = {f["path"]: f for f in body["files"]}
    assert files["hooks/corral.key"]["content"] == key + "\n" and files["hooks/corral.key"]["mode"] == "0600"
    assert files["hooks/PreToolUse"]["mode"] == "0700"
    assert 'CORRAL_URL = "https://corral.example.com"' in files["hooks/PreToolUse"]["content"]
    assert body["next"][0].endswith("-m careful -b https://corral.example.com/v1")


def test_a_key_without_ingest_is_used_but_its_missing_telemetry_is_said(corral):
    email, key = corral.person(scopes=("gateway", "read"))
    answer = corral.call("POST", "/connect", key=key, json={"client": "claude-code", "key": key}).json()
    assert f"key {key[:11]} has no ingest scope, so Corral refuses the agent's OpenTelemetry export; connect " \
           "without --key for a key that has it" in answer["unexpressed"]


@pytest.mark.parametrize("case", ["someone else's key", "a revoked key", "a key without gateway", "not a key"])
def test_a_key_that_cannot_serve_the_agent_is_refused_in_words(corral, case):
    email, key = corral.person()
    given = {"someone else's key": lambda: corral.person()[1],
             "a revoked key": lambda: key,
             "a key without gateway": lambda: corral.call("POST", "/keys", json={"user": email, "scopes": ["read"]}
                                                          ).json()["key"],
             "not a key": lambda: "sk-not-corral"}[case]()
    if case == "a revoked key":
        key_id = corral.call("GET", "/keys", params={"user": email}).json()["keys"][0]["id"]
        assert corral.call("POST", f"/keys/{key_id}/revoke").status_code == 200
    answer = corral.call("POST", "/connect", json={"client": "roo", "user": email, "key": given})
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert {"someone else's key": f"the key you gave is not {email}'s",
            "a revoked key": f"the key you gave cannot be used (key {key[:11]} is revoked)",
            "a key without gateway": "has no gateway scope, which an agent needs",
            "not a key": "it is not a Corral key"}[case] in message


def test_only_admins_connect_someone_else_and_agents_connect_nobody(corral):
    email, key = corral.person()
    other, _ = corral.person()
    refused = corral.call("POST", "/connect", key=key, json={"client": "roo", "user": other})
    assert refused.status_code == 403
    assert refused.json() == {"error": {"code": "forbidden", "message": "only admins may connect or check someone "
                                                                       "else's agent; leave out the user to do your own"}}
    _, reader = corral.person(scopes=("read",))
    assert corral.call("POST", "/connect", key=reader, json={"client": "roo"}).status_code == 403
    made = corral.call("POST", "/connect", key=key, json={"client": "roo", "user": email})
    assert made.status_code == 200
    agent_key = json.loads(made.json()["files"][0]["content"])["providerProfiles"]["apiConfigs"]["corral-code"][
        "openAiApiKey"]
    again = corral.call("POST", "/connect", key=agent_key, json={"client": "roo"})  # an agent cannot make keys
    assert again.status_code == 403 and "do not include 'read'" in again.json()["error"]["message"]


def connect(corral, folder, client, email, force=False):
    """What `corral connect CLIENT --user EMAIL --out FOLDER` does, without starting a process."""
    answer = corral.call("POST", "/connect", json={"client": client, "user": email})
    assert answer.status_code == 200, answer.text
    write_files(folder, answer.json()["files"], force)
    return folder


def check(corral, path):
    answer = corral.call("POST", "/connect/check", json={"content": path.read_text(), "path": str(path)})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_file_just_written_is_current(corral, tmp_path):
    email, _ = corral.person()
    folder = connect(corral, tmp_path, "cline", email)
    checked = corral.cli("connect", "--check", str(folder / "hooks" / "PreToolUse"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == f"{folder / 'hooks' / 'PreToolUse'}: up to date with policy version 1"
    for name, kind in (("hooks/corral.key", "cline-key"), ("cline.env", "cline-env")):
        assert check(corral, folder / name) == {"current": True, "client": "cline", "file": kind, "user": email,
                                                "policy_version": 1, "differences": []}


def test_a_locally_edited_file_is_drift(corral, tmp_path):
    email, _ = corral.person()
    settings_file = connect(corral, tmp_path, "roo", email) / "roo-settings.json"
    settings = json.loads(settings_file.read_text())
    settings["globalSettings"]["alwaysAllowExecute"] = False
    settings_file.write_text(json.dumps(settings))
    checked = corral.cli("connect", "--check", str(settings_file), "--json")
    assert checked.returncode == 1
    assert json.loads(checked.stdout) == {
        "current": False, "client": "roo", "file": "roo-settings", "user": email, "policy_version": 1,
        "differences": ["globalSettings.alwaysAllowExecute: installed has false, policy gives true"]}


def test_a_file_whose_key_was_revoked_is_drift(corral, tmp_path):
    email, _ = corral.person()
    settings_file = connect(corral, tmp_path, "claude-code", email) / "managed-settings.json"
    key = json.loads(settings_file.read_text())["env"]["CORRAL_KEY"]
    (listed,) = [k for k in corral.call("GET", "/keys", params={"user": email}).json()["keys"]
                 if k["name"] == "connect-claude-code"]
    assert corral.call("POST", f"/keys/{listed['id']}/revoke").status_code == 200
    checked = corral.cli("connect", "--check", str(settings_file))
    assert checked.returncode == 1
    assert checked.stdout.splitlines() == [
        f"{settings_file} differs from what policy version 1 gives {email}:",
        f"  - the key in managed-settings.json cannot be used (key {key[:11]} is revoked): connect again for a new "
        "one"]


def test_checking_is_for_ones_own_files_unless_admin(corral, tmp_path):
    email, key = corral.person()
    _, other_key = corral.person()
    settings_file = connect(corral, tmp_path, "roo", email) / "roo-settings.json"
    mine = corral.call("POST", "/connect/check", key=key, json={"content": settings_file.read_text()})
    assert mine.status_code == 200 and mine.json()["current"] is True
    refused = corral.cli("connect", "--check", str(settings_file), key=other_key)
    assert refused.returncode == 1 and refused.stderr.startswith("corral: only admins may connect or check")


@pytest.mark.parametrize("args, message", [
    (["connect", "vscode"], "corral: unknown client 'vscode'; clients are roo, claude-code, cline"),
    (["connect"], "corral: say which agent to connect (roo, claude-code or cline), or --check FILE"),
    (["connect", "--check", "missing.json"], "corral: cannot read missing.json: No such file or directory"),
    (["connect", "--check", "notes.txt"], "corral: notes.txt is not a file `corral connect` writes: it is neither "
                                          "JSON nor YAML"),
    (["connect", "cline", "--check", "settings.json"], "corral: settings.json is a roo file, not a cline one"),
])
def test_wrong_input_gets_one_clear_line(corral, tmp_path, args, message):
    (tmp_path / "notes.txt").write_text("{not: json")
    (tmp_path / "settings.json").write_text('{"providerProfiles": {}}')
    result = corral.cli(*args, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_policy_change_is_drift_until_the_files_are_written_again(corral, tmp_path):
    email, _ = corral.person()
    roo = connect(corral, tmp_path / "roo", "roo", email) / "roo-settings.json"
    claude = connect(corral, tmp_path / "claude", "claude-code", email) / "managed-settings.json"
    changed = POLICY.replace('match: {command: ["rm -rf *", "git push --force*"]}',
                             'match: {command: ["rm -rf *", "git push --force*", "curl *"]}')
    version = corral.activate(changed, "no curl from agents")
    try:
        checked = corral.cli("connect", "--check", str(roo))
        assert checked.returncode == 1
        assert '  - globalSettings.deniedCommands: installed has ["rm -rf ", "git push --force"], policy gives ' \
               '["rm -rf ", "git push --force", "curl "]' in checked.stdout
        assert f"differs from what policy version {version} gives {email}:" in checked.stdout
        assert check(corral, claude)["differences"] == [
            'permissions.deny: installed has ["Bash(rm -rf *)", "Bash(git push --force*)", "Read(/.env)", '
            '"Read(/secrets/**)"], policy gives ["Bash(rm -rf *)", "Bash(git push --force*)", "Bash(curl *)", '
            '"Read(/.env)", "Read(/secrets/**)"]']
        connect(corral, tmp_path / "claude", "claude-code", email, force=True)
        assert check(corral, claude)["current"] is True
    finally:
        corral.activate(POLICY, "back to the policy the other tests read")
