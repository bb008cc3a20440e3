"""The policy surfaces against a real server on each database: deciding from outside, the
approval chain (propose, approve, reject, activate, rollback, emergency), overrides, and the
attacks on them. Each backend gets its own fresh demo server, since these tests change the
active policy."""

import json
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, own_database, start_server, stop_server, unique

DEMO = (Path(__file__).parent.parent / "corral/policy/demo.yaml").read_text()


class Org:
    """A fresh demo server and a `policy`-scoped key for each demo person."""

    def __init__(self, server_url, admin_key, cli):
        self.url, self.admin_key, self._cli = server_url, admin_key, cli
        self.keys = {}

    def key(self, name):
        if name not in self.keys:
            created = self.call("admin", "POST", "/keys", json={"user": f"{name}@example.com",
                                                                 "scopes": ["policy", "read", "gateway"]})
            assert created.status_code == 201, created.text
            self.keys[name] = created.json()["key"]
        return self.keys[name]

    def call(self, who, method, path, **kwargs):
        import httpx

        key = self.admin_key if who == "admin" else self.key(who)
        return httpx.request(method, self.url + "/api/v1" + path, headers={"Authorization": f"Bearer {key}"},
                             timeout=30, **kwargs)

    def cli(self, who, *args):
        return self._cli(*args, key=None if who == "admin" else self.key(who))

    def propose(self, who, document, message="a change"):
        return self.call(who, "POST", "/policy/versions", json={"document": document, "message": message})

    def decide(self, who, action, resource, **extra):
        response = self.call(who, "POST", "/decide", json={"action": action, "resource": resource, **extra})
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module", params=BACKENDS)
def org(request, tmp_path_factory):
    import os
    import subprocess

    from corral.identity.tokens import generate_key
    from tests.conftest import CORRAL

    data_dir = tmp_path_factory.mktemp(f"policy-{request.param}")
    admin_key = generate_key()
    with own_database(request.param, data_dir) as database_url:
        process, url, _ = start_server(data_dir, database_url, {"CORRAL_ADMIN_KEY": admin_key}, demo=True)

        def cli(*args, key=None):
            env = {**os.environ, "CORRAL_URL": url, "CORRAL_KEY": key or admin_key, "COLUMNS": "200"}
            return subprocess.run([CORRAL, *args], env=env, capture_output=True, text=True, timeout=60)

        try:
            yield Org(url, admin_key, cli)
        finally:
            stop_server(process)


def edited(document, old, new):
    assert old in document
    return document.replace(old, new)


def active(org):
    return org.call("admin", "GET", "/policy").json()


def test_ls_and_rm_is_denied_by_no_destructive_commands(org):
    decision = org.decide("alice", "command.exec", "ls && rm -rf /")
    assert decision["effect"] == "deny" and decision["rules"] == ["no-destructive-commands"]
    assert [(p["resource"], p["effect"]) for p in decision["parts"]] == [("ls", "allow"), ("rm -rf /", "deny")]
    result = org.cli("admin", "policy", "decide", "--as", "alice@example.com", "--action", "command.exec",
                     "--resource", "ls && rm -rf /", "--json")
    assert json.loads(result.stdout)["rules"] == ["no-destructive-commands"]


def test_a_contractors_mutating_tool_call_is_denied(org):
    decision = org.decide("carol", "tool.call", "tracker/create_issue", tool_annotations={"destructiveHint": False})
    assert (decision["effect"], decision["rules"]) == ("deny", ["contractors-no-mutating-tools"])
    assert org.decide("alice", "tool.call", "tracker/create_issue",
                      tool_annotations={"destructiveHint": False})["effect"] == "confirm"


def test_explain_lists_every_rule_considered(org):
    result = org.cli("admin", "policy", "explain", "--as", "carol@example.com", "--action", "tool.call",
                     "--resource", "everything/echo")
    assert result.returncode == 0, result.stderr
    assert "contractors-no-mutating-tools" in result.stdout and "class is not mutating or destructive" in result.stdout
    assert "=> allow  (read-only-tools)" in result.stdout


def test_deciding_as_someone_else_needs_admin_or_auditor(org):
    response = org.call("alice", "POST", "/decide", json={"action": "tool.call", "resource": "a/b",
                                                          "user": "bob@example.com"})
    assert response.status_code == 403
    dana = org.call("admin", "POST", "/keys", json={"user": "dana@example.com", "scopes": ["read"]}).json()["key"]
    import httpx

    response = httpx.post(org.url + "/api/v1/decide", headers={"Authorization": f"Bearer {dana}"},
                          json={"action": "llm.request", "resource": "release-safe", "user": "carol@example.com"})
    assert response.json()["rules"] == ["contractors-no-release-profile"]


def test_bad_decide_requests_get_clear_errors(org):
    response = org.call("alice", "POST", "/decide", json={"action": "shell", "resource": "ls"})
    assert response.status_code == 400 and "actions are llm.request" in response.json()["error"]["message"]
    result = org.cli("alice", "policy", "decide", "--action", "shell", "--resource", "ls")
    assert result.returncode == 1 and result.stderr.startswith("corral: unknown action 'shell'")


def test_the_approval_chain_from_proposal_to_activation(org):
    before = active(org)["version"]
    document = edited(active(org)["document"], "limit_usd: 50}", "limit_usd: 45}")
    proposed = org.propose("bob", document, "tighten the daily cap")
    assert proposed.status_code == 201, proposed.text
    version = proposed.json()["version"]
    assert proposed.json()["changed_sections"] == ["budgets"]

    own = org.call("bob", "POST", f"/policy/versions/{version}/approve")
    assert own.status_code == 403 and "author" in own.json()["error"]["message"]
    assert org.call("evan", "POST", f"/policy/versions/{version}/approve").status_code == 200
    again = org.call("evan", "POST", f"/policy/versions/{version}/approve")
    assert again.status_code == 409 and "distinct" in again.json()["error"]["message"]
    early = org.call("bob", "POST", f"/policy/versions/{version}/activate")
    assert early.status_code == 409
    assert "needs 2 approvals from role:approver; it has 1" in early.json()["error"]["message"]

    assert org.call("sam", "POST", f"/policy/versions/{version}/approve").status_code == 200
    activated = org.call("bob", "POST", f"/policy/versions/{version}/activate")
    assert activated.status_code == 200, activated.text
    assert active(org)["version"] == version and "limit_usd: 45}" in active(org)["document"]

    kinds = {(e["kind"], e["user_email"]) for e in org.call("admin", "GET", "/events", params={
        "kind": "policy.*", "limit": 50}).json()["events"] if e["resource"] == f"policy:v{version}"}
    assert kinds == {("policy.proposed", "bob@example.com"), ("policy.approved", "evan@example.com"),
                     ("policy.approved", "sam@example.com"), ("policy.activated", "bob@example.com")}
    history = org.call("admin", "GET", "/policy/versions").json()["versions"]
    assert [v["status"] for v in history if v["version"] in (before, version)] == ["active", "retired"]


def test_a_change_to_a_guarded_section_needs_that_sections_approvers(org):
    document = edited(active(org)["document"], 'demo:   {kind: mock,', 'demo:   {kind: mock, timeout_s: 5,')
    version = org.propose("bob", document).json()["version"]
    for approver in ("evan", "sam"):
        assert org.call(approver, "POST", f"/policy/versions/{version}/approve").status_code == 200
    refused = org.call("bob", "POST", f"/policy/versions/{version}/activate")
    assert refused.status_code == 409
    assert "the providers section needs 2 approvals from team:security; it has 1" in refused.json()["error"]["message"]
    rejected = org.call("bob", "POST", f"/policy/versions/{version}/reject", json={"comment": "withdrawn"})
    assert rejected.json()["status"] == "rejected"
    assert org.call("bob", "POST", f"/policy/versions/{version}/activate").status_code == 409


def test_a_proposal_made_against_an_older_version_cannot_be_activated(org):
    base = active(org)["document"]
    first = org.propose("bob", edited(base, "rpm: 60", "rpm: 59")).json()["version"]
    second = org.propose("evan", edited(base, "rpm: 60", "rpm: 58")).json()["version"]
    for approver in ("evan", "sam"):
        org.call(approver, "POST", f"/policy/versions/{first}/approve")
    for approver in ("bob", "sam"):
        org.call(approver, "POST", f"/policy/versions/{second}/approve")
    assert org.call("bob", "POST", f"/policy/versions/{first}/activate").status_code == 200
    stale = org.call("evan", "POST", f"/policy/versions/{second}/activate")
    assert stale.status_code == 409 and "propose the change again" in stale.json()["error"]["message"]


def test_rollback_is_a_new_proposal_through_the_same_chain(org):
    history = org.call("admin", "GET", "/policy/versions").json()["versions"]
    first = min(v["version"] for v in history)
    restored = org.call("bob", "POST", f"/policy/versions/{first}/restore", json={"message": "back to the start"})
    assert restored.status_code == 201 and restored.json()["status"] == "proposed"
    assert restored.json()["rollback_of"] == first
    shown = org.call("admin", "GET", f"/policy/versions/{restored.json()['version']}").json()
    assert shown["document"] == DEMO and shown["message"] == f"rollback to v{first}: back to the start"
    diff = org.cli("admin", "policy", "diff", str(shown["base_version"]), str(shown["version"]))
    assert "-  - {scope: \"user:*\", rpm: 59, tpm: 400000}" in diff.stdout


def test_emergency_activation_is_flagged_until_two_approvers_review_it(org):
    document = edited(active(org)["document"], "tpm: 400000", "tpm: 300000")
    version = org.propose("admin", document, "provider melting").json()["version"]
    refused = org.call("bob", "POST", f"/policy/versions/{version}/activate", json={"emergency": True, "message": "x"})
    assert refused.status_code == 403
    result = org.cli("admin", "policy", "activate", str(version), "--emergency", "-m", "incident 7: cap tokens now")
    assert result.returncode == 0, result.stderr
    assert "2 approvers must review it" in result.stdout
    assert org.call("bob", "POST", f"/policy/versions/{version}/approve").json()["reviews_needed"] == 1
    assert org.call("evan", "POST", f"/policy/versions/{version}/approve").json()["reviews_needed"] == 0
    history = org.cli("admin", "policy", "history").stdout
    assert "(emergency)" in history


def test_the_author_of_an_emergency_change_cannot_review_it(org):
    document = edited(active(org)["document"], "period: month", "period: week")
    version = org.propose("bob", document, "hot fix").json()["version"]
    activated = org.call("admin", "POST", f"/policy/versions/{version}/activate",
                         json={"emergency": True, "message": "incident 9"})
    assert activated.json()["reviews_needed"] == 2
    own = org.call("bob", "POST", f"/policy/versions/{version}/approve")
    assert own.status_code == 403 and "its author" in own.json()["error"]["message"]
    assert org.call("sam", "POST", f"/policy/versions/{version}/approve").json()["reviews_needed"] == 1


@pytest.mark.parametrize("document, problem", [
    ("version: 1\nrules: &a [*a]\n", "proposal:2:8: anchors and aliases"),
    ("version: 1\nx: " + "[" * 3000, "nested deeper than 20 levels"),
])
def test_hostile_yaml_is_refused_quickly_and_cleanly(org, document, problem):
    response = org.propose("bob", document)
    assert response.status_code == 400 and problem in response.json()["error"]["message"]


def test_a_huge_command_line_is_refused_or_decided_without_stalling(org):
    too_long = org.call("alice", "POST", "/decide", json={"action": "command.exec", "resource": "ls " + "x" * 17000})
    assert too_long.status_code == 422
    line = " ".join(["ls $(ls)"] * 1500)[:16000]
    decision = org.decide("alice", "command.exec", line)
    assert decision["effect"] == "confirm" and "parser" in decision["rules"]


def test_only_approvers_and_admins_change_policy(org):
    document = edited(active(org)["document"], "soft_at: 0.8", "soft_at: 0.7")
    assert org.propose("alice", document).status_code == 403
    version = org.propose("bob", document).json()["version"]
    assert org.call("alice", "POST", f"/policy/versions/{version}/approve").status_code == 403
    assert org.call("carol", "POST", f"/policy/versions/{version}/reject", json={"comment": "no"}).status_code == 403
    import httpx

    read_only_key = org.call("admin", "POST", "/keys", json={"user": "evan@example.com", "scopes": ["read"]}).json()["key"]
    response = httpx.post(f"{org.url}/api/v1/policy/versions/{version}/approve",
                          headers={"Authorization": f"Bearer {read_only_key}"})
    assert response.status_code == 403 and "'policy'" in response.json()["error"]["message"]


def test_an_invalid_proposal_reports_where_the_problems_are(org, tmp_path):
    bad = edited(DEMO, "effect: deny\n    action: command.exec", "effect: refuse\n    action: command.exec")
    response = org.propose("bob", bad)
    assert response.status_code == 400
    assert "proposal:33:13: rules[0].effect: Input should be" in response.json()["error"]["message"]
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    result = org.cli("bob", "policy", "validate", str(path))
    assert result.returncode == 1 and result.stderr.startswith(f"{path}:33:13: rules[0].effect")
    assert org.cli("bob", "policy", "propose", str(path), "-m", "x").returncode == 1


def test_an_override_changes_decisions_until_removed(org):
    assert org.decide("alice", "command.exec", "npm test")["effect"] == "confirm"
    result = org.cli("omar", "override", "add", "read_only", "--target", "team:platform", "--ttl", "2h",
                     "-m", "incident 12: runaway agent", "--json")
    assert result.returncode == 0, result.stderr
    override = json.loads(result.stdout)
    decision = org.decide("alice", "command.exec", "npm test")
    assert decision["effect"] == "deny" and decision["rules"] == [f"override:{override['id']}"]
    assert org.decide("alice", "command.exec", "git status")["effect"] == "allow"
    assert org.decide("priya", "command.exec", "npm test")["effect"] == "confirm"  # payments is not covered
    listed = json.loads(org.cli("alice", "override", "list", "--json").stdout)
    assert [o["id"] for o in listed] == [override["id"]]
    assert org.cli("omar", "override", "remove", str(override["id"])).returncode == 0
    assert org.decide("alice", "command.exec", "npm test")["effect"] == "confirm"
    kinds = [e["kind"] for e in org.call("admin", "GET", "/events", params={"kind": "override.*"}).json()["events"]
             if e["resource"] == f"override:{override['id']}"]
    assert kinds == ["override.removed", "override.added"]


def test_an_override_for_a_person_matches_their_email_whatever_its_case(org):
    created = org.call("omar", "POST", "/overrides", json={"kind": "read_only", "target": "user:Alice@Example.com",
                                                           "ttl_seconds": 600, "reason": "drill"})
    assert created.status_code == 201 and created.json()["target"] == "user:alice@example.com"
    assert org.decide("alice", "file.write", "notes.txt")["effect"] == "deny"
    org.call("omar", "DELETE", f"/overrides/{created.json()['id']}")
    assert org.decide("alice", "file.write", "notes.txt")["effect"] == "confirm"


def test_switch_profile_reroutes_to_the_fallback(org):
    created = org.call("omar", "POST", "/overrides", json={"kind": "switch_profile", "target": "dev-fast",
                                                           "params": {"to": "demo/echo"},
                                                           "ttl_seconds": 600, "reason": "openai outage"})
    assert created.status_code == 201, created.text
    assert org.decide("alice", "llm.request", "dev-fast")["obligations"]["targets"] == ["demo/echo"]
    org.call("omar", "DELETE", f"/overrides/{created.json()['id']}")
    assert org.decide("alice", "llm.request", "dev-fast")["obligations"]["targets"] == ["openai/gpt-5-mini", "demo/echo"]


@pytest.mark.parametrize("body, message", [
    ({"kind": "allow_everything", "target": "org"}, "unknown override kind 'allow_everything'"),
    ({"kind": "read_only", "target": "everyone"}, "read_only needs --target who"),
    ({"kind": "disable_server", "target": "ghost"}, "no MCP server named 'ghost'"),
    ({"kind": "switch_profile", "target": "release-safe"}, "has no fallback target"),
    ({"kind": "limit_workload", "target": "org", "params": {"max_tokens": -5}}, "max_tokens must be a positive whole"),
    ({"kind": "limit_workload", "target": "org", "params": {"allow": True}}, "does not take 'allow'"),
    ({"kind": "limit_workload", "target": "org", "params": {"denied_modes": [{}]}}, "denied_modes must be a non-empty list"),
    ({"kind": "scope_tasks", "target": "org", "params": {"max_cost_usd": "NaN"}}, "max_cost_usd must be a positive number"),
    ({"kind": "switch_profile", "target": "dev-fast", "params": {"to": "claude/claude-sonnet-4-5"}},
     "to must be one of the fallback targets of 'dev-fast': demo/echo"),
    ({"kind": "read_only", "target": "user:*"}, "read_only needs --target who"),
    ({"kind": "read_only", "target": "team:nosuchteam"}, "no team 'nosuchteam'"),
    ({"kind": "read_only", "target": "user:ghost@example.com"}, "no user 'ghost@example.com'"),
])
def test_bad_overrides_are_refused_with_a_reason(org, body, message):
    response = org.call("omar", "POST", "/overrides", json={"ttl_seconds": 600, "reason": "drill", "params": {}, **body})
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_only_admins_and_sres_add_overrides(org):
    body = {"kind": "read_only", "target": "org", "ttl_seconds": 600, "reason": "x"}
    assert org.call("alice", "POST", "/overrides", json=body).status_code == 403
    assert org.call("bob", "POST", "/overrides", json=body).status_code == 403
    too_long = org.call("omar", "POST", "/overrides", json={**body, "ttl_seconds": 8 * 86400})
    assert too_long.status_code == 422


def test_policy_declared_roles_can_be_granted(org):
    email = f"{unique('sre')}@example.com"
    response = org.call("admin", "POST", "/users", json={"email": email, "roles": ["sre"]})
    assert response.status_code == 201 and response.json()["roles"] == ["sre"]
    assert org.call("admin", "POST", "/users", json={"email": "x" + email, "roles": ["wizard"]}).status_code == 400
