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
