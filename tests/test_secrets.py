"""No key is ever stored or logged in plaintext: grep the database and the server's log for
a freshly created key and for the admin key."""

from sqlalchemy import create_engine, inspect, text


def _database_text(server) -> bytes:
    if server.backend == "sqlite":
        files = sorted(server.data_dir.glob("corral.db*"))  # the database, its WAL and shm
        assert files
        return b"".join(path.read_bytes() for path in files)
    engine = create_engine(server.database_url)
    try:
        with engine.connect() as connection:
            dumped = []
            for table in inspect(connection).get_table_names():
                for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                    dumped.append(repr(tuple(row)))
        return "\n".join(dumped).encode()
    finally:
        engine.dispose()


def test_a_new_key_is_nowhere_in_the_database_or_the_log(server, make_user):
    email, key = make_user()
    with server.client(key) as client:
        assert client.get("/api/v1/whoami").status_code == 200
    with server.admin() as admin:
        key_id = admin.get("/api/v1/keys", params={"user": email}).json()["keys"][0]["id"]
        rotated = admin.post(f"/api/v1/keys/{key_id}/rotate").json()["key"]
    stored = _database_text(server)
    logged = server.log_path.read_bytes()
    for secret in (key, rotated, server.admin_key):
        secret_part = secret[3:].encode()
        assert secret_part not in stored
        assert secret_part not in logged
    assert email.encode() in stored  # the grep does see the database's contents
    assert b"GET /api/v1/whoami" in logged  # ... and the log's


def test_the_key_list_never_shows_the_secret(server, make_user):
    email, key = make_user()
    with server.admin() as admin:
        listing = admin.get("/api/v1/keys", params={"user": email, "include_inactive": True}).text
    assert key[:11] in listing and key[11:] not in listing
