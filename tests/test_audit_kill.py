"""Kill -9 in the middle of concurrent changes: after a restart, every change the server
acknowledged has its audit record, and the ledger verifies. On each database."""

import os
import subprocess
import threading
import time

import httpx

from corral.identity.tokens import generate_key
from tests.conftest import CORRAL, start_server, stop_server

WRITERS = 8
PER_WRITER = 200


def test_acknowledged_changes_survive_a_sigkill_mid_append(fresh_database, tmp_path):
    admin_key = generate_key()
    env = {"CORRAL_ADMIN_KEY": admin_key, "CORRAL_CHECKPOINT_SECONDS": "0.2"}
    process, url, _ = start_server(tmp_path / "data", fresh_database, env)
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer(number: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=5) as client:
            for index in range(PER_WRITER):
                if stop.is_set():
                    return
                name = f"kill-{number}-{index}"
                try:
                    if client.post("/api/v1/teams", json={"name": name}).status_code == 201:
                        acknowledged.append(name)
                except httpx.HTTPError:
                    return  # the server is gone

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.kill()  # SIGKILL, mid-stream: no shutdown, no flush
    process.wait(timeout=10)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert len(acknowledged) >= 60

    process, url, _ = start_server(tmp_path / "data", fresh_database, env)
    try:
        headers = {"Authorization": f"Bearer {admin_key}"}
        recorded, after = set(), -1
        while after is not None:
            page = httpx.get(url + "/api/v1/audit/records", headers=headers, timeout=30,
                             params={"action": "admin.team.create", "after": after, "limit": 10_000}).json()
            recorded |= {r["resource"] for r in page["records"]}
            after = page["next"]
        assert {f"team:{name}" for name in acknowledged} <= recorded
        environment = {**os.environ, "CORRAL_URL": url, "CORRAL_KEY": admin_key}
        result = subprocess.run([CORRAL, "audit", "verify"], env=environment, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("verified ")
    finally:
        stop_server(process)
