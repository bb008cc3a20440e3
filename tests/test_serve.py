"""`corral serve` from a fresh start: migrations, the bootstrap admin key, the demo data."""

import os
import stat

import httpx

from corral.identity.tokens import generate_key, is_well_formed
from tests.conftest import start_server, stop_server


def _whoami(url, key):
    return httpx.get(url + "/api/v1/whoami", headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_first_start_prints_an_admin_key_once_and_saves_it_0600(fresh_database, tmp_path):
    data_dir = tmp_path / "data"
    env = {"CORRAL_ADMIN_KEY": ""}
    process, url, log = start_server(data_dir, fresh_database, env, demo=True)
    try:
        key_file = data_dir / "admin.key"
        key = key_file.read_text().strip()
        assert is_well_formed(key)
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        assert key in log.read_text()  # printed once, for the person starting it
        assert _whoami(url, key).json()["roles"] == ["admin"]
        users = httpx.get(url + "/api/v1/users", headers={"Authorization": f"Bearer {key}"}).json()["users"]
        assert {"alice@example.com", "bob@example.com", "carol@example.com"} <= {u["email"] for u in users}
    finally:
        stop_server(process)
    log.write_text("")
    process, url, log = start_server(data_dir, fresh_database, env, demo=True)
    try:
        assert key not in log.read_text()  # not printed again
        assert "Admin key: in" in log.read_text()
        assert _whoami(url, key).status_code == 200
        users = httpx.get(url + "/api/v1/users", headers={"Authorization": f"Bearer {key}"}).json()["users"]
        assert len([u for u in users if u["email"] == "alice@example.com"]) == 1  # demo seeded once
    finally:
        stop_server(process)


def test_corral_admin_key_is_used_and_changing_it_revokes_the_old_one(fresh_database, tmp_path):
    data_dir = tmp_path / "data"
    first, second = generate_key(), generate_key()
    process, url, log = start_server(data_dir, fresh_database, {"CORRAL_ADMIN_KEY": first})
    try:
        assert _whoami(url, first).status_code == 200
        assert not (data_dir / "admin.key").exists()
        assert first not in log.read_text()
    finally:
        stop_server(process)
    process, url, _ = start_server(data_dir, fresh_database, {"CORRAL_ADMIN_KEY": second})
    try:
        assert _whoami(url, second).status_code == 200
        assert _whoami(url, first).status_code == 401
    finally:
        stop_server(process)


def test_db_upgrade_command_is_idempotent(fresh_database, tmp_path):
    import subprocess

    from tests.conftest import CORRAL

    env = {**os.environ, "CORRAL_DATABASE_URL": fresh_database, "CORRAL_DATA_DIR": str(tmp_path / "data")}
    for _ in range(2):
        result = subprocess.run([CORRAL, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "up to date" in result.stdout


def test_replicas_starting_together_on_an_empty_database_all_succeed(fresh_database, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from corral.audit.note import Signer

    admin_key = generate_key()
    env = {"CORRAL_ADMIN_KEY": admin_key, "CORRAL_SIGNING_KEY": str(Signer.generate("corral/audit"))}
    with ThreadPoolExecutor(3) as pool:  # three processes, as replicas would be
        started = list(pool.map(lambda n: start_server(tmp_path / f"replica{n}", fresh_database, env, demo=True),
                                range(3)))
    try:
        auth = {"Authorization": f"Bearer {admin_key}"}
        for _, url, _ in started:
            assert httpx.get(url + "/api/v1/whoami", headers=auth).status_code == 200
        users = httpx.get(started[0][1] + "/api/v1/users", headers=auth).json()["users"]
        assert [u["email"] for u in users].count("alice@example.com") == 1
    finally:
        for process, _, _ in started:
            stop_server(process)


def test_an_expired_admin_key_in_the_environment_is_a_clear_start_up_error(fresh_database, tmp_path):
    import subprocess

    from tests.conftest import CORRAL

    data_dir, admin_key = tmp_path / "data", generate_key()
    process, url, _ = start_server(data_dir, fresh_database, {"CORRAL_ADMIN_KEY": admin_key})
    try:
        auth = {"Authorization": f"Bearer {admin_key}"}
        key_id = httpx.get(url + "/api/v1/whoami", headers=auth).json()["key_id"]
        assert httpx.post(f"{url}/api/v1/keys/{key_id}/rotate", json={"grace_seconds": 0}, headers=auth).status_code == 201
    finally:
        stop_server(process)
    env = {**os.environ, "CORRAL_ADMIN_KEY": admin_key, "CORRAL_DATABASE_URL": fresh_database,
           "CORRAL_DATA_DIR": str(data_dir)}
    result = subprocess.run([CORRAL, "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "CORRAL_ADMIN_KEY holds a key that was revoked, rotated" in result.stderr
