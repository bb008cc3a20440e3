"""The `corral` command line against a running server, as an administrator would use it."""

import json

from tests.conftest import unique


def test_create_a_team_a_user_and_a_key_then_use_the_key(server):
    team, email = unique("cli"), f"{unique('cli')}@example.com"
    assert "created team" in server.cli("admin", "team", "create", team, "--description", "CLI made", check=True).stdout
    created = server.cli("admin", "user", "create", email, "--team", team, "--role", "developer", check=True)
    assert f"created user {email}" in created.stdout
    key = server.cli("admin", "key", "create", "--user", email, "--quiet", check=True).stdout.strip()
    assert key.startswith("ck_") and "\n" not in key
    whoami = server.cli("whoami", "--json", key=key, check=True)
    me = json.loads(whoami.stdout)
    assert me["email"] == email and me["teams"] == [team] and me["roles"] == ["developer"]


def test_key_create_prints_the_key_on_the_last_line(server, make_user):
    email, _ = make_user(key=False)
    result = server.cli("admin", "key", "create", "--user", email, "--name", "ci", "--expires-in", "30d", check=True)
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("ck_") and len(lines[-1]) == 52
    assert "shown only this once" in result.stdout


def test_a_revoked_key_gets_a_clear_error_and_exit_1(server, make_user):
    email, key = make_user()
    keys = json.loads(server.cli("admin", "key", "list", "--user", email, "--json", check=True).stdout)
    server.cli("admin", "key", "revoke", str(keys[0]["id"]), check=True)
    result = server.cli("whoami", key=key)
    assert result.returncode == 1
    assert result.stderr.startswith("corral: API key ck_") and "revoked" in result.stderr


def test_rotate_prints_a_new_key_that_works(server, make_user):
    email, old = make_user()
    keys = json.loads(server.cli("admin", "key", "list", "--user", email, "--json", check=True).stdout)
    new = server.cli("admin", "key", "rotate", str(keys[0]["id"]), "--grace", "0s", "--quiet", check=True).stdout.strip()
    assert server.cli("whoami", key=new).returncode == 0
    assert server.cli("whoami", key=old).returncode == 1


def test_grant_and_revoke_role(server, make_user):
    email, _ = make_user(key=False)
    assert "approver" in server.cli("admin", "user", "grant", email, "--role", "approver", check=True).stdout
    users = json.loads(server.cli("admin", "user", "list", "--json", check=True).stdout)
    assert next(u for u in users if u["email"] == email)["roles"] == ["approver", "developer"]
    server.cli("admin", "user", "revoke-role", email, "approver", check=True)
    users = json.loads(server.cli("admin", "user", "list", "--json", check=True).stdout)
    assert next(u for u in users if u["email"] == email)["roles"] == ["developer"]


def test_listings_print_tables_and_json(server):
    table = server.cli("admin", "team", "list", check=True).stdout
    assert "platform" in table and "members" in table
    teams = json.loads(server.cli("admin", "team", "list", "--json", check=True).stdout)
    assert {"platform", "payments", "contractors"} <= {team["name"] for team in teams}
    page = json.loads(server.cli("events", "list", "--kind", "admin.*", "--limit", "3", "--json", check=True).stdout)
    assert len(page["events"]) == 3 and page["next"] is not None


def test_wrong_input_gets_one_actionable_line(server):
    no_such = server.cli("admin", "user", "grant", "nobody@example.com", "--role", "approver")
    assert no_such.returncode == 1 and "no user 'nobody@example.com'" in no_such.stderr
    bad_duration = server.cli("admin", "key", "create", "--user", "alice@example.com", "--expires-in", "soon")
    assert bad_duration.returncode == 1 and "not a duration" in bad_duration.stderr
    bad_scope = server.cli("admin", "key", "create", "--user", "alice@example.com", "--scope", "root")
    assert bad_scope.returncode == 1 and "unknown scope 'root'" in bad_scope.stderr


def test_no_key_and_no_server_are_explained(server, tmp_path):
    import os
    import subprocess

    from tests.conftest import CORRAL, free_port

    env = {k: v for k, v in os.environ.items() if k != "CORRAL_KEY"}
    no_key = subprocess.run([CORRAL, "whoami"], env={**env, "CORRAL_URL": server.url},
                            capture_output=True, text=True, timeout=60)
    assert no_key.returncode == 1 and "set CORRAL_KEY" in no_key.stderr
    nowhere = subprocess.run([CORRAL, "whoami"], env={**env, "CORRAL_URL": f"http://127.0.0.1:{free_port()}",
                                                      "CORRAL_KEY": server.admin_key},
                             capture_output=True, text=True, timeout=60)
    assert nowhere.returncode == 1 and "cannot reach Corral" in nowhere.stderr
