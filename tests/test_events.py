"""Every admin change is an event; events are filtered, paginated, and private to their user
unless the reader is an auditor or admin."""

from datetime import datetime, timedelta, timezone

from tests.conftest import unique


def _events(client, **params):
    response = client.get("/api/v1/events", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_each_admin_change_records_an_event_naming_the_actor(server, make_user):
    team = unique("team")
    email, _ = make_user(key=False)
    with server.admin() as admin:
        admin.post("/api/v1/teams", json={"name": team})
        admin.post(f"/api/v1/users/{email}/teams", json={"team": team})
        admin.post(f"/api/v1/users/{email}/roles", json={"role": "approver"})
        admin.delete(f"/api/v1/users/{email}/roles/approver")
        admin.delete(f"/api/v1/users/{email}/teams/{team}")
        key = admin.post("/api/v1/keys", json={"user": email}).json()
        rotated = admin.post(f"/api/v1/keys/{key['id']}/rotate", json={"grace_seconds": 0}).json()
        admin.post(f"/api/v1/keys/{rotated['id']}/revoke")
        events = _events(admin, kind="admin.*", limit=50)["events"]
    mine = [e for e in events if e["resource"] in (f"team:{team}", f"user:{email}")
            or e["attributes"].get("user") == email]
    kinds = [e["kind"] for e in reversed(mine)]
    assert kinds == [
        "admin.user.created", "admin.team.created", "admin.user.team_added", "admin.user.role_granted",
        "admin.user.role_revoked", "admin.user.team_removed", "admin.key.created", "admin.key.created",
        "admin.key.rotated", "admin.key.revoked",
    ]
    actors = {e["user_email"] for e in mine if e["kind"] != "admin.user.created"}
    assert actors == {"admin@corral.local"}
    granted = next(e for e in mine if e["kind"] == "admin.user.role_granted")
    assert granted["action"] == "admin.user.grant_role" and granted["attributes"] == {"role": "approver"}


def test_events_are_written_before_the_call_returns(server):
    team = unique("team")
    with server.admin() as admin:
        admin.post("/api/v1/teams", json={"name": team})
        newest = _events(admin, kind="admin.team.created", limit=1)["events"][0]
    assert newest["resource"] == f"team:{team}"


def test_pagination_walks_every_event_once(server):
    with server.admin() as admin:
        for _ in range(5):
            admin.post("/api/v1/teams", json={"name": unique("page")})
        seen, cursor = [], None
        while True:
            page = _events(admin, kind="admin.team.created", limit=2, **({"before": cursor} if cursor else {}))
            seen += [event["id"] for event in page["events"]]
            cursor = page["next"]
            if cursor is None:
                break
        everything = _events(admin, kind="admin.team.created", limit=1000)["events"]
    assert seen == [event["id"] for event in everything] and len(seen) == len(set(seen)) >= 5


def test_time_filters(server):
    with server.admin() as admin:
        admin.post("/api/v1/teams", json={"name": unique("timed")})
        future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
        past = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()
        assert _events(admin, kind="admin.team.created", since=future)["events"] == []
        assert _events(admin, kind="admin.team.created", since=past)["events"]
        earlier = _events(admin, kind="admin.team.created", until=past, limit=1000)["events"]
        assert all(datetime.fromisoformat(event["time"]) < datetime.fromisoformat(past) for event in earlier)
        naive = admin.get("/api/v1/events", params={"since": "2026-01-01T00:00:00"})
    assert naive.status_code == 400 and "time zone" in naive.json()["error"]["message"]


def test_a_developer_reads_only_their_own_events(server, make_user):
    email, key = make_user(teams=("platform",))
    other, _ = make_user(teams=("payments",))
    with server.client(key) as client:
        mine = _events(client, limit=1000)["events"]
        assert all(event["user_email"] == email for event in mine)
        assert client.get("/api/v1/events", params={"user": other}).status_code == 403
        assert client.get("/api/v1/events", params={"team": "payments"}).status_code == 403


def test_an_auditor_reads_everyone_but_changes_nothing(server, make_user):
    _, key = make_user(roles=("auditor",))
    with server.client(key) as client:
        events = _events(client, kind="admin.*", limit=1000)["events"]
        assert {event["user_email"] for event in events} >= {"admin@corral.local"}
        assert client.post("/api/v1/teams", json={"name": unique("team")}).status_code == 403


def test_failed_authentication_is_recorded_without_the_credential(server):
    from corral.identity.tokens import generate_key

    unknown = generate_key()
    with server.client(unknown) as client:
        assert client.get("/api/v1/whoami").status_code == 401
    import time

    deadline = time.monotonic() + 10
    with server.admin() as admin:
        while time.monotonic() < deadline:
            failures = _events(admin, kind="auth.failed", limit=50)["events"]
            found = [e for e in failures if e["attributes"].get("prefix") == unknown[:11]]
            if found:
                break
            time.sleep(0.1)
    assert found and found[0]["outcome"] == "unauthenticated"
    assert unknown not in str(found[0]) and found[0]["attributes"]["reason"] == "invalid API key"
