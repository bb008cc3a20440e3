"""The REST API for teams, users, roles and keys, against a real `corral serve` on each database."""

from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import unique


def test_whoami_names_the_admin(server):
    with server.admin() as admin:
        me = admin.get("/api/v1/whoami").json()
    assert me["email"] == "admin@corral.local"
    assert me["roles"] == ["admin"] and me["scopes"] == ["admin"] and me["via"] == "key"


def test_an_admin_creates_a_team_a_user_and_a_key_that_works(server):
    team = unique("team")
    email = f"{unique('dev')}@Example.com"
    with server.admin() as admin:
        created = admin.post("/api/v1/teams", json={"name": team, "description": "builds things"})
        assert created.status_code == 201 and created.json()["name"] == team
        user = admin.post("/api/v1/users", json={"email": email, "teams": [team], "roles": ["developer"]})
        assert user.status_code == 201
        assert user.json()["email"] == email.lower() and user.json()["teams"] == [team]
        key = admin.post("/api/v1/keys", json={"user": email, "name": "laptop"}).json()
    assert key["key"].startswith("ck_") and key["prefix"] == key["key"][:11]
    assert key["scopes"] == ["gateway", "ingest", "read"] and key["status"] == "active"
    with server.client(key["key"]) as client:
        me = client.get("/api/v1/whoami").json()
    assert me["email"] == email.lower() and me["teams"] == [team] and me["roles"] == ["developer"]


def test_a_duplicate_team_or_user_is_a_conflict(server, make_user):
    team = unique("team")
    email, _ = make_user(key=False)
    with server.admin() as admin:
        assert admin.post("/api/v1/teams", json={"name": team}).status_code == 201
        again = admin.post("/api/v1/teams", json={"name": team})
        assert again.status_code == 409 and "already exists" in again.json()["error"]["message"]
        assert admin.post("/api/v1/users", json={"email": email.upper()}).status_code == 409


def test_revoking_a_key_stops_it_on_the_next_request(server, make_user):
    email, key = make_user()
    with server.client(key) as client:
        assert client.get("/api/v1/whoami").status_code == 200
    with server.admin() as admin:
        key_id = admin.get("/api/v1/keys", params={"user": email}).json()["keys"][0]["id"]
        assert admin.post(f"/api/v1/keys/{key_id}/revoke").json()["status"] == "revoked"
    with server.client(key) as client:
        response = client.get("/api/v1/whoami")
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_user_can_revoke_their_own_key_but_not_someone_elses(server, make_user):
    mine_email, mine = make_user()
    _, theirs = make_user()
    with server.admin() as admin:
        their_id = admin.get("/api/v1/keys").json()["keys"][-1]["id"]
    with server.client(mine) as client:
        own = client.get("/api/v1/keys").json()["keys"]
        assert [key["user"] for key in own] == [mine_email]
        assert client.post(f"/api/v1/keys/{their_id}/revoke").status_code == 404  # as if it did not exist
        assert client.post(f"/api/v1/keys/{own[0]['id']}/revoke").status_code == 200
        assert client.get("/api/v1/whoami").status_code == 401
    with server.client(theirs) as client:
        assert client.get("/api/v1/whoami").status_code == 200


def test_an_expired_key_is_refused(server, make_user):
    email, _ = make_user(key=False)
    soon = datetime.now(timezone.utc) + timedelta(seconds=1)
    with server.admin() as admin:
        key = admin.post("/api/v1/keys", json={"user": email, "expires_at": soon.isoformat()}).json()["key"]
        past = admin.post("/api/v1/keys", json={"user": email, "expires_at": "2020-01-01T00:00:00Z"})
    assert past.status_code == 400 and "future" in past.json()["error"]["message"]
    import time

    time.sleep(max(0.0, (soon - datetime.now(timezone.utc)).total_seconds()) + 0.1)
    with server.client(key) as client:
        response = client.get("/api/v1/whoami")
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]


def test_rotation_gives_a_new_key_and_keeps_the_old_one_for_the_grace_period(server, make_user):
    email, old = make_user()
    with server.admin() as admin:
        old_id = admin.get("/api/v1/keys", params={"user": email}).json()["keys"][0]["id"]
        rotated = admin.post(f"/api/v1/keys/{old_id}/rotate", json={"grace_seconds": 3600})
        assert rotated.status_code == 201
        new = rotated.json()
        assert new["key"] != old and new["user"] == email
        again = admin.post(f"/api/v1/keys/{old_id}/rotate", json={"grace_seconds": 0})
        assert again.status_code == 409
        listed = {key["id"]: key for key in admin.get("/api/v1/keys", params={"user": email}).json()["keys"]}
    assert listed[old_id]["replaced_by"] == new["id"] and listed[old_id]["expires_at"] is not None
    for key in (old, new["key"]):
        with server.client(key) as client:
            assert client.get("/api/v1/whoami").status_code == 200


def test_rotation_without_grace_ends_the_old_key_at_once(server, make_user):
    email, old = make_user()
    with server.admin() as admin:
        old_id = admin.get("/api/v1/keys", params={"user": email}).json()["keys"][0]["id"]
        new = admin.post(f"/api/v1/keys/{old_id}/rotate", json={"grace_seconds": 0}).json()["key"]
    with server.client(old) as client:
        assert client.get("/api/v1/whoami").status_code == 401
    with server.client(new) as client:
        assert client.get("/api/v1/whoami").status_code == 200


def test_roles_can_be_granted_and_revoked(server, make_user):
    email, _ = make_user(key=False)
    with server.admin() as admin:
        granted = admin.post(f"/api/v1/users/{email}/roles", json={"role": "approver"}).json()
        assert granted["roles"] == ["approver", "developer"]
        unknown = admin.post(f"/api/v1/users/{email}/roles", json={"role": "wizard"})
        assert unknown.status_code == 400 and "roles are admin" in unknown.json()["error"]["message"]
        assert admin.delete(f"/api/v1/users/{email}/roles/approver").json()["roles"] == ["developer"]
        assert admin.delete(f"/api/v1/users/{email}/roles/approver").status_code == 404


def test_disabling_a_user_stops_their_keys(server, make_user):
    email, key = make_user()
    with server.admin() as admin:
        assert admin.patch(f"/api/v1/users/{email}", json={"disabled": True}).json()["disabled"] is True
    with server.client(key) as client:
        assert client.get("/api/v1/whoami").status_code == 401
    with server.admin() as admin:
        admin.patch(f"/api/v1/users/{email}", json={"disabled": False})
    with server.client(key) as client:
        assert client.get("/api/v1/whoami").status_code == 200


def test_a_developer_cannot_administer(server, make_user):
    _, key = make_user()
    with server.client(key) as client:
        team = client.post("/api/v1/teams", json={"name": unique("team")})
        users = client.get("/api/v1/users")
    assert team.status_code == 403 and "scopes" in team.json()["error"]["message"]
    assert users.status_code == 403 and "'admin' or 'auditor' role" in users.json()["error"]["message"]


def test_an_admin_with_a_narrow_key_cannot_administer(server, make_user):
    email, _ = make_user(roles=("admin",), key=False)
    with server.admin() as admin:
        narrow = admin.post("/api/v1/keys", json={"user": email, "scopes": ["read"]}).json()["key"]
    with server.client(narrow) as client:
        assert client.get("/api/v1/users").status_code == 200
        assert client.post("/api/v1/teams", json={"name": unique("team")}).status_code == 403


def test_only_admins_get_admin_scoped_keys(server, make_user):
    email, _ = make_user(key=False)
    with server.admin() as admin:
        response = admin.post("/api/v1/keys", json={"user": email, "scopes": ["admin"]})
    assert response.status_code == 400 and "admin role" in response.json()["error"]["message"]


@pytest.mark.parametrize("credential, message", [
    (None, "missing credentials"),
    ("ck_short", "malformed API key"),
    ("Basic dXNlcjpwYXNz", "Bearer"),
])
def test_missing_or_malformed_credentials_are_401(server, credential, message):
    headers = {}
    if credential and credential.startswith("Basic"):
        headers["Authorization"] = credential
    elif credential:
        headers["Authorization"] = f"Bearer {credential}"
    import httpx

    response = httpx.get(server.url + "/api/v1/whoami", headers=headers)
    assert response.status_code == 401 and message in response.json()["error"]["message"]


def test_a_well_formed_but_unknown_key_is_401(server):
    from corral.identity.tokens import generate_key

    with server.client(generate_key()) as client:
        response = client.get("/api/v1/whoami")
    assert response.status_code == 401 and response.json()["error"]["message"] == "invalid API key"


def test_anthropic_style_x_api_key_is_accepted(server):
    import httpx

    response = httpx.get(server.url + "/api/v1/whoami", headers={"x-api-key": server.admin_key})
    assert response.status_code == 200


def test_malformed_json_unknown_fields_and_oversized_bodies_are_clear_4xx(server):
    with server.admin() as admin:
        broken = admin.post("/api/v1/teams", content=b'{"name": ', headers={"content-type": "application/json"})
        unknown = admin.post("/api/v1/teams", json={"name": unique("team"), "colour": "red"})
        huge = admin.post("/api/v1/teams", json={"name": unique("team"), "description": "x" * 70_000})
        bad_name = admin.post("/api/v1/teams", json={"name": "Bad Name!"})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
    assert unknown.status_code == 422 and "colour: unknown field" in unknown.json()["error"]["message"]
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "payload_too_large"
    assert bad_name.status_code == 400 and "not a valid team name" in bad_name.json()["error"]["message"]


def test_a_chunked_oversized_body_is_refused_too(server):
    def chunks():
        for _ in range(100):
            yield b"x" * 1024

    with server.admin() as admin:
        response = admin.post("/api/v1/teams", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_a_failed_request_leaves_nothing_half_written(server):
    email = f"{unique('ghost')}@example.com"
    with server.admin() as admin:
        response = admin.post("/api/v1/users", json={"email": email, "teams": ["no-such-team"]})
        assert response.status_code == 404 and "no team named" in response.json()["error"]["message"]
        assert admin.get(f"/api/v1/users/{email}").status_code == 404
        events = admin.get("/api/v1/events", params={"kind": "admin.user.created", "limit": 1000}).json()["events"]
    assert all(event["resource"] != f"user:{email}" for event in events)


def test_unknown_paths_and_methods_answer_in_the_rest_dialect(server):
    with server.admin() as admin:
        missing = admin.get("/api/v1/nope")
        wrong_method = admin.put("/api/v1/whoami")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert missing.headers["x-corral-request-id"]


def test_health_and_readiness(server):
    import httpx

    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz").json()
    assert ready == {"status": "ready", "database": server.backend}


def test_openapi_describes_the_api(server):
    import httpx

    spec = httpx.get(server.url + "/openapi.json").json()
    assert {"/api/v1/whoami", "/api/v1/teams", "/api/v1/users", "/api/v1/keys", "/api/v1/events"} <= set(spec["paths"])
    assert httpx.get(server.url + "/docs").status_code == 200


def test_an_agent_key_cannot_revoke_its_owners_keys(server, make_user):
    email, laptop = make_user()
    with server.admin() as admin:
        agent = admin.post("/api/v1/keys", json={"user": email, "scopes": ["gateway"]}).json()["key"]
        laptop_id = admin.get("/api/v1/keys", params={"user": email}).json()["keys"][0]["id"]
    with server.client(agent) as client:
        assert client.post(f"/api/v1/keys/{laptop_id}/revoke").status_code == 403
    with server.client(laptop) as client:
        assert client.get("/api/v1/whoami").status_code == 200


def test_a_developer_cannot_list_the_organisations_teams(server, make_user):
    _, key = make_user()
    with server.client(key) as client:
        assert client.get("/api/v1/teams").status_code == 403


def test_concurrent_rotations_of_one_key_leave_one_successor(server, make_user):
    from concurrent.futures import ThreadPoolExecutor

    email, _ = make_user()
    with server.admin() as admin:
        key_id = admin.get("/api/v1/keys", params={"user": email}).json()["keys"][0]["id"]

    def rotate(_):
        with server.admin() as admin:
            return admin.post(f"/api/v1/keys/{key_id}/rotate", json={"grace_seconds": 60}).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(rotate, range(6)))
    assert statuses == [201] + [409] * 5
    with server.admin() as admin:
        active = admin.get("/api/v1/keys", params={"user": email}).json()["keys"]
    assert len(active) == 2  # the old key in its grace period and exactly one new key


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/api/v1/keys/9223372036854775808/revoke", None),
    ("POST", "/api/v1/keys/2147483648/rotate", None),
    ("GET", "/api/v1/events?before=99999999999999999999", None),
    ("GET", "/api/v1/events?since=9999-12-31T23:59:59-01:00", None),
    ("GET", "/api/v1/events?since=0001-01-01T00:00:00%2B01:00", None),
    ("POST", "/api/v1/keys", {"user": "alice@example.com", "expires_at": "9999-12-31T23:59:59-01:00"}),
    ("POST", "/api/v1/keys/1/rotate", {"grace_seconds": 99999999999999}),
    ("GET", "/api/v1/users/a%00b@x.com", None),
    ("GET", "/api/v1/events?kind=a%00", None),
    ("POST", "/api/v1/teams", {"name": "nul", "description": "a\u0000b"}),
    ("POST", "/api/v1/users", {"email": "a/b@example.com"}),
    ("POST", "/api/v1/users", {"email": "dup@example.com", "teams": ["platform", "Platform"]}),
])
def test_out_of_range_and_odd_input_is_a_4xx(server, method, path, body):
    with server.admin() as admin:
        response = admin.request(method, path, json=body)
    if body and body.get("teams"):  # a repeated team is one membership, not an error
        assert response.status_code == 201 and response.json()["teams"] == ["platform"]
        return
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["message"]
